"""zamzoo.compare.contract: the contract check that stops a broken attention module before anything trains."""
import json

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import zamzoo  # noqa: F401  registers the zoo (the plain backbones the check builds on)
from zamzoo.bench.flops import count_macs, count_params
from zamzoo.compare.contract import ContractError, check_contract
from zamzoo.errors import UsageError
from zamzoo.layers import SE, ZAM

FAST = dict(latency=False, onnx=False)


class Identity(nn.Module):
    def __init__(self, channels, device=None, dtype=None):
        super().__init__()

    def forward(self, x):
        return x


class Pools(Identity):
    def forward(self, x):
        return F.avg_pool2d(x, 2)


class ReturnsNaN(Identity):
    def forward(self, x):
        return x * float('nan')


class CannotBuild(Identity):
    def __init__(self, channels, device=None, dtype=None):
        raise RuntimeError('no weights for you')


class ViewsMemory(Identity):
    """Flattens each image with .view, which a channels_last tensor does not allow."""
    def forward(self, x):
        return x.view(x.shape[0], -1).view(x.shape)


class Upcasts(Identity):
    """Returns float32 whatever it gets, so under bf16 autocast it turns the backbone's bf16 maps into float32."""
    def forward(self, x):
        return x.float()


class NaNGradient(Identity):
    """Finite output, NaN gradient (d sqrt(t)/dt at 0 is inf, times 0)."""
    def forward(self, x):
        return x + torch.sqrt(x.abs() - x.abs())


class Random(Identity):
    """A new output at every call: the contract blamed channels_last (the one check that called it twice)."""
    def forward(self, x):
        return x * torch.rand_like(x)


class CountsCalls(Identity):
    """Its output changes with a state each call changes."""
    def __init__(self, channels, device=None, dtype=None):
        super().__init__(channels, device, dtype)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * self.calls


class DeviceFirst(nn.Module):
    """No channels argument: the contract built it with 64 as its device and blamed the device keyword."""
    def __init__(self, device=None, dtype=None):
        super().__init__()

    def forward(self, x):
        return x


class Only64Channels(nn.Module):
    """Passes alone on 64 channels, fails inside a backbone's narrower or wider blocks."""
    def __init__(self, channels, device=None, dtype=None):
        super().__init__()
        self.conv = nn.Conv2d(64, 64, 1, device=device, dtype=dtype)

    def forward(self, x):
        return x * self.conv(x).sigmoid()


class IgnoresDevice(Identity):
    """Takes device and dtype, makes its parameter without them: trains, then `zamzoo export` (meta) fails."""
    def __init__(self, channels, device=None, dtype=None):
        super().__init__(channels)
        self.scale = nn.Parameter(torch.ones(channels, 1, 1))

    def forward(self, x):
        return x * self.scale


class Lazy(Identity):
    """Sized at its first forward pass: the contract's own calls sized it, and then `zamzoo train` failed counting it."""
    def __init__(self, channels, device=None, dtype=None):
        super().__init__(channels)
        self.fc = nn.LazyLinear(channels, device=device, dtype=dtype)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x.mean((2, 3))))[:, :, None, None]


class NoGradGate(Identity):
    """Its gate is computed under no_grad: its parameters never train, yet they were counted as the module's."""
    def __init__(self, channels, device=None, dtype=None):
        super().__init__(channels)
        self.fc = nn.Conv2d(channels, channels, 1, device=device, dtype=dtype)

    def forward(self, x):
        with torch.no_grad():
            gate = torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))
        return x * gate


class RarelyRandom(Identity):
    """A DropPath that forgot self.training, dropping 1% of the calls: the two calls drew alike (the same seed)."""
    def forward(self, x):
        return x if torch.rand(()) < 0.01 else x * torch.sigmoid(x)


class MixesTheBatch(Identity):
    """Gates with the mean over the batch: an image's logits changed with the eval batch."""
    def forward(self, x):
        return x * torch.sigmoid(x.mean((0, 2, 3), keepdim=True))


class PlainTensorAttribute(Identity):
    """A tensor kept as a plain attribute: `.to('cuda')` leaves it on the CPU."""
    def __init__(self, channels, device=None, dtype=None):
        super().__init__(channels)
        self.scale = torch.full((channels, 1, 1), 0.5, device=device, dtype=dtype)

    def forward(self, x):
        return x * self.scale.to(x.dtype)


