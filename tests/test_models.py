"""The zoo's backbones and their timm registration.

Exact parameter counts from ../shared/reference/modules.md, forward + backward of every registered model, the
placement of attention, the registration / pretrained-cfg contract, and the generic checks of timm's own model tests
(tests/test_models.py of timm's source: default cfg contract, features_only, torch.jit.script, torch.fx,
forward_intermediates, grad checkpointing, ...) on a sample: every backbone once, every attention once.
ResNet-34/50/164 run those heavier checks with one block per stage (`layers=` override of the registered model:
same classes, same code path), to keep the suite fast on 2 cores.
"""
import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
import timm
from timm.models import FeatureInfo, get_pretrained_cfg, group_parameters

import zamzoo
from zamzoo.bench.calibration import calibrate_batchnorm
from zamzoo.layers import BAM, CBAM_SEED_KWARGS, SPEM, get_attn
from zamzoo.models import ATTENTIONS, BACKBONES, ZOO, backbone_recipe, list_models
from zamzoo.pretrained import load_manifest
from zamzoo.recipes import get_recipe

ALL_MODELS = list_models()
IMG = (3, 32, 32)


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Batch-2 32x32 passes are too small for intra-op parallelism: one thread is faster, and on a shared 2-core
    machine two OpenMP threads per process oversubscribe the cores (measured 10-20x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def create(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs)


# ---------------------------------------------------------------------------------------------- exact counts
EXACT = [
    ('resnet18_plain', {}, 11_220_132),
    ('resnet18_cbam', dict(attn_kwargs=CBAM_SEED_KWARGS), 11_307_316),  # the ZAM seed's CBAM variant
    ('resnet18_cbam', {}, 11_310_012),                                  # official CBAM
    ('resnet18_bam', {}, 11_243_123),
    ('resnet18_nam', {}, 11_223_972),
    ('resnet50_plain', {}, 23_705_252),
    ('resnet50_nam', {}, 23_735_460),
    ('mobilenet_plain', {}, 3_309_476),
    ('mobilenet_cbam', dict(attn_kwargs=CBAM_SEED_KWARGS), 3_789_454),
    ('mobilenet_zam', {}, 3_309_476),
    ('mobilenet_zamr', {}, 3_309_476),
    ('resnet164_plain', {}, 1_727_284),
    ('resnet164_spem', {}, 1_759_648),
    ('resnet164_plain', dict(num_classes=10), 1_704_154),
    ('resnet164_spem', dict(num_classes=10), 1_736_518),
]


@pytest.mark.parametrize('name,kwargs,expected', EXACT, ids=[f'{n}-{i}' for i, (n, _, _) in enumerate(EXACT)])
def test_exact_param_count(name, kwargs, expected):
    assert n_params(create(name, **kwargs)) == expected


PARAM_FREE = ('zam', 'zam_avg', 'zam_max', 'zamr', 'simam')


@pytest.mark.parametrize('backbone', list(BACKBONES))
def test_parameter_free_variants_equal_plain(backbone):
    plain = n_params(create(f'{backbone}_plain'))
    for attn in PARAM_FREE:
        assert n_params(create(f'{backbone}_{attn}')) == plain, f'{backbone}_{attn}'


# ---------------------------------------------------------------------------------------------- every model
@pytest.mark.parametrize('name', ALL_MODELS)
def test_forward_backward(name):
    """Every model trains: finite logits and a finite gradient for every parameter. On 16 x 16 inputs, as the sampled
    checks below (every backbone ends at 2 x 2): the 78 models took 20-26 s of CPU time here, 36 s at 32 x 32."""
    model = create(name)
    model.train()
    x = torch.randn(2, 3, 16, 16)
    out = model(x)
    assert out.shape == (2, model.num_classes) == (2, 100)
    assert torch.isfinite(out).all()
    out.mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f'no gradient for {pname}'
        assert torch.isfinite(p.grad).all(), f'non-finite gradient for {pname}'


# ---------------------------------------------------------------------------------------------- placement
BLOCKS = {'resnet18': 8, 'resnet34': 16, 'resnet50': 16, 'resnet164': 54, 'mobilenet': 13, 'mobilenetv2': 17}
BAM_CHANNELS = {
    'resnet18': [64, 128, 256], 'resnet34': [64, 128, 256], 'resnet50': [256, 512, 1024], 'resnet164': [64, 128],
    'mobilenet': [128, 256, 512], 'mobilenetv2': [24, 32, 96],
}
LAST_BN = {'BasicBlock': 'bn2', 'Bottleneck': 'bn3', 'DepthwiseSeparable': 'bn2', 'InvertedResidual': 'bn3'}


def _attn_cls(attn):
    cls = get_attn(attn)
    return getattr(cls, 'func', cls)


@pytest.mark.parametrize('backbone', list(BACKBONES))
def test_attention_count_and_stage_placement(backbone):
    assert set(BLOCKS) == set(BACKBONES)
    for attn in ('se', 'bam'):
        model = create(f'{backbone}_{attn}')
        found = [m for m in model.modules() if isinstance(m, _attn_cls(attn))]
        if attn == 'bam':
            # once after every stage but the last, as the last element of the stage, on the stage's output
            assert [m.channels for m in found] == BAM_CHANNELS[backbone]
            stages = list(model.stages)
            assert [isinstance(s[-1], BAM) for s in stages] == [True] * (len(stages) - 1) + [False]
            assert [s[-1].channels for s in stages[:-1]] == [f['num_chs'] for f in model.feature_info[1:-1]]
        else:
            assert len(found) == BLOCKS[backbone]


@pytest.mark.parametrize('name', ['resnet18_zam', 'resnet50_spem', 'mobilenet_cbam', 'mobilenetv2_simam'])
def test_block_slot_after_last_bn(name):
    """The attention sees the last BN's output of its block, and the block's output depends on it."""
    model = create(name, **({'layers': (1, 1, 1, 1)} if name.startswith('resnet50') else {})).eval()
    seen = {}
    hooks = []
    blocks = [b for stage in model.stages for b in stage if type(b).__name__ in LAST_BN]
    assert blocks and all(not isinstance(b.attn, nn.Identity) for b in blocks)
    for i, b in enumerate(blocks):
        bn = getattr(b, LAST_BN[type(b).__name__])
        hooks.append(bn.register_forward_hook(lambda m, inp, out, i=i: seen.__setitem__(('bn', i), out)))
        hooks.append(b.attn.register_forward_pre_hook(lambda m, inp, i=i: seen.__setitem__(('attn', i), inp[0])))
    with torch.no_grad():
        model(torch.randn(2, *IMG))
    for h in hooks:
        h.remove()
    for i in range(len(blocks)):
        assert seen[('attn', i)] is seen[('bn', i)]
    # replacing the attention by zero changes each block's output: the module is on the residual branch
    b = blocks[0]
    x = torch.randn(2, b.conv1.in_channels if hasattr(b, 'conv1') else b.conv_dw.in_channels, 8, 8)
    with torch.no_grad():
        y = b(x.clone())
        b.attn = nn.Identity()
        y_plain = b(x.clone())
    assert not torch.allclose(y, y_plain)


def test_resnet164_uses_bearpaw_init_and_seed_backbones_keep_pytorch_default_init():
    # bearpaw's init for resnet164 (conv ~ N(0, sqrt(2 / (k*k*out)))), attention modules keep theirs
    model = create('resnet164_spem')
    conv = model.stages[2][5].conv2
    expected = (2.0 / (9 * conv.out_channels)) ** 0.5
    assert abs(conv.weight.std().item() / expected - 1) < 0.05
    spem = model.stages[0][0].attn
    assert isinstance(spem, SPEM)
    x = torch.randn(2, spem.channels, 8, 8)
    torch.testing.assert_close(spem(x), 0.0320586 * x, rtol=1e-5, atol=1e-6)
    # the ZAM seed's backbones keep PyTorch's default init (kaiming uniform, a=sqrt(5): std = 1 / sqrt(3 * fan_in))
    conv = create('resnet18_plain').stages[3][1].conv2
    expected = 1 / (3 * 9 * conv.in_channels) ** 0.5
    assert abs(conv.weight.std().item() / expected - 1) < 0.05


# ---------------------------------------------------------------------------------------------- registration
def test_zoo_is_every_backbone_with_every_attention():
    assert len(ALL_MODELS) == len(BACKBONES) * len(ATTENTIONS) == len(ZOO)
    assert ALL_MODELS == sorted(ALL_MODELS)
    assert ATTENTIONS['plain'].layer is None  # every other row names a module of the layers registry
    assert {a.layer for a in ATTENTIONS.values() if a.name != 'plain'} <= set(zamzoo.list_attn())
    assert ALL_MODELS == sorted(f'{b}_{a}' for b in BACKBONES for a in ATTENTIONS)
    assert zamzoo.list_models() == ALL_MODELS
    assert list_models('resnet18_*') == sorted(f'resnet18_{a}' for a in ATTENTIONS)
    assert list_models('*_zam') == sorted(timm.list_models('*_zam'))


def test_every_zoo_model_is_registered_with_timm_and_trained_with_its_backbones_recipe():
    for name in ALL_MODELS:
        assert timm.is_model(name)
        assert backbone_recipe(name) == ('spem' if name.startswith('resnet164_') else 'zam')
    assert backbone_recipe('resnet164') == 'spem' and backbone_recipe('resnet18_zam.cifar10') == 'zam'
    with pytest.raises(ValueError, match='unknown zamzoo model'):
        backbone_recipe('resnet18_foo')


def test_fused_flag_marks_the_attentions_with_a_reference_implementation():
    for attn in ATTENTIONS.values():
        if attn.layer is None:
            continue
        try:
            zamzoo.create_attn(attn.layer, 16, impl='reference')
            takes_impl = True
        except TypeError:  # an unexpected keyword argument
            takes_impl = False
        assert takes_impl == attn.fused, attn.name


def test_timm_module_listing():
    families = {b.family for b in BACKBONES.values()}
    assert families == {'cifar_resnet', 'cifar_mobilenet', 'cifar_mobilenetv2'}
    listed = [n for f in families for n in timm.list_models(module=f)]
    assert sorted(listed) == ALL_MODELS
    for name in ALL_MODELS:
        fn = timm.models.model_entrypoint(name)
        assert fn.__name__ == fn.__qualname__ == name
        assert fn.__module__ == f'zamzoo.models.{ZOO[name].backbone.family}'
        assert getattr(sys.modules[fn.__module__], name) is fn


def test_no_name_collision_with_timm():
    """Run in a fresh interpreter: timm's own names before zamzoo is imported, and what the import changes."""
    code = textwrap.dedent('''
        import json, warnings
        import timm
        before = set(timm.list_models())
        tags_before = timm.list_models('resnet18', pretrained=True)
        assert len(tags_before) > 1
        cfg_before = timm.models.get_pretrained_cfg('resnet18').to_dict()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            import zamzoo
        after = set(timm.list_models())
        print(json.dumps(dict(
            ours=zamzoo.list_models(), collisions=sorted(before & set(zamzoo.list_models())),
            removed=sorted(before - after), added=sorted(after - before),
            tags_kept=timm.list_models('resnet18', pretrained=True) == tags_before,
            cfg_kept=timm.models.get_pretrained_cfg('resnet18').to_dict() == cfg_before,
            overwrite_warnings=[str(w.message) for w in caught if 'Overwriting' in str(w.message)],
        )))
    ''')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r['ours'] == ALL_MODELS
    assert r['collisions'] == [] and r['removed'] == [] and r['overwrite_warnings'] == []
    assert r['added'] == r['ours']
    assert r['tags_kept'] and r['cfg_kept']


PAPERS = {
    'resnet18': 'arXiv:1512.03385', 'resnet34': 'arXiv:1512.03385', 'resnet50': 'arXiv:1512.03385',
    'resnet164': 'arXiv:1512.03385', 'mobilenet': 'arXiv:1704.04861', 'mobilenetv2': 'arXiv:1801.04381',
    'ulsam': 'arXiv:2006.15102', 'nam': 'arXiv:2111.12419', 'spem': 'doi:10.1007/978-3-031-27818-1_4',
    'se': 'arXiv:1709.01507', 'eca': 'arXiv:1910.03151', 'cbam': 'arXiv:1807.06521', 'bam': 'arXiv:1807.06514',
    'simam': 'https://proceedings.mlr.press/v139/yang21o.html',
}


def test_pretrained_cfgs():
    # timm lists as pretrained exactly the manifest's published weights (none today), yet every model has two tags
    published = {f"{r['model']}.{r['tag']}" for r in load_manifest()}
    zoo_names = set(ZOO) | {f'{n}.{tag}' for n in ZOO for tag in ('cifar100', 'cifar10')}
    assert zoo_names & set(timm.list_models(pretrained=True)) == published == zoo_names & set(timm.list_pretrained())
    assert 'resnet18.a1_in1k' in timm.list_pretrained()  # timm's own still are
    for name, entry in ZOO.items():
        backbone, attn = entry.backbone.name, entry.attention.name
        assert set(timm.list_models(name, include_tags=True)) == {f'{name}.cifar100', f'{name}.cifar10'}
        assert get_pretrained_cfg(name).tag == 'cifar100'  # the default tag
        for tag, dataset, num_classes in (('cifar100', 'cifar100', 100), ('cifar10', 'cifar10', 10)):
            cfg = get_pretrained_cfg(f'{name}.{tag}')
            mean, std = get_recipe('spem' if backbone == 'resnet164' else 'zam').stats(dataset)
            assert cfg.architecture == name and cfg.tag == tag
            if f'{name}.{tag}' in published:
                assert cfg.hf_hub_id.startswith(f'zamzoo/{name}.{tag}@')  # pinned to the manifest's commit
            else:
                assert cfg.hf_hub_id is None and not cfg.has_weights
            assert cfg.hf_hub_filename == 'model.safetensors'
            assert cfg.input_size == (3, 32, 32) and cfg.fixed_input_size is False
            assert cfg.crop_pct == 1.0 and cfg.interpolation == 'bicubic'
            assert tuple(cfg.mean) == tuple(mean) and tuple(cfg.std) == tuple(std)
            assert cfg.num_classes == num_classes
            assert cfg.pool_size == ((8, 8) if backbone == 'resnet164' else (4, 4))
            assert cfg.first_conv == 'stem.conv' and cfg.classifier == 'fc'
            assert cfg.license == 'apache-2.0'
            assert PAPERS[backbone] in cfg.paper_ids
            if attn in PAPERS:
                assert PAPERS[attn] in cfg.paper_ids
            if attn.startswith('zam'):
                assert cfg.origin_url == 'https://github.com/developer0hye/ZAM'
                assert 'ZAM' in cfg.paper_name
    assert get_pretrained_cfg('resnet164_spem.cifar10').mean == (0.4914, 0.4822, 0.4465)


def test_tagged_name_builds_cfg_num_classes():
    model = create('mobilenet_zam.cifar10')
    assert model.num_classes == 10 and model.pretrained_cfg['tag'] == 'cifar10'
    assert model(torch.randn(1, *IMG)).shape == (1, 10)
    model = create('mobilenet_zam', num_classes=7)
    assert model(torch.randn(1, *IMG)).shape == (1, 7)


def test_pretrained_cfg_names_real_parameters(tmp_path):
    """timm's loader with a local file: bit-equal load, a new classifier for another num_classes (cfg 'classifier'),
    and the stem adapted to in_chans=1 (cfg 'first_conv')."""
    from safetensors.torch import save_file
    src = create('mobilenet_zam').eval()
    path = tmp_path / 'model.safetensors'
    save_file(src.state_dict(), str(path))
    overlay = dict(file=str(path))
    loaded = timm.create_model('mobilenet_zam', pretrained=True, pretrained_cfg_overlay=overlay)
    assert loaded.state_dict().keys() == src.state_dict().keys()
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in loaded.state_dict().items())
    tuned = timm.create_model('mobilenet_zam', pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10)
    assert tuned.fc.out_features == 10 and torch.equal(tuned.stages[3][1].conv_pw.weight, src.stages[3][1].conv_pw.weight)
    gray = timm.create_model('mobilenet_zam', pretrained=True, pretrained_cfg_overlay=overlay, in_chans=1)
    torch.testing.assert_close(gray.stem.conv.weight, src.stem.conv.weight.sum(dim=1, keepdim=True))


