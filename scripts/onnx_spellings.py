"""ZAM's and ULSAM's ONNX spellings under ONNX Runtime, side by side (docs/bench/onnxruntime.md, "On the Intel Xeon
VM").

Exports `mobilenet_zam` once per spelling of `ZAM._forward_onnx` (or `mobilenet_ulsam` once per spelling of
`ULSAM._refine_onnx`; dynamo exporter, opset 18, static batch, BN statistics of random inputs) and `mobilenet_plain`
alike, checks each against eager PyTorch, then times the ONNX Runtime sessions (ORT_ENABLE_ALL, one intra-op thread)
in interleaved rounds, the order rotating, CPU time of the process, and prints the median (and interquartile range)
of model / plain over rounds. A measurement, not a test: a few minutes at batch 64.

    python scripts/onnx_spellings.py --batch 1 --rounds 15
    python scripts/onnx_spellings.py --batch 64 --rounds 5 --chunks 2 8
    python scripts/onnx_spellings.py --model mobilenet_ulsam --batch 64 --rounds 5
"""
import argparse
import contextlib
import io
import tempfile
import time
import warnings
from pathlib import Path

import onnxruntime as ort
import timm
import torch
import torch.nn.functional as F

import zamzoo  # noqa: F401  (registers the models)
from zamzoo.bench.export import calibrate_batchnorm
from zamzoo.bench.models import ratio_of_rounds
from zamzoo.layers import ULSAM, ZAM

NCHWC = ZAM._forward_onnx
ULSAM_NCHWC = ULSAM._refine_onnx


def plain_formula(self, x):
    """ReduceMean / ReduceMax over (2, 3), then over 1, broadcast Muls: ONNX Runtime runs them in NCHW."""
    x = self._apply_gate(x, torch.sigmoid(x.mean([2, 3], keepdim=True) + x.amax([2, 3], keepdim=True)))
    return self._apply_gate(x, torch.sigmoid(x.mean([1], keepdim=True) + x.amax([1], keepdim=True)))


def channels_last(self, x):
    """The channel gate from NCHWc pools, then the (B, H W, C) copy: broadcast Muls, reductions over its last axis."""
    b, c, h, w = x.shape
    gate = torch.sigmoid(F.avg_pool2d(x, [h, w]) + F.max_pool2d(x, [h, w])).view(b, 1, c)
    y = x.permute(0, 2, 3, 1).reshape(b, h * w, c) * gate
    y = y * torch.sigmoid(y.mean(-1, keepdim=True) + y.amax(-1, keepdim=True))
    return y.reshape(b, h, w, c).permute(0, 3, 1, 2)


def channels_last_throughout(self, x):
    """Both statistics on the (B, H W, C) copy."""
    b, c, h, w = x.shape
    xt = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
    y = xt * torch.sigmoid(xt.mean(1, keepdim=True) + xt.amax(1, keepdim=True))
    y = y * torch.sigmoid(y.mean(-1, keepdim=True) + y.amax(-1, keepdim=True))
    return y.reshape(b, h, w, c).permute(0, 3, 1, 2)


