"""The contract check a user's attention module passes before anything trains (`zamzoo compare --check-only`).

The zoo's contract: `Module(channels, **options, device=None, dtype=None)`, output shaped like the input, as the
modules of `zamzoo.layers`. `check_contract` builds the module alone and inside each backbone of the zoo table
(the backbone's plain model with `attn_layer=<the class>`, through timm's builder; nothing is registered) and
stops at the first broken promise with a `ContractError` naming it in one line:

- the module can be built, on 64 channels and at every place of every backbone;
- the output has the input's shape and dtype (batch 1, odd and 1x1 spatial sizes, a channels_last input giving the
  values of the contiguous one, a bfloat16 input under CPU bf16 autocast, where float32 is accepted from a module
  with float32 tensors of its own), alone and in the backbone, whose logits must have the plain backbone's shape and
  dtype;
- outputs and gradients are finite (a training step of the backbone, cross-entropy on random labels).

Then, per backbone, its cost against the plain backbone: parameters and MACs added (`zamzoo.bench.flops`), the
eager CPU latency ratio (`zamzoo.bench.models.interleaved_latency`, as `zamzoo bench models --threads 1` times:
wall clock, LATENCY_ROUNDS interleaved rounds at batch 16, one thread, each round at least bench's CPU `min_time` of
calls; the median of the per-round ratios and their interquartile range), and both ONNX exporters through
`zamzoo.bench.onnx.export_onnx`, checked against eager PyTorch on a model whose BatchNorm statistics are calibrated
(`zamzoo.bench.calibration`): an exporter's failure is recorded in the report, not raised.
`arm_costs` gives the compare report the cost of every arm (the candidate and the zoo's baselines: parameters, MACs,
latency against plain timed in the same rounds; no ONNX, no contract), once the runs have ended, with the conditions
it measured them under (`latency_conditions`, as the contract check records its own). `timm_tests=True`
adds the checks of timm's tests/test_models.py (`_timm_model_tests`) on the first backbone.
"""
import contextlib
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..bench.calibration import calibrate_batchnorm
from ..bench.export import EXPORTERS
from ..bench.flops import count_macs, count_params
from ..bench.models import TIMING_DEFAULTS, interleaved_latency, load_average, num_threads, ratio_of_rounds
from ..bench.onnx import OnnxExportError, export_onnx
from ..errors import UsageError, one_line
from ..models import ATTN_SLOTS, BACKBONES, ZOO
from ..models.plugins import signature_problem
from ..provenance import device_description
from .runs import Arms

__all__ = ['ContractError', 'BackboneContract', 'ContractReport', 'ArmCosts', 'check_contract', 'arm_costs',
           'latency_ratio', 'latency_conditions']

CHANNELS = 64
MODULE_INPUTS = ((1, 7, 5), (1, 1, 1), (2, 8, 8))       # (batch, H, W) fed to the module alone
MODEL_INPUTS = ((1, 32, 32), (2, 29, 35))               # (batch, H, W): odd sizes reach every stage
LATENCY_BATCH, LATENCY_ROUNDS, LATENCY_THREADS, LATENCY_TIMER = 16, 7, 1, 'wall'
LATENCY_CONDITIONS = {'timer': LATENCY_TIMER, 'runtime': 'eager PyTorch, float32', 'batch': LATENCY_BATCH,
                      'threads': LATENCY_THREADS, 'rounds': LATENCY_ROUNDS,
                      'warmup': TIMING_DEFAULTS['cpu']['warmup'], 'min_time_s': TIMING_DEFAULTS['cpu']['min_time'],
                      'ratio': 'median over interleaved rounds of (time with the module / plain time of the same '
                               'round), with the interquartile range of those ratios'}
LATENCY_NOT_MEASURED = 'latency not measured'
# what `zamzoo compare` prints before training, where its contract check leaves the latency to `arm_costs`
LATENCY_AFTER_RUNS = ("CPU latency: every arm's against plain, timed in the same interleaved rounds once the runs "
                      "have ended (in the report, with how it was measured)")
CALIBRATION = dict(batches=1, batch_size=8)  # BatchNorm statistics that make the value comparisons mean something
CHANNELS_LAST_RTOL = 1e-3  # max|channels_last - contiguous| / max|contiguous|: other kernels, same function