@pytest.mark.parametrize('model, kwargs, error, match', [
    ('resnet18_zam', dict(not_an_arg=1), TypeError, 'not_an_arg'),
    ('mobilenet_plain', dict(drop_path_rate=0.1), ValueError, 'drop_path_rate=0.1: MobileNet .v1. has no residual'),
    ('resnet18_plain', dict(attn_layer='no_such_attention'), ValueError, 'valid names'),
    ('resnet18_plain', dict(attn_kwargs=dict(pool='avg')), ValueError, 'attn_kwargs'),
    ('resnet18_zam', dict(attn_slot='everywhere'), ValueError, 'attn_slot'),
    ('resnet18_zam', dict(global_pool=''), ValueError, 'num_classes=0'),
    ('resnet18_zam', dict(in_chans=0), ValueError, 'in_chans must be at least 1'),
    ('mobilenet_zam', dict(num_classes=-3), ValueError, 'num_classes must be at least 0'),
    ('resnet164_zam', dict(features_only=True, out_indices=(9,)), ValueError,
     r'out_indices=\(9,\) does not fit resnet164_zam, which has 4 feature levels: give indices in 0\.\.3 \(or -4\.\.-1\)'),
    ('mobilenet_zam', dict(features_only=True, out_indices=6), ValueError, r'an int n \(1\.\.5\)'),
    ('resnet18_ulsam', dict(attn_kwargs=dict(groups=3)), ValueError,
     r'ULSAM: channels \(64\) must be divisible by groups \(3\)'),
], ids=['unknown-kwarg', 'drop-path-without-residuals', 'unknown-attention', 'attn-kwargs-for-no-attention',
        'unknown-attn-slot', 'no-pool-with-classes', 'no-input-channels', 'negative-classes',
        'feature-index-out-of-range', 'feature-count-out-of-range', 'ulsam-groups-not-dividing-channels'])
