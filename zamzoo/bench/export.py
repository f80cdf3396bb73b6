"""`zamzoo bench export`: every model through timm's `onnx_export` with both exporters (TorchScript-based and
dynamo), each file checked against eager PyTorch with ONNX Runtime at batch 1 and 8 (`zamzoo.bench.onnx`).

Models are random-init with calibrated BatchNorm statistics (`zamzoo.bench.calibration`): with the default running
statistics a deep random network in eval mode gives the same logits for every input (or overflows), which would
make any comparison pass. Each row also gives PyTorch's own float32 rounding error on the same inputs (against a
float64 copy of the model): an ONNX Runtime error of that size is rounding, not a wrong graph (`export_onnx`'s
tolerance, `zamzoo.bench.onnx`).
"""
import shlex
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import torch

from .._paths import check_writable
from .calibration import calibrate_batchnorm
from .models import _versions, progress_printer, select_models, write_json_and_markdown

__all__ = ['EXPORTERS', 'bench_export', 'markdown_report', 'write_report']

EXPORTERS = {'torchscript': False, 'dynamo': True}  # name -> onnx_export's use_dynamo


def _export_one(name: str, exporter: str, folder: Path) -> Dict:
    import timm
    from .onnx import OnnxExportError, export_onnx, fp32_rounding

    torch.manual_seed(0)
    model = timm.create_model(name)
    input_size = tuple(model.pretrained_cfg['input_size'])
    calibrate_batchnorm(model, input_size)
    row = {'model': name, 'exporter': exporter, 'ok': False, 'max_rel_err': None, 'error': None}
    start = time.perf_counter()
    try:
        row['max_rel_err'] = export_onnx(model, folder / f'{name}.{exporter}.onnx', input_size,
                                         use_dynamo=EXPORTERS[exporter])
        row['ok'] = True
    except OnnxExportError as e:
        row['error'] = str(e)
    row['seconds'] = round(time.perf_counter() - start, 2)
    row['torch_fp32_err'] = fp32_rounding(model, input_size)
    return row


def bench_export(names: Sequence[str], exporters: Sequence[str] = tuple(EXPORTERS),
                 progress: Callable[[str], None] = lambda msg: None) -> Dict:
    """One row per (model, exporter): ok, largest relative error of ONNX Runtime vs PyTorch, seconds. Without the
    onnx extra: OnnxExportError before any model is built."""
    from .onnx import CHECK_BATCHES, OPSET, ROUNDING_FACTOR, RTOL, require_onnx

    onnxruntime = require_onnx()
    start = time.perf_counter()
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory(prefix='zamzoo-onnx-') as tmp:
        for name in names:
            for exporter in exporters:
                r = _export_one(name, exporter, Path(tmp))
                rows.append(r)
                progress(f"{name} {exporter}: {'ok' if r['ok'] else 'ERROR'} "
                         f"{r['max_rel_err'] if r['ok'] else r['error']} ({r['seconds']} s)")
    versions = dict(_versions(), onnxruntime=onnxruntime.__version__)
    return {'date': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'versions': versions,
            'settings': {'opset': OPSET, 'rtol': RTOL, 'rounding_factor': ROUNDING_FACTOR,
                         'batch_sizes': list(CHECK_BATCHES), 'dynamic_batch': True, 'threads': torch.get_num_threads()},
            'duration_s': round(time.perf_counter() - start, 1), 'rows': rows}


def markdown_report(report: Dict) -> str:
    s, rows = report['settings'], report['rows']
    ok = sum(r['ok'] for r in rows)
    lines = [f"# ONNX export: {ok} / {len(rows)} ok", '',
             f"`{report.get('command', 'zamzoo bench export')}` on {report['date']}, "
             + ', '.join(f'{k} {v}' for k, v in report['versions'].items()) + '.', '',
             f"timm's `onnx_export`, opset {s['opset']}, dynamic batch; ONNX Runtime (CPU; its graph optimizations "
             f"on, then off) vs eager PyTorch at batch {' and '.join(map(str, s['batch_sizes']))} on random inputs, "
             f"random-init models with calibrated BatchNorm; ok = relative error max|ort - torch| / max|torch| "
             f"<= {s['rtol']:g}, or <= "
             f"{s.get('rounding_factor', '-')} x the last column: PyTorch's own float32 error against a float64 "
             f"copy of the model on the same inputs (rounding noise). "
             f"Total {report['duration_s']:.0f} s with {s['threads']} thread(s).", '',
             '| model | exporter | result | max rel err | time (s) | PyTorch fp32 vs fp64 |',
             '|---|---|---|---:|---:|---:|']
    for r in rows:
        err = f"{r['max_rel_err']:.1e}" if r['max_rel_err'] is not None else ''
        result = 'ok' if r['ok'] else 'error: ' + r['error'].replace('|', '\\|')
        noise = f"{r['torch_fp32_err']:.1e}" if r.get('torch_fp32_err') is not None else ''
        lines.append(f"| {r['model']} | {r['exporter']} | {result} | {err} | {r['seconds']:.1f} | {noise} |")
    return '\n'.join(lines) + '\n'


def write_report(report: Dict, out_dir) -> Dict[str, Path]:
    """Write export_onnx.json and .md into out_dir, atomically; returns the paths."""
    return write_json_and_markdown(report, markdown_report(report), Path(out_dir) / 'export_onnx')


def add_arguments(p) -> None:
    p.add_argument('--models', nargs='+', default=['*'], metavar='PATTERN',
                   help="model names or fnmatch patterns, e.g. 'resnet18_*' (default: all)")
    p.add_argument('--exporters', nargs='+', default=list(EXPORTERS), choices=list(EXPORTERS))
    p.add_argument('--out', default='bench-results', metavar='DIR', help='output folder (default: bench-results)')
    p.add_argument('--quiet', action='store_true', help='no progress lines')


def run(args) -> int:
    check_writable(args.out, '--out')  # before the exports, which take minutes
    report = bench_export(select_models(args.models), args.exporters, progress=progress_printer(args.quiet))
    report['command'] = 'zamzoo bench export ' + ' '.join(
        ['--models', *map(shlex.quote, args.models), '--exporters', *args.exporters])
    paths = write_report(report, args.out)
    print(markdown_report(report))
    print(f"wrote {paths['json']} and {paths['md']}")
    return 0 if all(r['ok'] for r in report['rows']) else 1