class TensorInAList(Identity):
    """A tensor kept in a list: `.to('cuda')` leaves it on the CPU too."""
    def __init__(self, channels, device=None, dtype=None):
        super().__init__(channels)
        self.consts = [torch.full((channels, 1, 1), 0.5, device=device, dtype=dtype)]

    def forward(self, x):
        return x * self.consts[0]


class CannotMove(Identity):
    """Refuses `.to(...)`: a traceback from the move probe."""
    def _apply(self, fn, recurse=True):
        raise RuntimeError('no moving me')


class HardcodedFloat64(Identity):
    """Ignores the dtype given, making float64: the probe asked for float64 itself."""
    def __init__(self, channels, device=None, dtype=None):
        super().__init__(channels)
        self.w = nn.Parameter(torch.zeros(channels, 1, 1, device=device, dtype=torch.float64))

    def forward(self, x):
        return (x * torch.sigmoid(self.w)).to(x.dtype)


class TensorOnTheCpu(Identity):
    """Makes a tensor in forward without the input's device: trained on a CPU, failed on a GPU and in export."""
    def forward(self, x):
        return x * (1 + 0.1 * torch.linspace(0, 1, x.shape[-1], dtype=x.dtype))


class ScaledWhenTraced(Identity):
    """Right in eager mode, wrong under the TorchScript-based ONNX exporter (which traces)."""
    def forward(self, x):
        return x * 2 if torch.jit.is_tracing() else x


@pytest.mark.parametrize('module, message', [
    (Pools, 'Pools(64) on a (1, 64, 7, 5) input: output shape (1, 64, 3, 2), expected (1, 64, 7, 5)'),
    (ReturnsNaN, 'ReturnsNaN(64) on a (1, 64, 7, 5) input: output has NaN or infinite values'),
    (CannotBuild, 'cannot build CannotBuild(64): RuntimeError: no weights for you'),
    (ViewsMemory, 'ViewsMemory(64) on a channels_last (2, 64, 8, 8) input: RuntimeError: view size'),
    (Upcasts, 'Upcasts(64) under bf16 autocast on a bfloat16 (2, 64, 8, 8) input: output dtype torch.float32, '
              'expected torch.bfloat16'),
    (NaNGradient, 'NaNGradient(64): the gradient of input has NaN or infinite values'),
    (IgnoresDevice, "IgnoresDevice(64, device='meta', dtype=torch.float64) made scale on cpu as torch.float32: make "
                    "every parameter and buffer with the device and dtype given"),
    (Random, 'Random(64) called twice on the same (2, 64, 8, 8) input in eval mode: the outputs differ (relative '
             'error'),
    (CountsCalls, 'CountsCalls(64) called twice on the same (2, 64, 8, 8) input in eval mode: the outputs differ '
                  '(relative error 0.25); in eval mode a module must be a function of its input'),
    (DeviceFirst, "DeviceFirst cannot be called as timm's blocks build an attention module, DeviceFirst(channels, "
                  "**options, device=..., dtype=...) (multiple values for argument 'device'); expected "
                  "__init__(self, channels, ..., device=None, dtype=None)"),
    (Only64Channels, 'mobilenet with Only64Channels fails in a training-mode forward pass (calibrating BatchNorm): '
                     'RuntimeError: Given groups=1, weight of size [64, 64, 1, 1]'),
    (Lazy, 'Lazy(64): fc.weight, fc.bias is lazy (nn.LazyLinear and the like): size every layer from the channels'),
    (NoGradGate, 'NoGradGate(64): no gradient reached fc.weight, fc.bias in 12 training calls on 8x8 to 32x32 '
                 'inputs (computed under torch.no_grad, or detached?): such parameters do not train'),
    (RarelyRandom, 'RarelyRandom(64) drew random numbers in eval mode'),
    (MixesTheBatch, "MixesTheBatch(64): an image's output in eval mode depends on the other images of its batch"),
    (PlainTensorAttribute, "PlainTensorAttribute(64) moved with .to('meta') on an input on the meta device: "
                           'RuntimeError: '),
    (TensorInAList, "TensorInAList(64) moved with .to('meta') on an input on the meta device: RuntimeError: "),
    (CannotMove, "CannotMove(64) cannot be moved with .to('meta'): RuntimeError: no moving me"),
    (HardcodedFloat64, "HardcodedFloat64(64, device='meta', dtype=torch.bfloat16) made w on meta as torch.float64"),
    (TensorOnTheCpu, "TensorOnTheCpu(64) moved with .to('meta') on an input on the meta device: "
                     "RuntimeError: "),
])
def test_a_module_breaking_the_contract_is_stopped_naming_what_broke(module, message):
    with pytest.raises(ContractError) as info:
        check_contract(module, ['mobilenet'], **FAST)
    assert str(info.value).startswith(message)
    assert '\n' not in str(info.value)
    assert isinstance(info.value, UsageError)  # the CLI prints it as one line, exit 2