def ulsam_maps(self, x, folded):
    """The maps from the BNs folded into the convs (`ULSAM._folded`), in NCHW: DW conv + BN as one addcmul, the
    MaxPool, the PW convs as one matmul, softmax."""
    b, c, h, w = x.shape
    g = self.groups
    a = self.pool(F.relu(torch.addcmul(folded[1], x, folded[0])))
    a = F.relu(torch.matmul(folded[2], a.reshape(b, g, c // g, h * w)) + folded[3])
    return torch.softmax(a.reshape(b, g, h * w), dim=-1).reshape(b, g, h, w)


def ulsam_plain(self, x, folded):
    """The plain formula: addcmul of the (B, g, G, H, W) view (in NCHW)."""
    b, c, h, w = x.shape
    x5 = x.reshape(b, self.groups, c // self.groups, h, w)
    return torch.addcmul(x5, x5, ulsam_maps(self, x, folded).unsqueeze(2)).reshape(b, c, h, w)


def ulsam_one_plus(self, x, folded):
    """x * (1 + A) on that view."""
    b, c, h, w = x.shape
    x5 = x.reshape(b, self.groups, c // self.groups, h, w)
    return (x5 * (1 + ulsam_maps(self, x, folded).unsqueeze(2))).reshape(b, c, h, w)


def in_chunks(spelling, size):
    """`spelling` per batch chunk of `size` images, concatenated (Split, the chunks' ops, Concat)."""
    return lambda self, x: torch.cat([spelling(self, chunk) for chunk in x.split(size)])


def export(model, spelling, x, path: Path, module=ZAM, attribute='_forward_onnx') -> Path:
    kept = getattr(module, attribute)
    setattr(module, attribute, spelling)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter('ignore')
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=18)
    finally:
        setattr(module, attribute, kept)
    return path


def spellings_of(model: str, chunks) -> tuple:
    """(module class, the patched attribute, {label: spelling})."""
    if model == 'mobilenet_ulsam':
        return ULSAM, '_refine_onnx', {'NCHWc (kept)': ULSAM_NCHWC, 'plain formula': ulsam_plain,
                                       'x * (1 + A)': ulsam_one_plus}
    spellings = {'NCHWc (kept)': NCHWC, 'plain formula': plain_formula, 'channels-last': channels_last,
                 'channels-last throughout': channels_last_throughout}
    for size in chunks:
        spellings[f'plain formula, chunks of {size}'] = in_chunks(plain_formula, size)
        spellings[f'NCHWc, chunks of {size}'] = in_chunks(NCHWC, size)
    return ZAM, '_forward_onnx', spellings


def calibrated(name: str) -> torch.nn.Module:
    """The model with the BatchNorm statistics of random inputs, as `zamzoo bench export` checks its exports."""
    return calibrate_batchnorm(timm.create_model(name), (3, 32, 32))


def seconds(session, x, calls: int) -> float:
    feed = {session.get_inputs()[0].name: x}
    start = time.process_time()
    for _ in range(calls):
        session.run(None, feed)
    return (time.process_time() - start) / calls


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', choices=['mobilenet_zam', 'mobilenet_ulsam'], default='mobilenet_zam')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--rounds', type=int, default=7)
    p.add_argument('--chunks', type=int, nargs='*', default=[], help='batch chunk sizes to try (ZAM)')
    args = p.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32)
    plain, model = calibrated('mobilenet_plain'), calibrated(args.model)
    module, attribute, spellings = spellings_of(args.model, args.chunks)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        paths = {'plain': export(plain, NCHWC, x, Path(tmp) / 'plain.onnx')}
        paths.update({k: export(model, f, x, Path(tmp) / f'{i}.onnx', module, attribute)
                      for i, (k, f) in enumerate(spellings.items())})
        sessions = {k: ort.InferenceSession(str(v), options, providers=['CPUExecutionProvider'])
                    for k, v in paths.items()}
        expected = model(x).numpy()
        for k in spellings:
            got = sessions[k].run(None, {sessions[k].get_inputs()[0].name: x.numpy()})[0]
            error = abs(got - expected).max() / abs(expected).max()
            print(f'{k}: max |ONNX Runtime - eager PyTorch| / max |eager PyTorch| = {error:.3g}')
    calls = 20 if args.batch == 1 else 1
    times = {k: [] for k in sessions}
    for k, s in sessions.items():  # warm-up
        seconds(s, x.numpy(), calls)
    order = list(sessions)
    for r in range(args.rounds):  # interleaved, the order rotating, as `zamzoo bench models` times
        for k in order[r % len(order):] + order[:r % len(order)]:
            times[k].append(seconds(sessions[k], x.numpy(), calls))
    for k in spellings:
        ratio = ratio_of_rounds(times[k], times['plain'])
        print(f"{args.model} {k:32s} {ratio['median']:.3f}x mobilenet_plain (interquartile range "
              f"{ratio['iqr'][0]:.3f}-{ratio['iqr'][1]:.3f})")


if __name__ == '__main__':
    main()
