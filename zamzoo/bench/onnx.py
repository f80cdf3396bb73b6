"""ONNX export through timm's own `timm.utils.onnx.onnx_export`, checked against PyTorch with ONNX Runtime.

`export_onnx` writes the file (dynamic batch, opset 18 unless asked otherwise, every Conv weight an initializer:
`_fold_constants`) only after ONNX Runtime's logits matched the eager PyTorch model's on random inputs at every
checked batch size, with ONNX Runtime's graph optimizations and without (`onnx_parity`): relative error
``max|ort - torch| / max|torch|`` at most `RTOL`, or, for a model whose float32 result is itself further than that
from the exact one, at most `ROUNDING_FACTOR` times PyTorch's own float32 rounding error (`fp32_rounding`,
against a float64 copy of the model): two float32 implementations that sum in different orders can each be that
far from the exact result, and so from each other (deep random networks such as resnet164 at 2-4e-4).
`zamzoo bench export` runs it on every model; publishing (`zamzoo.publish.onnx`) adds its file to an export folder.
Needs the `onnx` extra: ``pip install 'zamzoo[onnx]'``.
"""
import contextlib
import copy
import io
import sys
import warnings
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from .._io import atomic_path
from ..errors import ZamzooError, one_line

__all__ = ['OnnxExportError', 'require_onnx', 'export_onnx', 'onnx_parity', 'fp32_rounding', 'OPSET', 'RTOL',
           'ROUNDING_FACTOR', 'INPUT_NAME', 'OUTPUT_NAME', 'CHECK_BATCHES']

OPSET = 18
RTOL = 1e-4
ROUNDING_FACTOR = 3
INPUT_NAME, OUTPUT_NAME = 'input', 'logits'
CHECK_BATCHES = (1, 8)
_NO_LIMIT = 1 << 62  # tensor elements: onnxscript folds none above 8192 input elements by default


class OnnxExportError(ZamzooError):
    """An ONNX export failed, or its ONNX Runtime outputs differ from PyTorch's."""


def require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401  (torch's dynamo exporter)
    except ImportError as e:
        where = '' if sys.version_info >= (3, 11) else (  # the extra's onnxruntime floor has no older builds
            f' on Python >= 3.11 (the onnxruntime it needs has no build for Python '
            f'{sys.version_info[0]}.{sys.version_info[1]})')
        raise OnnxExportError(f"ONNX export needs onnx, onnxscript and onnxruntime ({e.name} is missing): "
                              f"pip install 'zamzoo[onnx]'{where}") from None
    return onnxruntime


def _check_inputs(input_size: Tuple[int, int, int], batch_sizes: Sequence[int]):
    """The random inputs of the checks, one per batch size: the same ones for `onnx_parity` and `fp32_rounding`."""
    generator = torch.Generator().manual_seed(0)
    for b in batch_sizes:
        yield b, torch.randn((b, *input_size), generator=generator)


def onnx_parity(path, model: nn.Module, input_size: Tuple[int, int, int],
                batch_sizes: Sequence[int] = CHECK_BATCHES) -> float:
    """The largest relative error of ONNX Runtime's output of the file `path` against `model` (eval, no grad) on
    random inputs, one per batch size, with ONNX Runtime's graph optimizations (its default: on this CPU, e.g. its
    NCHWc layout) and without them (the graph as written, which a runtime with other optimizations starts from)."""
    ort = require_onnx()
    sessions = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        sessions.append(ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider']))
    worst = 0.0
    for b, x in _check_inputs(input_size, batch_sizes):
        with torch.no_grad():
            expected = model(x.clone())  # a module built with inplace=True overwrites its input
        if not isinstance(expected, torch.Tensor):
            raise OnnxExportError(f'the model returns a {type(expected).__name__}, expected one tensor (a '
                                  f'classifier\'s logits; not features_only=True)')
        expected = expected.double()
        for session in sessions:
            got = torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0]).double()
            if got.shape != expected.shape:
                raise OnnxExportError(f'ONNX output at batch {b} has shape {tuple(got.shape)}, '
                                      f'PyTorch {tuple(expected.shape)}')
            worst = max(worst, _relative_error(got, expected, b))
    return worst