def test_an_unknown_backbone_or_slot_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown backbone.*'resnet19'"):
        check_contract(Identity, ['resnet19'], **FAST)
    with pytest.raises(UsageError, match="slot must be one of"):
        check_contract(Identity, ['mobilenet'], slot='everywhere', **FAST)


def _added(backbone: str, attention: str):
    """(parameters, MACs) the zoo's own <backbone>_<attention> model adds to <backbone>_plain."""
    model, plain = timm.create_model(f'{backbone}_{attention}'), timm.create_model(f'{backbone}_plain')
    return count_params(model) - count_params(plain), count_macs(model) - count_macs(plain)


def test_identity_and_zoo_modules_pass_adding_what_the_zoo_models_add():
    identity = check_contract(Identity, ['mobilenet'], **FAST)
    assert [(r.backbone, r.params_added, r.macs_added) for r in identity.backbones] == [('mobilenet', 0, 0)]
    se = check_contract(SE, ['mobilenet'], **FAST)
    assert [(r.params_added, r.macs_added) for r in se.backbones] == [_added('mobilenet', 'se')]
    assert se.backbones[0].params_added > 0 and se.backbones[0].macs_added > 0
    zam = check_contract(ZAM, ['mobilenet'], **FAST)
    assert [(r.params_added, r.macs_added) for r in zam.backbones] == [_added('mobilenet', 'zam')]
    assert se.module == 'zamzoo.layers.se_eca:SE' and se.backbones[0].cpu_latency_ratio is None


class WritesIntoItsInput(Identity):
    """ZAM's inplace=True in eval mode: `x.mul_(gate)`, right in any memory format."""
    def forward(self, x):
        return x.mul_(torch.sigmoid(x.mean((2, 3), keepdim=True))) if not self.training else x * 1


class WritesIntoItsInputWhenTraining(Identity):
    """`x.add_(b)` in training too: right in a block (its input is no leaf), refused by the backward check."""
    def __init__(self, channels, device=None, dtype=None):
        super().__init__(channels)
        self.b = nn.Parameter(torch.zeros(channels, 1, 1, device=device, dtype=dtype))

    def forward(self, x):
        return x.add_(self.b)


class ReadsValues(Identity):
    """Branches on a value (`.item()`): no meta-device forward, fine on real tensors."""
    def forward(self, x):
        return x * 0.5 if x.abs().amax().item() > 1e6 else x * torch.sigmoid(x)


class WeightNormed(Identity):
    """nn.utils.weight_norm keeps `weight` as a plain attribute that a pre-hook makes from its parameters."""
    def __init__(self, channels, device=None, dtype=None):
        super().__init__(channels)
        self.fc = nn.utils.weight_norm(nn.Conv2d(channels, channels, 1, device=device, dtype=dtype))

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


class WideBranchOnLargeMaps(Identity):
    """A branch that runs on maps of 16x16 or more only: it trains in a backbone's early stages."""
    def __init__(self, channels, device=None, dtype=None):
        super().__init__(channels)
        self.wide = nn.Conv2d(channels, channels, 3, padding=2, dilation=2, device=device, dtype=dtype)

    def forward(self, x):
        return x + self.wide(x) if x.shape[-1] >= 16 else x


class SkippedAtRandom(Identity):
    """Its gate skipped for the whole batch with probability 0.75 in training (a module-level stochastic depth)."""
    def __init__(self, channels, device=None, dtype=None):
        super().__init__(channels)
        self.fc = nn.Conv2d(channels, channels, 1, device=device, dtype=dtype)

    def forward(self, x):
        if self.training and torch.rand(()) < 0.75:
            return x
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


