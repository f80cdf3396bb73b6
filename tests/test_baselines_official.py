"""The baselines (SE, ECA, CBAM, BAM) against their official code: arguments, initialisation, errors."""
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import SEModule
from torch import nn

import zamzoo.layers as L
from zamzoo.layers import CBAM_SEED_KWARGS
from zamzoo.models import BACKBONES


class OfficialEcaLayer(nn.Module):
    """BangguWu/ECANet models/eca_module.py `eca_layer` (a fixed k_size)."""

    def __init__(self, k_size=3):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * torch.sigmoid(y).expand_as(x)


@pytest.mark.parametrize('channels,k', [(32, 1), (64, 5), (512, 3), (64, 3)])
def test_eca_honours_an_explicit_kernel_size_as_the_official_models_fix_it(channels, k):
    # eca_mobilenet_v2: k 1 for C <= 96; eca_resnet: 3 everywhere, where the adaptive k would be 3 or 5.
    # The output and every gradient bit for bit (the conv's input gradient was 1.2e-7 off from a contiguous input)
    ours, official = L.ECA(channels, kernel_size=k), OfficialEcaLayer(k)
    assert ours.conv.kernel_size == (k,)
    official.conv.load_state_dict(ours.conv.state_dict())
    x = torch.randn(4, channels, 5, 7)
    results = []
    for module in (ours, official):
        xi = x.clone().requires_grad_(True)
        out = module(xi)
        out.backward(torch.linspace(-1.0, 1.0, out.numel()).view_as(out))
        results.append([out.detach(), xi.grad, module.conv.weight.grad])
    for got, want in zip(*results):
        assert torch.equal(got, want), (got - want).abs().max()


def test_eca_kernel_size_reaches_every_module_of_a_model_and_the_default_stays_adaptive():
    fixed = timm.create_model('resnet18_eca', attn_kwargs={'kernel_size': 3})
    assert {b.attn.conv.kernel_size for s in fixed.stages for b in s} == {(3,)}
    assert sum(p.numel() for p in fixed.parameters()) == 11_220_156  # official eca_resnet18 with 100 classes
    assert [L.ECA(c).conv.kernel_size[0] for c in (64, 128, 256, 512)] == [3, 5, 5, 5]  # the paper's adaptive k
    for bad in (4, 0, -3, 2.5):
        with pytest.raises(ValueError, match='kernel_size'):
            L.ECA(64, kernel_size=bad)


@pytest.mark.parametrize('channels', [24, 40, 64, 100, 512])
@pytest.mark.parametrize('rd_divisor', [1, 4, 8])
def test_se_rd_divisor_rounds_as_timms_semodule(channels, rd_divisor):
    ours = L.SE(channels, rd_divisor=rd_divisor)
    assert ours.fc1.out_channels == SEModule(channels, rd_ratio=1. / 16, rd_divisor=rd_divisor).fc1.out_channels
    assert L.SE(channels, rd_ratio=0.25, rd_divisor=rd_divisor).fc1.out_channels == \
        SEModule(channels, rd_ratio=0.25, rd_divisor=rd_divisor).fc1.out_channels


def test_se_default_is_the_papers_floor_and_rd_channels_is_taken_exactly():
    assert [L.SE(c).fc1.out_channels for c in (8, 24, 64, 100)] == [1, 1, 4, 6]  # C // 16, at least 1
    assert L.SE(64, rd_channels=5, rd_divisor=8).fc1.out_channels == 5
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match='rd_channels must be a positive int'):
            L.SE(64, rd_channels=bad)


def _official_resnet_init(module: nn.Module) -> None:
    """Jongchan/attention-module MODELS/model_resnet.py, ResidualNet.__init__'s loop over the state_dict keys (its
    keys name the spatial gate 'SpatialGate'; ours 'spatial')."""
    state = module.state_dict()
    for key in state:
        if key.split('.')[-1] == 'weight':
            if 'bn' in key:
                state[key][...] = 0 if 'spatial' in key else 1
        elif key.split('.')[-1] == 'bias':
            state[key][...] = 0


@pytest.mark.parametrize('backbone', sorted(BACKBONES))
def test_cbam_models_start_as_the_official_init_spatial_gate_one_half(backbone):
    torch.manual_seed(0)
    model = timm.create_model(f'{backbone}_cbam')
    cbams = [m for m in model.modules() if isinstance(m, L.CBAM)]
    assert cbams
    for training in (True, False):
        model.train(training)
        for cbam in cbams[:3] + cbams[-2:]:
            x = torch.randn(2, cbam.channels, 4, 4) * 5
            torch.testing.assert_close(cbam.spatial.spatial_gate(x), torch.full((2, 1, 4, 4), 0.5))
    for cbam in cbams:
        expected = {k: v.clone() for k, v in cbam.state_dict().items()}
        _official_resnet_init(cbam)
        for key, value in cbam.state_dict().items():
            torch.testing.assert_close(value, expected[key], msg=key)  # the official loop changes nothing