class ContractError(UsageError):
    """An attention module breaks the zoo's module contract; the message names what broke."""


@dataclass
class BackboneContract:
    """The cost of the module in one backbone, against the plain backbone."""
    backbone: str
    params_added: int
    macs_added: int
    cpu_latency_ratio: Optional[float]              # None when latency was not measured
    onnx: Dict[str, str] = field(default_factory=dict)  # exporter -> 'ok ...' or 'error: ...'
    cpu_latency_iqr: Optional[List[float]] = None   # [first, third quartile] of the per-round ratios
    input_size: Optional[List[int]] = None          # (C, H, W) of the MACs and the latency


@dataclass
class ContractReport:
    module: str                  # the class's import path
    options: Dict[str, Any]
    slot: str
    backbones: List[BackboneContract]
    timm_tests: Dict[str, str] = field(default_factory=dict)  # timm test name -> 'ok', on `timm_backbone`
    timm_backbone: Optional[str] = None
    conditions: Dict[str, Any] = field(default_factory=dict)   # how it timed the latency (`latency_conditions`)

    def summary(self, untimed: str = LATENCY_NOT_MEASURED) -> str:
        """What the CLI prints: the measurement conditions (`untimed`: what to say of a latency this check did not
        time), one line per backbone (cost, exporters), then timm's tests if run."""
        lines = [f'{self.module} keeps the contract ({self.slot} slot)']
        if self.backbones:
            sizes = [r.input_size for r in self.backbones]
            lines.append(f'  cost against the plain backbone: {conditions_text(self.conditions, sizes, untimed)}')
        for r in self.backbones:
            exports = ''.join(f'; ONNX {exporter}: {result}' for exporter, result in r.onnx.items())
            lines.append(f'  {r.backbone}: {r.params_added:+,} parameters, {r.macs_added:+,} MACs'
                         f'{latency_text(r.cpu_latency_ratio, r.cpu_latency_iqr)}{exports}')
        if self.timm_tests:
            lines.append(f"  timm's model tests on {self.timm_backbone}: {', '.join(self.timm_tests)} passed")
        return '\n'.join(lines)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready, for report.json's "contract" field."""
        d = asdict(self)
        d['options'] = {k: repr(v) if not isinstance(v, (int, float, str, bool, type(None))) else v
                        for k, v in self.options.items()}
        return d


class ArmCosts(dict):
    """What `arm_costs` measured: backbone -> arm -> cost (still the plain dict its callers index), and how:
    `input_sizes` (backbone -> the (C, H, W) of its MACs and latency) and `latency_conditions`
    (`latency_conditions()`; {} where the latency was not timed)."""

    def __init__(self, costs: Mapping[str, Dict[str, Dict[str, Any]]], input_sizes: Mapping[str, List[int]],
                 latency_conditions: Mapping[str, Any]):
        super().__init__(costs)
        self.input_sizes = dict(input_sizes)
        self.latency_conditions = dict(latency_conditions)


def conditions_text(conditions: Mapping[str, Any], input_sizes: Sequence[Sequence[int]],
                    untimed: str = LATENCY_NOT_MEASURED) -> str:
    """'MACs (batch 1) and latency at input 3x32x32; CPU latency on <cpu>: wall clock, eager PyTorch, ...' (one
    line) from `latency_conditions()`; without them 'MACs (batch 1) at input 3x32x32; <untimed>'."""
    sizes = ', '.join(sorted({'x'.join(map(str, size)) for size in input_sizes if size})) or '?'
    if not conditions:
        return f'MACs (batch 1) at input {sizes}; {untimed}'
    c = conditions
    return (f"MACs (batch 1) and latency at input {sizes}; CPU latency on {c['device']}: {c['timer']} clock, "
            f"{c['runtime']}, batch {c['batch']}, {c['threads']} thread(s), {c['rounds']} interleaved rounds of >= "
            f"{c['min_time_s']} s of calls after {c['warmup']} warm-up call(s); ratio = median of the per-round "
            f"ratios to plain [interquartile range]" + _load_text(c))