@pytest.mark.parametrize('module', [WritesIntoItsInput, WritesIntoItsInputWhenTraining, ReadsValues, WeightNormed,
                                    WideBranchOnLargeMaps, SkippedAtRandom])
def test_a_module_writing_its_result_into_its_input_is_checked_as_the_function_it_computes(module):
    """It was refused for channels_last: the two calls of the determinism check shared one input, which the first
    call changed and the second changed again, returning that same tensor, so the contiguous reference was wrong;
    one writing in training was refused in the backward check ('a leaf Variable that requires grad is being used
    in an in-place operation'). A module that reads values cannot run on the meta device, which is no fault; weight
    norm's plain `weight` moves with the model (made from its parameters at each call); parameters that one 8x8
    training call did not reach train on larger maps, or on other draws."""
    report = check_contract(module, ['mobilenet'], **FAST)
    assert [(r.backbone, r.params_added) for r in report.backbones] == [
        ('mobilenet', count_params(timm.create_model('mobilenet_plain', attn_layer=module)) - count_params(
            timm.create_model('mobilenet_plain')))]


class Gamma(nn.Module):
    """`x * gamma`, a float32 parameter (timm's LayerScale2d): float32 under bf16 autocast by PyTorch's promotion."""
    def __init__(self, channels, device=None, dtype=None):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels, 1, 1), 0.5, device=device, dtype=dtype))

    def forward(self, x):
        return x * self.gamma


def test_a_module_scaling_by_its_own_float32_parameter_passes_under_autocast():
    """It was refused as an upcast (output float32 under bf16 autocast), like a module that returns x.float()."""
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert Gamma(8)(torch.randn(1, 8, 2, 2, dtype=torch.bfloat16)).dtype == torch.float32
    report = check_contract(Gamma, ['mobilenet'], **FAST)
    assert report.backbones[0].params_added == sum(m.gamma.numel() for m in timm.create_model(
        'mobilenet_plain', attn_layer=Gamma).modules() if isinstance(m, Gamma)) > 0


def test_an_exporter_failure_is_reported_not_raised_and_the_report_is_json():
    report = check_contract(ScaledWhenTraced, ['mobilenet'], options={}, latency=True, onnx=True)
    row = report.backbones[0]
    assert row.onnx['torchscript'].startswith('error: ONNX Runtime output differs from PyTorch (TorchScript exporter;')
    assert row.onnx['dynamo'].startswith('ok (relative error')
    assert row.cpu_latency_ratio > 0
    contract = json.loads(json.dumps(report.to_dict()))
    assert contract['backbones'][0]['onnx'] == row.onnx
    assert set(contract['backbones'][0]) == {'backbone', 'params_added', 'macs_added', 'cpu_latency_ratio', 'onnx',
                                             'cpu_latency_iqr', 'input_size'}


class NotScriptable(Identity):
    """Fine in eager mode; TorchScript compiles no try block."""
    def forward(self, x):
        try:
            return x * 1
        except ValueError:
            return x


def test_timm_tests_stop_a_module_timm_cannot_script_naming_timms_test():
    assert check_contract(NotScriptable, ['mobilenet'], **FAST).timm_tests == {}  # not asked: not run
    with pytest.raises(ContractError, match=r"^timm's test_model_forward_torchscript on mobilenet with NotScriptable: "):
        check_contract(NotScriptable, ['mobilenet'], timm_tests=True, **FAST)


def test_another_librarys_error_is_quoted_on_one_line_without_its_terminal_colours():
    """torch's dynamo exporter colours its steps: the contract line carried '\\x1b[96mThis is step 1/3\\x1b[0m'."""
    from zamzoo.errors import one_line
    assert one_line(RuntimeError('\x1b[96mstep 1/3\x1b[0m failed\nmore')) == 'RuntimeError: step 1/3 failed'
    # torch.onnx's report: its first line is the same advice whatever failed; the cause is in its summary
    report = ('Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m of exporting. Next '
              "steps:\n- Modify the model code\n\n## Exception summary\n\n<class 'torch.fx.experimental.symbolic_"
              "shapes.GuardOnDataDependentSymNode'>: Could not guard on data-dependent expression zuf0 > 1e6\n\nmore")
    assert one_line(RuntimeError(report)) == ('RuntimeError: GuardOnDataDependentSymNode: Could not guard on '
                                              'data-dependent expression zuf0 > 1e6')
    assert one_line(ValueError('')) == 'ValueError: '