def test_seed_cbam_variant_keeps_the_seeds_pytorch_default_init():
    torch.manual_seed(3)
    ours = L.CBAM(64, **CBAM_SEED_KWARGS)
    torch.manual_seed(3)  # developer0hye/ZAM attention_module.py: ChannelAttention fc1, fc2, SpatialAttention conv1
    seed = [nn.Conv2d(64, 4, 1, bias=False), nn.Conv2d(4, 64, 1, bias=False), nn.Conv2d(2, 1, 3, padding=1, bias=False)]
    mine = [ours.channel.fc1, ours.channel.fc2, ours.spatial.conv]
    for a, b in zip(mine, seed):
        torch.testing.assert_close(a.weight, b.weight)


@pytest.mark.parametrize('backbone', sorted(BACKBONES))
def test_bam_models_start_as_the_official_init(backbone):
    """ResidualNet.__init__'s loop on the official BAM's keys (gate_c_fc_*, gate_s_conv_*, gate_*_bn_*): every bias 0,
    BN weights 1, the spatial convs kaiming normal (fan_out); the linears ("fc", no "conv" in their keys) keep
    PyTorch's default, uniform within 1 / sqrt(fan_in)."""
    torch.manual_seed(0)
    bams = [m for m in timm.create_model(f'{backbone}_bam').modules() if isinstance(m, L.BAM)]
    assert bams
    scaled = []  # each conv weight over kaiming normal's std, sqrt(2 / fan_out): a standard normal sample
    for bam in bams:
        for m in (bam.fc1, bam.fc2, *bam.spatial):
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                assert torch.equal(m.bias, torch.zeros_like(m.bias))
            if isinstance(m, nn.Linear):
                assert m.weight.abs().max() <= m.in_features ** -0.5
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                scaled.append(m.weight.detach().flatten() / (2 / fan_out) ** 0.5)
        for bn in (bam.bn1, *(m for m in bam.spatial if isinstance(m, nn.BatchNorm2d))):
            assert torch.equal(bn.weight, torch.ones_like(bn.weight))
            assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    scaled = torch.cat(scaled)
    assert scaled.numel() > 1000 and abs(scaled.std().item() - 1) < 0.1 and abs(scaled.mean().item()) < 0.1


def test_bam_training_on_one_image_is_refused_with_a_clear_error():
    model = timm.create_model('resnet18_bam').train()
    with pytest.raises(ValueError, match='BAM cannot train on a batch of 1 image'):
        model(torch.randn(1, 3, 32, 32))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 100)


# The thop 0.0.30 counts (thop/count_hooks.py) of the official modules, per module on one C x H x W map:
def _linear(n_in, n_out):  # count_linear: (in muls + (in - 1) adds) per output, bias not counted
    return (2 * n_in - 1) * n_out


def _official_cbam(c, hw):  # Jongchan MODELS/cbam.py: F.avg/max_pool2d (0), mlp of nn.Linear run twice, 7x7 conv, BN
    m = c // 16
    return 2 * (_linear(c, m) + _linear(m, c)) + 2 * 49 * hw + 4 * hw


def _official_bam(c, hw):  # Jongchan MODELS/bam.py: F.avg_pool2d (0), Linear-BN1d-ReLU-Linear; convs with bias, BN2d
    m = c // 16
    channel = _linear(c, m) + 4 * m + _linear(m, c)
    spatial = hw * m * (c + 1) + 4 * m * hw + 2 * (hw * m * (9 * m + 1) + 4 * m * hw) + hw * (m + 1)
    return channel + spatial


def _official_se(c, hw):  # SELayer: nn.AdaptiveAvgPool2d(1) ((HW + 1) * C), Linear-ReLU-Linear-Sigmoid
    m = c // 16
    return (hw + 1) * c + _linear(c, m) + _linear(m, c)


RESNET18_BLOCKS = [(64, 1024)] * 2 + [(128, 256)] * 2 + [(256, 64)] * 2 + [(512, 16)] * 2
RESNET18_STAGE_ENDS = [(64, 1024), (128, 256), (256, 64)]


@pytest.mark.parametrize('name,added', [
    ('resnet18_cbam', sum(_official_cbam(c, hw) for c, hw in RESNET18_BLOCKS)),
    ('resnet18_bam', sum(_official_bam(c, hw) for c, hw in RESNET18_STAGE_ENDS)),
    ('resnet18_se', sum(_official_se(c, hw) for c, hw in RESNET18_BLOCKS)),
])
def test_seed_flops_of_a_baseline_are_thops_count_of_its_official_code(name, added):
    from zamzoo.bench.flops import seed_flops
    plain = seed_flops(timm.create_model('resnet18_plain'))
    assert seed_flops(timm.create_model(name)) - plain == added