def test_constructor_refuses_an_invalid_argument_with_a_message_naming_it(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        create(model, **kwargs)


def test_custom_attention():
    # a class (timm-style) instead of a name, kwargs routed to every module, and attn_slot for a 'block' module
    model = create('resnet18_plain', attn_layer=zamzoo.layers.ZAM, attn_kwargs=dict(pool='max'))
    assert sum(isinstance(m, zamzoo.layers.ZAM) for m in model.modules()) == 8
    model = create('mobilenet_plain', attn_layer='se', attn_slot='stage')
    assert sum(isinstance(m, get_attn('se')) for m in model.modules()) == 3
    model = create('resnet18_zam', attn_kwargs=dict(pool='avg'))
    assert model(torch.randn(2, *IMG)).shape == (2, 100)
    # timm's scripts pass drop_path_rate to every model; 0 builds MobileNet v1 (no residuals) unchanged
    assert create('mobilenet_zam', drop_path_rate=0.).state_dict().keys() == create('mobilenet_zam').state_dict().keys()


# ---------------------------------------------------------------------------------------------- timm model API
# One model per attention, spread so that every backbone appears (paper pairings where there is one). The ResNets
# run these checks with one block per stage (`layers=` override of the registered model: same classes, same code),
# and every check but the cfg contract (which needs the cfg's 32x32) on 16x16 inputs, to keep the suite fast.
SMALL = {'resnet18': dict(layers=(1, 1, 1, 1)), 'resnet34': dict(layers=(1, 1, 1, 1)),
         'resnet50': dict(layers=(1, 1, 1, 1)), 'resnet164': dict(layers=(1, 1, 1))}
_ATTN_ON = {
    'plain': 'mobilenet', 'zam': 'resnet18', 'zam_avg': 'mobilenet', 'zam_max': 'mobilenetv2', 'zamr': 'mobilenet',
    'ulsam': 'mobilenetv2', 'nam': 'resnet50', 'spem': 'resnet164', 'se': 'resnet34', 'eca': 'mobilenet',
    'cbam': 'resnet18', 'bam': 'resnet50', 'simam': 'mobilenetv2',
}


def _sample() -> list:
    """One model per attention of the table: its pairing in _ATTN_ON, else the backbones in turn."""
    backbones = list(BACKBONES)
    return [f'{_ATTN_ON.get(a, backbones[i % len(backbones)])}_{a}' for i, a in enumerate(ATTENTIONS)]


SAMPLE = _sample()
_SAMPLE_BY_BACKBONE = {b: [n for n in SAMPLE if ZOO[n].backbone.name == b] for b in BACKBONES}
# the most expensive checks (torch.jit.script, fx tracing): one model per backbone, the first of each in SAMPLE
SAMPLE_PER_BACKBONE = [names[0] for names in _SAMPLE_BY_BACKBONE.values() if names]
X16 = (2, 3, 16, 16)


def create_small(name: str, **kwargs) -> nn.Module:
    return create(name, **SMALL.get(ZOO[name].backbone.name, {}), **kwargs)


def create_eval(name: str) -> nn.Module:
    """create_small(name) in eval mode with the BatchNorm statistics of random inputs: with the default ones a random
    MobileNet's logits do not depend on its input (to the bit), and any two ways of running it compare equal."""
    return calibrate_batchnorm(create_small(name), X16[1:])


def test_sample_covers_every_backbone():
    # SAMPLE has every attention by construction; the pairings must also spread it over every backbone
    assert [ZOO[n].backbone.name for n in SAMPLE_PER_BACKBONE] == list(BACKBONES)


@pytest.mark.parametrize('name', SAMPLE)
def test_default_cfg_contract(name):
    model = create_small(name).eval()
    cfg = model.pretrained_cfg
    x = torch.randn(1, *cfg['input_size'])
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features and feats.shape[-2:] == cfg['pool_size']
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)
        logits = model.forward_head(feats)
        assert logits.shape == (1, cfg['num_classes']) == (1, model.num_classes)
        model.reset_classifier(0)
        assert model.forward_head(feats).shape == (1, model.num_features)
        model.reset_classifier(0, '')
        assert model.forward_head(feats).shape == feats.shape
        model.reset_classifier(10, 'avg')
        assert model.forward_head(feats).shape == (1, 10)
        with pytest.raises(ValueError, match='num_classes=0'):
            model.reset_classifier(10, '')
        model.reset_classifier(0, '')
        model.reset_classifier(3)  # a classifier on an unpooled head: timm's default pooling, not a broken head
        assert model.global_pool.pool_type == 'avg' and model.forward_head(feats).shape == (1, 3)
        assert model.get_classifier() is model.fc and model.get_classifier(name_only=True) == cfg['classifier']
        x16 = torch.randn(X16)
        out = create_small(name, num_classes=0).eval()(x16)
        assert out.shape == (2, model.num_features)
        out = create_small(name, num_classes=0, global_pool='').eval()(x16)
        assert out.ndim == 4 and out.shape[1] == model.num_features
    state_dict = model.state_dict()
    assert cfg['classifier'] + '.weight' in state_dict and cfg['first_conv'] + '.weight' in state_dict
    # parameter groups (timm's layer decay etc.) cover every parameter once
    names = [n for n, _ in model.named_parameters()]
    fine = group_parameters(model, model.group_matcher())
    assert sorted(n for g in fine.values() for n in g) == sorted(names)
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    assert coarse[0] == [n for n in names if n.startswith('stem.')]
    assert len(coarse) == len(model.stages) + 2  # stem, one group per stage (+ final_conv), head