def _load_text(conditions: Mapping[str, Any]) -> str:
    """'; load average ... at the start, ... at the end' (and what a load above the cores means), '' unrecorded."""
    start, end = conditions.get('load_avg_start'), conditions.get('load_avg')
    if not (start and end):
        return ''
    busy = max(start[0], end[0]) > (os.cpu_count() or 1)
    return (f'; load average (1/5/15 min) {start} at the start, {end} at the end'
            + (' (above the cores: other work shared the CPU, and the ratios carry its noise)' if busy else ''))


def latency_conditions(load_avg_start: Optional[Sequence[float]]) -> Dict[str, Any]:
    """How `latency_ratios` timed: LATENCY_CONDITIONS, the CPU (its torch threads read as the timing sets them) and
    its load average when the timing started (`load_avg_start`, `load_average()`) and now."""
    with num_threads(LATENCY_THREADS):
        return dict(LATENCY_CONDITIONS, device=device_description('cpu'), load_avg_start=load_avg_start,
                    load_avg=load_average())


def latency_text(ratio: Optional[float], iqr: Optional[Sequence[float]]) -> str:
    if ratio is None:
        return ''
    spread = f' [IQR {iqr[0]:.2f}-{iqr[1]:.2f}]' if iqr else ''
    return f', CPU latency x{ratio:.2f}{spread} of plain'


def check_contract(attn: Callable[..., nn.Module], backbones: Sequence[str], *,
                   options: Optional[Mapping[str, Any]] = None, slot: str = 'block', timm_tests: bool = False,
                   latency: bool = True, onnx: bool = True, module: Optional[str] = None,
                   progress: Callable[[str], None] = lambda msg: None) -> ContractReport:
    """Check `attn` (a module class or factory) alone and in each of `backbones` (zoo backbone names); raises
    ContractError naming the first broken promise, else returns the report. `options` go to every module's
    constructor, `slot` is where the backbone puts it ('block' or 'stage'). `latency=False` / `onnx=False` skip
    the timing / the exports. `module`: how the report names it (default: its import path)."""
    options = dict(options or {})
    _check_arguments(backbones, slot)
    label, load_avg_start = _label(attn), load_average()
    with torch.random.fork_rng(devices=[]):  # the same random inputs every time, the caller's generator untouched
        torch.manual_seed(0)
        progress(f'contract: {label} alone')
        _check_module(attn, options, label)
        rows = []
        for backbone in backbones:
            progress(f'contract: {label} in {backbone}')
            plain, model = _build_pair(backbone, attn, options, slot, label)
            _check_in_backbone(backbone, label, model, plain)
            rows.append(_cost(backbone, model, plain, latency, onnx))
        report = ContractReport(module=module or _import_path(attn), options=options, slot=slot, backbones=rows,
                                conditions=latency_conditions(load_avg_start) if latency else {})
        if timm_tests:
            progress(f"contract: timm's model tests on {backbones[0]} with {label}")
            report.timm_backbone = backbones[0]
            report.timm_tests = _timm_model_tests(backbones[0], attn, options, slot, label)
    return report