def test_seed_flops_of_the_seeds_cbam_variant_are_the_seeds_count():
    # developer0hye/ZAM attention_module.py: nn.AdaptiveAvgPool2d(1) and bias-free 1x1 conv MLPs, 3x3 conv, no BN
    from zamzoo.bench.flops import seed_flops
    plain = seed_flops(timm.create_model('resnet18_plain'))
    added = sum((hw + 1) * c + 2 * (c * (c // 16) + (c // 16) * c) + 18 * hw for c, hw in RESNET18_BLOCKS)
    assert seed_flops(timm.create_model('resnet18_cbam', attn_kwargs=CBAM_SEED_KWARGS)) - plain == added


@pytest.mark.parametrize('train', [True, False])
def test_bam_is_the_official_formula_to_the_last_bit(train):
    """Jongchan MODELS/bam.py with BAM's own submodules: ``att = 1 + sigmoid(gate_c(avg_pool2d(x, H, stride=H)) *
    gate_s(x))``, ``att * x``: output and every gradient bit for bit on square maps, in train and eval mode (the
    mean of the map as x.mean, which sums in another order, was 9.5e-7 off)."""
    torch.manual_seed(0)
    bam = L.BAM(64).train(train)
    for p in bam.parameters():
        p.data.normal_(0.0, 0.5)

    convs = [m for m in bam.spatial if isinstance(m, nn.Conv2d)]
    bns = [m for m in bam.spatial if isinstance(m, nn.BatchNorm2d)]

    def bn(y, m):
        return F.batch_norm(y, m.running_mean, m.running_var, m.weight, m.bias, m.training, m.momentum, m.eps)

    def gate_s(x):  # the official SpatialGate written out: 1x1 reduce, two 3x3 convs of dilation 4 (padding 4), 1x1
        y = F.relu(bn(F.conv2d(x, convs[0].weight, convs[0].bias), bns[0]))
        for conv, norm in zip(convs[1:3], bns[1:]):
            y = F.relu(bn(F.conv2d(y, conv.weight, conv.bias, padding=4, dilation=4), norm))
        return F.conv2d(y, convs[3].weight, convs[3].bias)

    def official(x):
        h = x.shape[2]
        channel = bam.fc2(bam.act1(bam.bn1(bam.fc1(F.avg_pool2d(x, h, stride=h).flatten(1)))))
        att = 1 + torch.sigmoid(channel.unsqueeze(2).unsqueeze(3).expand_as(x) * gate_s(x).expand_as(x))
        return att * x

    x = torch.randn(8, 64, 16, 16)
    results = []
    for forward in (bam, official):
        xi = x.clone().requires_grad_(True)
        out = forward(xi)
        out.backward(torch.linspace(-1.0, 1.0, out.numel()).view_as(out))
        results.append([out.detach(), xi.grad] + [p.grad.clone() for p in bam.parameters()])
        bam.zero_grad()
    for got, want in zip(*results):
        assert torch.equal(got, want), (got - want).abs().max()


def test_cbam_is_the_official_formula_with_its_pooled_maps_in_its_order():
    """Jongchan MODELS/cbam.py (as reference/modules.md writes it): spatial ``sigmoid(BN(conv7x7([max_c; mean_c])))``
    after the channel gate, the official ChannelPool's order (timm's is [mean_c; max_c], a permutation of the conv's
    input channels: the official weights would give another function); the seed's variant keeps its [mean_c; max_c].
    Non-trivial parameters (the official init makes the spatial gate 0.5 whatever the order)."""
    torch.manual_seed(0)
    x = torch.randn(4, 32, 7, 7)
    for kwargs, max_first in (({}, True), (CBAM_SEED_KWARGS, False)):
        cbam = L.CBAM(32, **kwargs).eval()
        for p in cbam.parameters():
            p.data.normal_(0.0, 0.5)
        c, s = cbam.channel, cbam.spatial
        mlp = lambda t: c.fc2(c.act(c.fc1(t)))  # noqa: E731
        y = x * torch.sigmoid(mlp(F.avg_pool2d(x, 7)) + mlp(F.max_pool2d(x, 7)))
        pooled = [torch.max(y, 1)[0].unsqueeze(1), torch.mean(y, 1).unsqueeze(1)]
        pooled = torch.cat(pooled if max_first else pooled[::-1], dim=1)
        expected = y * torch.sigmoid(s.bn(s.conv(pooled)))
        torch.testing.assert_close(cbam(x), expected)
        assert not torch.allclose(cbam(x), y * torch.sigmoid(s.bn(s.conv(pooled.flip(1)))))