@pytest.mark.filterwarnings('ignore::FutureWarning')  # torch 2.x deprecates torch.jit.script; timm still tests it
@pytest.mark.parametrize('name', SAMPLE_PER_BACKBONE)
def test_jit_script(name):
    model = create_eval(name)
    scripted = torch.jit.script(model)
    x = torch.randn(X16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


def _check_features(model, outs, levels):
    info = model.feature_info
    assert len(info.channels()) == len(outs) == levels
    for o, c, r in zip(outs, info.channels(), info.reduction()):
        assert o.shape == (X16[0], c, X16[2] // r, X16[3] // r)
        assert torch.isfinite(o).all()


@pytest.mark.parametrize('name', SAMPLE)
def test_features_only(name):
    levels = 4 if ZOO[name].backbone.name == 'resnet164' else 5  # the stem and 3 or 4 stages
    assert ZOO[name].backbone.feature_levels == levels
    x = torch.randn(X16)
    variants = [dict()] + ([dict(feature_cls='fx'), dict(feature_cls='getter')] if name in SAMPLE_PER_BACKBONE else [])
    with torch.no_grad():
        for kwargs in variants:
            model = create_small(name, features_only=True, **kwargs).eval()
            _check_features(model, model(x), levels)
        model = create_small(name, features_only=True, out_indices=(1, -1)).eval()
        assert [o.shape[1] for o in model(x)] == model.feature_info.channels()
        assert len(model.feature_info.channels()) == 2


@pytest.mark.parametrize('name', SAMPLE)
def test_forward_intermediates(name):
    model = create_eval(name)
    x = torch.randn(X16)
    info = FeatureInfo(model.feature_info, tuple(range(len(model.feature_info))))
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [t.shape[1] for t in inter] == info.channels()
        assert [X16[-1] // t.shape[-1] for t in inter] == info.reduction()
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        for a, b in zip(last2, inter[-2:]):
            torch.testing.assert_close(a, b)
        _, early = model.forward_intermediates(x, indices=[1], stop_early=True)
        torch.testing.assert_close(early[0], inter[1])
        if name in SAMPLE_PER_BACKBONE:
            # whole-model trace with timm's fx feature extraction (its leaf modules and wrapped functions)
            from timm.models._features_fx import create_feature_extractor
            fx_model = create_feature_extractor(model, return_nodes={'fc': 'out'})
            torch.testing.assert_close(fx_model(x)['out'], model(x))
        kept = model.prune_intermediate_layers(indices=[1, 2])
        assert kept == [1, 2] and len(model.stages) == 2
        out = model(x)  # pruning drops the head (timm: reset_classifier(0, ''))
        assert out.shape == (X16[0], info.channels()[2], X16[2] // info.reduction()[2], X16[3] // info.reduction()[2])
        assert model.num_features == info.channels()[2]


@pytest.mark.parametrize('name', SAMPLE)
def test_checkpointing_memory_format_dtype_device(name):
    model = create_eval(name)
    x = torch.randn(X16)
    with torch.no_grad():
        ref = model(x)
        # channels_last weights and input: same result
        model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), ref, rtol=1e-4, atol=1e-4)
        model.to(memory_format=torch.contiguous_format)
    # grad checkpointing: same output, gradients flow to the input and every parameter
    model.set_grad_checkpointing(True)
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert xg.grad is not None and all(p.grad is not None for p in model.parameters())
    model.set_grad_checkpointing(False)
    # bf16 after .to()
    with torch.no_grad():
        out = model.to(torch.bfloat16)(x.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    # device= / dtype= at construction
    meta = create_small(name, device='meta')
    assert {p.device.type for p in meta.parameters()} == {'meta'}
    half = create_small(name, dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize('prune', [dict(), dict(prune_head=False, prune_norm=True)])
def test_pruned_to_the_last_level_every_parameter_gets_a_gradient(prune):
    """MobileNetV2's final_conv follows the last level and feeds none: kept when the last level was, its parameters
    got no gradient, so timm's features_only getter (which prunes to every level) failed under DDP ('parameters that
    were not used in producing loss')."""
    model = create_small('mobilenetv2_zam').train()
    last = len(model.feature_info) - 1
    assert model.prune_intermediate_layers([last], **prune) == [last]
    taps = model.forward_intermediates(torch.randn(X16), indices=[last], intermediates_only=True)
    sum(t.sum() for t in taps).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    getter = timm.create_model('mobilenetv2_zam', features_only=True, feature_cls='getter').train()
    sum(t.sum() for t in getter(torch.randn(X16))).backward()
    assert [n for n, p in getter.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize('name', [*sorted(n for n in list_models() if n.startswith('mobilenet_')), 'resnet18_zam',
                                  'mobilenetv2_zam', 'resnet50_ulsam'])
def test_a_zoo_model_counts_its_macs_on_the_meta_device(name):
    """`zamzoo export` counts MACs on a meta-device twin, and on the model itself where that fails (a module of a
    user's that reads values): a zoo model must not take that way in silence, and meta must count alike."""
    from zamzoo.bench.flops import count_macs
    assert count_macs(timm.create_model(name, device='meta').eval()) == count_macs(timm.create_model(name).eval())