# ------------------------------------------------------------------ checks
def _check_arguments(backbones: Sequence[str], slot: str) -> None:
    unknown = [b for b in backbones if b not in BACKBONES]
    if unknown or not backbones:
        raise UsageError(f"unknown backbone(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"valid: {', '.join(BACKBONES)}")
    if slot not in ATTN_SLOTS:
        raise UsageError(f'slot must be one of {ATTN_SLOTS}, got {slot!r}')


def _label(attn) -> str:
    return getattr(getattr(attn, 'func', attn), '__name__', None) or repr(attn)


def _import_path(attn) -> str:
    target = getattr(attn, 'func', attn)
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', repr(target))}"


@contextlib.contextmanager
def _failure(what: str) -> Iterator[None]:
    """Any exception in the block becomes a ContractError '<what>: <Type>: <first line>'."""
    try:
        yield
    except ContractError:
        raise
    except Exception as e:  # a user's module can raise anything; the message is what the user needs
        raise ContractError(f'{what}: {one_line(e)}') from e


def _expect(what: str, y, shape: Tuple[int, ...], dtype: Union[torch.dtype, Tuple[torch.dtype, ...]]) -> torch.Tensor:
    """`y` must be a finite tensor of `shape` and `dtype` (or one of several)."""
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    if not isinstance(y, torch.Tensor):
        raise ContractError(f'{what}: returned {type(y).__name__}, expected a tensor')
    if tuple(y.shape) != tuple(shape):
        raise ContractError(f'{what}: output shape {tuple(y.shape)}, expected {tuple(shape)}')
    if y.dtype not in dtypes:
        raise ContractError(f"{what}: output dtype {y.dtype}, expected {' or '.join(map(str, dtypes))}")
    if not torch.isfinite(y).all():
        raise ContractError(f'{what}: output has NaN or infinite values')
    return y


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


def _same_values(what: str, got: torch.Tensor, expected: torch.Tensor) -> None:
    err = _relative_error(got, expected)
    if not err <= CHANNELS_LAST_RTOL:
        raise ContractError(f'{what}: output differs from the contiguous input\'s (relative error {err:.3g})')


def _deterministic(name: str, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module's output on `x`; ContractError when a second call on `x` gives another one, when a call draws
    random numbers (however rarely they change the output), or when an image's output depends on the other images
    of its batch (test accuracy would then change with the batch size)."""
    what = f'{name} called twice on the same {tuple(x.shape)} input in eval mode'
    rng = torch.get_rng_state()
    first, again = _run(what, module, x), _run(what, module, x)
    if not torch.equal(first, again):
        raise ContractError(f'{what}: the outputs differ (relative error {_relative_error(again, first):.3g}); in '
                            f'eval mode a module must be a function of its input (no random ops, no state a call '
                            f'changes)')
    if not torch.equal(rng, torch.get_rng_state()):
        raise ContractError(f'{name} drew random numbers in eval mode (torch.rand and the like): in eval mode a '
                            f'module must be a function of its input; draw them only when self.training')
    alone = _run(f'{name} on one image of the batch', module, x[1:])
    err = _relative_error(alone, first[1:])
    if not err <= CHANNELS_LAST_RTOL:
        raise ContractError(f"{name}: an image's output in eval mode depends on the other images of its batch "
                            f'(relative error {err:.3g} against the image alone): reduce over each image, not over '
                            f'the batch dimension')
    return first


def _run(what: str, module: nn.Module, x: torch.Tensor, autocast: bool = False):
    """The module's output on a copy of `x` (in its memory format): a module that writes its result into its input,
    as ZAM's inplace=True does, is checked as the function it computes, not by the input it changed."""
    with _failure(what), torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        return module(x.clone())


def _check_module(attn, options: Dict[str, Any], label: str) -> None:
    """The module alone, in eval mode: shapes, dtypes, channels_last, bf16 autocast; then finite gradients."""
    name = f'{label}({CHANNELS})'
    _check_signature(attn, options, label)
    with _failure(f'cannot build {name}'):
        module = attn(CHANNELS, **options)
    if not isinstance(module, nn.Module):
        raise ContractError(f'{name} returned {type(module).__name__}, expected a torch.nn.Module')
    _check_device_and_dtype(attn, options, label)
    with _failure(f'cannot build {name}'):
        rebuilt = attn(CHANNELS, **options)
    _check_tensors_registered(name, module, rebuilt)
    module.eval()
    for b, h, w in MODULE_INPUTS:
        x = torch.randn(b, CHANNELS, h, w)
        _expect(f'{name} on a {tuple(x.shape)} input', _run(f'{name} fails on a {tuple(x.shape)} input', module, x),
                x.shape, x.dtype)
    x = torch.randn(2, CHANNELS, 8, 8)
    y = _deterministic(name, module, x)
    what = f'{name} on a channels_last {tuple(x.shape)} input'
    y_cl = _expect(what, _run(what, module, x.contiguous(memory_format=torch.channels_last)), x.shape, x.dtype)
    _same_values(what, y_cl, y)
    what = f'{name} under bf16 autocast on a bfloat16 {tuple(x.shape)} input'
    _expect(what, _run(what, module, x.bfloat16(), autocast=True), x.shape, _autocast_dtypes(module))
    _check_gradients(name, module)


def _check_gradients(name: str, module: nn.Module) -> None:
    """Finite gradients in training calls at several sizes and draws, and one reaching every trainable parameter
    in one of them at least (a branch may run only on larger maps, or be skipped at random)."""
    module.train()
    for size in (8, 16, 32):
        for _ in range(4):
            x = torch.randn(2, CHANNELS, size, size, requires_grad=True)
            with _failure(f'{name} fails in a backward pass'):  # on a copy: in a block its input is no leaf
                module(x.clone()).square().mean().backward()
            _finite_gradients(name, [('input', x), *module.named_parameters()])
    untrained = [key for key, p in module.named_parameters() if p.requires_grad and p.grad is None]
    if untrained:
        raise ContractError(f"{name}: no gradient reached {', '.join(untrained)} in 12 training calls on 8x8 to "
                            f'32x32 inputs (computed under torch.no_grad, or detached?): such parameters do not '
                            f'train; make them with requires_grad=False if they are constants')


def _check_signature(attn, options: Dict[str, Any], label: str) -> None:
    """ContractError unless `attn` can be called as timm's blocks call it (`signature_problem`)."""
    problem = signature_problem(attn, options, label)
    if problem is not None:
        raise ContractError(problem)


def _autocast_dtypes(module: nn.Module) -> Tuple[torch.dtype, ...]:
    """What a module may return under bf16 autocast: bfloat16, or float32 where it has float32 parameters or buffers
    of its own. Autocast leaves element-wise ops alone, so `x * self.gamma` is float32 by PyTorch's type promotion
    (timm's LayerScale2d); a module without any float32 tensor of its own that returns float32 upcasts by itself."""
    own = any(t.dtype == torch.float32 for t in [*module.parameters(), *module.buffers()])
    return (torch.bfloat16, torch.float32) if own else (torch.bfloat16,)


def _check_device_and_dtype(attn, options: Dict[str, Any], label: str) -> None:
    """timm's blocks pass `device` and `dtype`, and `zamzoo export` builds models on the 'meta' device: every
    parameter and buffer must be made there, floating-point ones in that dtype (two of them: a module that ignores
    the argument makes its tensors in one dtype of its own)."""
    for dtype in (torch.float64, torch.bfloat16):
        name = f"{label}({CHANNELS}, device='meta', dtype={dtype})"
        with _failure(f'cannot build {name}'):
            module = attn(CHANNELS, **options, device='meta', dtype=dtype)
        for key, t in [*module.named_parameters(), *module.named_buffers()]:
            if t.device.type != 'meta' or (t.is_floating_point() and t.dtype != dtype):
                raise ContractError(f'{name} made {key} on {t.device} as {t.dtype}: make every parameter and buffer '
                                    f'with the device and dtype given (timm passes them; zamzoo export builds on '
                                    f'meta)')


def _check_forward_on_meta(name: str, module: nn.Module, x: torch.Tensor) -> None:
    """A tensor that forward makes on another device than its input's (torch.linspace(...) without device=x.device)
    fails on a GPU; on the meta device it fails on any machine. Other failures there (`.item()`, a branch on values)
    are the meta device's own: such a module runs on real tensors."""
    try:
        with torch.no_grad():
            module(x)
    except Exception as e:  # a user's module can raise anything
        if 'device' in str(e):
            raise ContractError(f"{name} on an input on the meta device: {one_line(e)}: make every tensor of forward "
                                f"on its input's device (device=x.device), and keep tensors as parameters or buffers "
                                f"(register_buffer), which .to(device) moves; a run on a GPU fails the same way") from e


def _check_tensors_registered(name: str, module: nn.Module, rebuilt: nn.Module) -> None:
    """Every tensor a module keeps moves with it: a lazy parameter has no size until a first forward pass (the zoo
    counts, saves and optimises parameters before any), and a tensor kept outside the parameters and buffers stays
    where it was made when the model moves (`.to('cuda')`): `rebuilt`, a second one, moved to the meta device, must
    run there."""
    lazy = [key for key, t in [*module.named_parameters(), *module.named_buffers()] if nn.parameter.is_lazy(t)]
    if lazy:
        raise ContractError(f"{name}: {', '.join(lazy)} is lazy (nn.LazyLinear and the like): size every layer from "
                            f'the channels given; the zoo counts, saves and optimises parameters before any forward '
                            f'pass')
    with _failure(f"{name} cannot be moved with .to('meta')"):
        rebuilt = rebuilt.to('meta').eval()
    _check_forward_on_meta(f"{name} moved with .to('meta')", rebuilt, torch.randn(2, CHANNELS, 8, 8, device='meta'))


def _finite_gradients(name: str, tensors: Sequence[Tuple[str, torch.Tensor]]) -> None:
    for tensor_name, t in tensors:
        if t.grad is not None and not torch.isfinite(t.grad).all():
            raise ContractError(f'{name}: the gradient of {tensor_name} has NaN or infinite values')


def _plain_name(backbone: str) -> str:
    return next(e.baseline for e in ZOO.values() if e.backbone.name == backbone)


def _build_pair(backbone: str, attn, options, slot: str, label: str) -> Tuple[nn.Module, nn.Module]:
    """(the plain backbone, the backbone with `attn`), both random-init with calibrated BatchNorm statistics."""
    import timm

    torch.manual_seed(0)
    plain = timm.create_model(_plain_name(backbone))
    size = tuple(plain.pretrained_cfg['input_size'])
    with _failure(f'cannot build {backbone} with {label}'):
        model = timm.create_model(_plain_name(backbone), attn_layer=attn, attn_kwargs=options or None, attn_slot=slot)
    with _failure(f"{backbone} with {label} fails in a training-mode forward pass (calibrating BatchNorm)"):
        calibrate_batchnorm(model, size, **CALIBRATION)
    return calibrate_batchnorm(plain, size, **CALIBRATION), model


def _check_in_backbone(backbone: str, label: str, model: nn.Module, plain: nn.Module) -> None:
    """Logits of the plain backbone's shape and dtype (batch 1, odd sizes, channels_last, bf16 autocast), finite
    gradients of a training step."""
    name = f'{backbone} with {label}'
    for b, h, w in MODEL_INPUTS:
        x = torch.randn(b, 3, h, w)
        expected = _run(f'plain {backbone}', plain, x)
        what = f'{name} on a {tuple(x.shape)} input'
        y = _expect(what, _run(what, model, x), expected.shape, expected.dtype)
    what = f'{name} on a channels_last {tuple(x.shape)} input'
    model.to(memory_format=torch.channels_last)
    try:
        y_cl = _run(what, model, x.contiguous(memory_format=torch.channels_last))
    finally:
        model.to(memory_format=torch.contiguous_format)
    _same_values(what, _expect(what, y_cl, y.shape, y.dtype), y)
    what = f'{name} under bf16 autocast'
    expected = _run(f'plain {backbone} under bf16 autocast', plain, x, autocast=True)
    _expect(what, _run(what, model, x, autocast=True), expected.shape, expected.dtype)
    model.train()
    with _failure(f'{name} fails in a training step'):
        logits = model(x)
        F.cross_entropy(logits, torch.randint(0, logits.shape[-1], (x.shape[0],))).backward()
    _expect(f'{name} in training mode', logits, y.shape, y.dtype)
    _finite_gradients(name, list(model.named_parameters()))
    model.zero_grad(set_to_none=True)
    model.eval()


# ------------------------------------------------------------------ cost
def _cost(backbone: str, model: nn.Module, plain: nn.Module, latency: bool, onnx: bool) -> BackboneContract:
    size = tuple(plain.pretrained_cfg['input_size'])
    ratio = latency_ratio(model, plain, size) if latency else {'median': None, 'iqr': None}
    return BackboneContract(
        backbone=backbone,
        params_added=count_params(model) - count_params(plain),
        macs_added=count_macs(model, size) - count_macs(plain, size),
        cpu_latency_ratio=ratio['median'],
        onnx=_onnx_exports(model, size) if onnx else {},
        cpu_latency_iqr=ratio['iqr'],
        input_size=list(size),
    )


def arm_costs(attn: Callable[..., nn.Module], name: str, backbones: Sequence[str], baselines: Sequence[str], *,
              options: Optional[Mapping[str, Any]] = None, slot: str = 'block', latency: bool = True,
              image_size: Optional[int] = None, progress: Callable[[str], None] = lambda msg: None) -> ArmCosts:
    """backbone -> arm (the candidate `attn` as `name`, each zoo attention of `baselines`) -> its cost against the
    plain backbone (the compare report's cost keys, `stats.COST_KEYS`), with how it was measured (`ArmCosts`), at
    the runs' `image_size` (None: each backbone's own input size). Per backbone, plain and every arm are timed in the
    same interleaved rounds, so all latency ratios share them (plain's is 1 by definition)."""
    import timm

    label, load_avg_start = _label(attn), load_average()
    costs, sizes = {}, {}
    with torch.random.fork_rng(devices=[]):
        for backbone in backbones:
            progress(f"cost: {', '.join((name, *baselines))} in {backbone}")
            plain, model = _build_pair(backbone, attn, dict(options or {}), slot, label)
            size = (3, image_size, image_size) if image_size else tuple(plain.pretrained_cfg['input_size'])
            sizes[backbone] = list(size)
            models = {a: calibrate_batchnorm(timm.create_model(Arms.model(backbone, a)), size, **CALIBRATION)
                      for a in baselines if a != 'plain'}
            models.update(plain=plain, **{name: model})
            ratios = latency_ratios(models, size) if latency else {}
            none = {'median': None, 'iqr': None}
            plain_params, plain_macs = count_params(plain), count_macs(plain, size)  # once, not once per arm
            costs[backbone] = {arm: {'params_added': count_params(m) - plain_params,
                                     'macs_added': count_macs(m, size) - plain_macs,
                                     'cpu_latency_ratio': ratios.get(arm, none)['median'],
                                     'cpu_latency_iqr': ratios.get(arm, none)['iqr']}
                               for arm, m in models.items() if arm != 'plain' or 'plain' in baselines}
    return ArmCosts(costs, sizes, latency_conditions(load_avg_start) if latency else {})


def latency_ratios(models: Mapping[str, nn.Module], size: Tuple[int, ...]) -> Dict[str, Dict[str, Any]]:
    """name -> {'median', 'iqr'} of (time of that model / time of models['plain'] in the same round) over
    interleaved rounds of all `models`, eager CPU, as LATENCY_CONDITIONS say. A latency is wall time: a module that
    waits (I/O, a lock, a sleep) costs what it waits, which the CPU time of the process would not show. On a machine
    shared with other work the wall clock also measures the share of the processor each call got; interleaving the
    rounds spreads that over all models alike, and the interquartile range shows what is left."""
    times = interleaved_latency(dict(models), size, LATENCY_BATCH, repeats=LATENCY_ROUNDS, timer=LATENCY_TIMER,
                                threads=LATENCY_THREADS)
    return {name: ratio_of_rounds(t, times['plain']) for name, t in times.items()}


def latency_ratio(model: nn.Module, plain: nn.Module, size: Tuple[int, ...]) -> Dict[str, Any]:
    """{'median', 'iqr'} of the latency of `model` against `plain` (`latency_ratios`)."""
    return latency_ratios({'plain': plain, 'model': model}, size)['model']


def _onnx_exports(model: nn.Module, size: Tuple[int, ...]) -> Dict[str, str]:
    """exporter -> 'ok (...)' or 'error: <why>', each file checked against eager PyTorch by `export_onnx`."""
    results = {}
    with tempfile.TemporaryDirectory(prefix='zamzoo-contract-') as tmp:
        for exporter, use_dynamo in EXPORTERS.items():
            try:
                err = export_onnx(model, Path(tmp, f'{exporter}.onnx'), size, use_dynamo=use_dynamo)
                results[exporter] = f'ok (relative error {err:.2g} against eager PyTorch)'
            except OnnxExportError as e:
                results[exporter] = f'error: {e}'
            except Exception as e:  # ONNX Runtime refusing the file (an op it lacks) is an exporter failure too
                results[exporter] = f'error: ONNX Runtime cannot run the {exporter} export: {one_line(e)}'
    return results


# ------------------------------------------------------------------ timm's generic model tests
def _timm_model_tests(backbone: str, attn, options, slot: str, label: str) -> Dict[str, str]:
    """The checks of timm's tests/test_models.py (its test functions' names; timm's tests are not in its wheel) on
    the backbone with `attn`, built through timm's builder as the zoo's models are; test name -> 'ok'."""
    import timm

    def build(**kwargs) -> nn.Module:
        return timm.create_model(_plain_name(backbone), attn_layer=attn, attn_kwargs=options or None, attn_slot=slot,
                                 **kwargs)

    tests = {'test_model_forward': _timm_forward, 'test_model_backward': _timm_backward,
             'test_model_default_cfgs': _timm_default_cfgs, 'test_model_forward_intermediates': _timm_intermediates,
             'test_model_forward_features': _timm_features, 'test_model_forward_torchscript': _timm_torchscript,
             'test_model_forward_fx': _timm_fx, 'test_model_backward_fx': _timm_backward_fx}
    for test, run in tests.items():
        with _failure(f"timm's {test} on {backbone} with {label}"):
            torch.manual_seed(0)
            run(build)
    return {test: 'ok' for test in tests}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _input(model: nn.Module, batch: int) -> torch.Tensor:
    return torch.randn(batch, *model.pretrained_cfg['input_size'])


def _timm_forward(build) -> None:
    model = build().eval()
    _check(not torch.isnan(model(_input(model, 1))).any(), 'output included NaNs')


def _timm_backward(build, fx: bool = False) -> None:
    model = build(num_classes=42).train()
    net = _fx_model(model) if fx else model
    outputs = net(_input(model, 2))
    outputs.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    _check(not missing, f'no gradient for {missing[:3]}')
    _check(outputs.shape[-1] == 42 and not torch.isnan(outputs).any(), 'wrong output shape or NaNs')


def _timm_default_cfgs(build) -> None:
    model = build().eval()
    cfg, state_dict, x = model.pretrained_cfg, model.state_dict(), _input(model, 1)
    _check(model.forward_features(x).shape[-2:] == tuple(cfg['pool_size']), 'forward_features size != pool_size')
    _check(model.forward_head(model.forward_features(x), pre_logits=True).shape[-1] == model.head_hidden_size,
           'forward_head(pre_logits=True) size != head_hidden_size')
    model.reset_classifier(0)
    _check(model(x).shape == (1, model.num_features), 'reset_classifier(0): output is not (B, num_features)')
    model.reset_classifier(0, '')
    _check(model(x).shape[-2:] == tuple(cfg['pool_size']), "reset_classifier(0, ''): output size != pool_size")
    for key in ('classifier', 'first_conv'):
        _check(f'{cfg[key]}.weight' in state_dict, f'{key} {cfg[key]!r} not in the model parameters')


def _timm_intermediates(build) -> None:
    model = build().eval()
    x = _input(model, 1)
    final, intermediates = model.forward_intermediates(x)
    _check(torch.allclose(final, model.forward_features(x), rtol=1e-4, atol=1e-5),
           'forward_intermediates final output != forward_features')
    channels = [info['num_chs'] for info in model.feature_info]
    _check([t.shape[1] for t in intermediates] == channels, 'intermediate channels != feature_info')


def _timm_features(build) -> None:
    model = build(features_only=True).eval()
    channels = model.feature_info.channels()
    outputs = model(_input(model, 1))
    _check(len(channels) >= 4 and len(outputs) == len(channels), 'feature levels != feature_info')
    for c, o in zip(channels, outputs):
        _check(o.shape[1] == c and not torch.isnan(o).any(), 'feature channels != feature_info, or NaNs')


def _timm_torchscript(build) -> None:
    import timm

    with timm.layers.set_scriptable(True):
        model = build().eval()
    outputs = torch.jit.script(model)(_input(model, 1))
    _check(outputs.shape[0] == 1 and not torch.isnan(outputs).any(), 'wrong batch or NaNs')


def _fx_model(model: nn.Module) -> nn.Module:
    """The model traced by torch.fx as timm's tests trace it (timm's leaf modules and functions kept whole), its
    last node as the output."""
    from timm.layers import get_graph_node_names
    from timm.models import GraphExtractNet

    train_nodes, eval_nodes = get_graph_node_names(model)
    return GraphExtractNet(model, [train_nodes[-1] if model.training else eval_nodes[-1]])


def _timm_fx(build) -> None:
    model = build().eval()
    x = _input(model, 1)
    with torch.no_grad():
        expected, got = model(x), _fx_model(model)(x)
    _check(torch.allclose(got, expected, rtol=1e-4, atol=1e-5), 'the fx-traced model differs from eager')


def _timm_backward_fx(build) -> None:
    _timm_backward(build, fx=True)