def _relative_error(got: torch.Tensor, expected: torch.Tensor, batch: int) -> float:
    """max|got - expected| / max|expected| over the finite outputs; an OnnxExportError where the NaNs and infinities
    of the two differ (a NaN would otherwise make the error NaN, which `max` passes over)."""
    special = ~expected.isfinite()
    if not (torch.equal(special, ~got.isfinite()) and torch.equal(_signs(got[special]), _signs(expected[special]))):
        raise OnnxExportError(f'ONNX Runtime output at batch {batch} has {int((~got.isfinite()).sum())} NaN or '
                              f'infinite values, PyTorch\'s {int(special.sum())}, not the same ones')
    if special.all():
        return 0.0
    got, expected = got[~special], expected[~special]
    return ((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


def _signs(values: torch.Tensor) -> torch.Tensor:
    return values.nan_to_num(0.0, posinf=1.0, neginf=-1.0)


def fp32_rounding(model: nn.Module, input_size: Tuple[int, int, int],
                  batch_sizes: Sequence[int] = CHECK_BATCHES) -> float:
    """max|torch fp32 - torch fp64| / max|torch fp64| of `model` on the inputs `onnx_parity` uses."""
    model64 = copy.deepcopy(model).double()
    worst = 0.0
    for _, x in _check_inputs(input_size, batch_sizes):
        with torch.no_grad():
            exact = model64(x.double())
            worst = max(worst, ((model(x).double() - exact).abs().max() / exact.abs().max()).item())
    return worst


def export_onnx(model: nn.Module, path, input_size: Optional[Tuple[int, int, int]] = None, *,
                use_dynamo: bool = False, opset: int = OPSET, rtol: float = RTOL,
                batch_sizes: Sequence[int] = CHECK_BATCHES) -> float:
    """Export `model` (in eval mode; its mode is restored after) to `path` with a dynamic batch; returns the
    relative error measured by `onnx_parity`. Raises OnnxExportError, leaving nothing at `path`, when the export
    fails, writes another opset than `opset`, or the error exceeds `rtol`. `input_size` (C, H, W) defaults to the
    model's pretrained_cfg."""
    require_onnx()
    from timm.utils.onnx import onnx_export

    input_size = tuple(input_size or model.pretrained_cfg['input_size'])
    example = torch.randn((2, *input_size), generator=torch.Generator().manual_seed(1))
    with _eval_mode(model), atomic_path(path) as tmp:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter('ignore')
                onnx_export(model, str(tmp), example_input=example, opset=opset, use_dynamo=use_dynamo,
                            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
        except Exception as e:  # the exporters raise many types; the message is what the user needs
            raise OnnxExportError(f'ONNX export ({_exporter(use_dynamo)}) failed: {one_line(e)}') from e
        try:
            _fold_constants(tmp)
        except Exception as e:  # onnxscript's passes too
            raise OnnxExportError(f'ONNX export ({_exporter(use_dynamo)}): constant folding of the exported graph '
                                  f'(onnxscript) failed: {one_line(e)}') from e
        _check_written(tmp, opset, use_dynamo)
        err = onnx_parity(tmp, model, input_size, batch_sizes)
        if not err <= rtol:
            rounding = fp32_rounding(model, input_size, batch_sizes)
            if not err <= ROUNDING_FACTOR * rounding:
                raise OnnxExportError(
                    f'ONNX Runtime output differs from PyTorch ({_exporter(use_dynamo)} exporter; ONNX Runtime '
                    f'with or without its graph optimizations): relative error '
                    f'{err:.3g} > {rtol:g} and > {ROUNDING_FACTOR} x PyTorch\'s own float32 rounding ({rounding:.3g})')
    return err


def _exporter(use_dynamo: bool) -> str:
    return 'dynamo' if use_dynamo else 'TorchScript'


def _fold_constants(path) -> None:
    """Folds what the exported graph computes from the weights alone into initializers, with onnxscript's constant
    folding (its size limits lifted, shapes inferred) and every Constant node lifted: ONNX Runtime's quantizer
    (`quantize_dynamic`) needs each Conv weight to be an initializer, and the exporters leave some computed (ULSAM's
    ONNX spelling builds its Conv weights from its parameters: eye * folded, pad, view)."""
    from onnxscript import ir, optimizer
    from onnxscript.ir.passes.common import LiftConstantsToInitializersPass

    model = ir.load(str(path))
    optimizer.fold_constants(model, onnx_shape_inference=True, input_size_limit=_NO_LIMIT, output_size_limit=_NO_LIMIT)
    LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    optimizer.remove_unused_nodes(model)
    ir.save(model, str(path))


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _check_written(path, opset: int, use_dynamo: bool) -> None:
    """The file has the opset asked for (the dynamo exporter writes its own, 18, where onnxscript cannot convert the
    graph down, and only logs that) and a dynamic batch."""
    import onnx

    written = onnx.load(str(path), load_external_data=False)
    version = next((o.version for o in written.opset_import if o.domain in ('', 'ai.onnx')), None)
    if version != opset:
        raise OnnxExportError(f'the {_exporter(use_dynamo)} exporter wrote opset {version}, not the opset {opset} '
                              f'asked for' + (' (it cannot convert this graph to it): use_dynamo=False (the '
                                              'TorchScript exporter) writes older opsets' if use_dynamo else ''))
    dim = written.graph.input[0].type.tensor_type.shape.dim[0]
    if not dim.dim_param:
        raise OnnxExportError(f'the exported ONNX input has a fixed batch size ({dim.dim_value}), expected dynamic')
