"""model.onnx in an export folder: `add_onnx` (``zamzoo export --onnx``) writes it through `zamzoo.bench.onnx`
(checked with ONNX Runtime against PyTorch) and `check_onnx_record` is push's check of it."""
from pathlib import Path
from typing import Optional, Tuple

from torch import nn

from ..bench.onnx import CHECK_BATCHES, INPUT_NAME, OPSET, OUTPUT_NAME, export_onnx
from ..pretrained import sha256_file

__all__ = ['add_onnx', 'check_onnx_record', 'ONNX_FILENAME']

ONNX_FILENAME = 'model.onnx'


def add_onnx(net: nn.Module, folder, input_size: Tuple[int, int, int]) -> dict:
    """Write `ONNX_FILENAME` into an export folder (dynamo exporter, checked by `export_onnx`); returns the record
    results.json keeps of it (sha256, exporter, opset, names, the measured error)."""
    path = Path(folder) / ONNX_FILENAME
    err = export_onnx(net, path, input_size, use_dynamo=True)
    return dict(filename=ONNX_FILENAME, sha256=sha256_file(path), size_bytes=path.stat().st_size, opset=OPSET,
                exporter='torch.onnx dynamo (timm.utils.onnx.onnx_export)', input_name=INPUT_NAME,
                output_name=OUTPUT_NAME, dynamic_batch=True, max_rel_err=err, checked_batch_sizes=list(CHECK_BATCHES))


def check_onnx_record(folder, results: dict) -> Optional[str]:
    """What is wrong with the folder's model.onnx against results.json's record of it (None when it matches or the
    export has no ONNX file)."""
    path, record = Path(folder) / ONNX_FILENAME, results.get('onnx')
    if not path.exists():
        return f"results.json records {ONNX_FILENAME} but the folder has none" if record else None
    if not isinstance(record, dict) or 'sha256' not in record:
        return f'{ONNX_FILENAME} is not recorded in results.json (export again with --onnx)'
    if sha256_file(path) != record['sha256']:
        return f'{ONNX_FILENAME} changed after export (sha256 differs from results.json): export again'
    return None
