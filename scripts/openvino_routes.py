"""The zoo's `mobilenet_*` models in OpenVINO by its two routes, side by side (docs/bench/openvino.md).

Each model (BN statistics of random inputs) is taken to OpenVINO three ways: converted from PyTorch by OpenVINO's
PyTorch frontend (`openvino.convert_model`, which traces the plain formula), read from zamzoo's ONNX export with the
dynamo exporter (what `zamzoo export --onnx` writes: spellings tuned for ONNX Runtime) and from the TorchScript-based
exporter's; each export checked against eager PyTorch first (`export_onnx`). The compiled models (CPU plugin,
float32, latency hint) are timed in one process, in interleaved rounds with the order rotating, each round >= 0.05 s
(batch 1) or 0.4 s of calls per model, CPU time of the process with one thread (wall clock with more), and the
median over rounds of model / `mobilenet_plain` taken the same route is printed. A measurement, not a test: a few
minutes.

    python scripts/openvino_routes.py --batch 1 --threads 1 --rounds 11
    python scripts/openvino_routes.py --batch 64 --threads 1 --rounds 7
    python scripts/openvino_routes.py --batch 64 --profile mobilenet_zam   # OpenVINO's time per node type instead
"""
import argparse
import collections
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import openvino as ov
import timm
import torch

from zamzoo.bench.export import calibrate_batchnorm
from zamzoo.bench.models import ratio_of_rounds
from zamzoo.bench.onnx import export_onnx
from zamzoo.models import ZOO

ROUTES = ('pytorch', 'onnx dynamo', 'onnx torchscript')
PLAIN = 'mobilenet_plain'


def to_openvino(model: torch.nn.Module, route: str, path: Path):
    """`model` as OpenVINO reads it by `route`: an ov.Model, or `path`, where its ONNX export is written (checked)."""
    if route == 'pytorch':
        return ov.convert_model(model, example_input=torch.randn(2, 3, 32, 32), input=[-1, 3, 32, 32])
    export_onnx(model, path, use_dynamo=route == 'onnx dynamo')
    return path


def seconds(request, x: np.ndarray, budget: float, clock) -> float:
    calls, start = 0, clock()
    while clock() - start < budget:
        request.infer({0: x})
        calls += 1
    return (clock() - start) / calls


def print_profile(request, x: np.ndarray, title: str, calls: int = 5) -> None:
    """OpenVINO's own profile (PERF_COUNT) of `calls` inferences after a warm-up: time per node type and kernel."""
    request.infer({0: x})
    spent, nodes = collections.Counter(), collections.Counter()
    for _ in range(calls):
        request.infer({0: x})
        for node in request.profiling_info:
            if node.status == node.Status.EXECUTED:
                key = f'{node.node_type} ({node.exec_type})'
                spent[key] += node.real_time.total_seconds() * 1e3 / calls
                nodes[key] += 1
    total = sum(spent.values())
    print(f'{title}: {total:.2f} ms a call, node time summed')
    for key, ms in spent.most_common(12):
        print(f'  {key:48s} {ms:8.3f} ms {100 * ms / total:5.1f}%  {nodes[key] // calls} nodes')


def compiled(names, config: dict) -> dict:
    """(model name, route) -> an infer request of the model compiled for OpenVINO's CPU plugin with `config`."""
    core, requests = ov.Core(), {}
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            model = calibrate_batchnorm(timm.create_model(name), (3, 32, 32))
            for route in ROUTES:
                source = to_openvino(model, route, Path(folder, f'{name} {route}.onnx'))
                requests[name, route] = core.compile_model(source, 'CPU', config).create_infer_request()
    return requests


def interleaved(requests: dict, x: np.ndarray, rounds: int, budget: float, clock) -> dict:
    """key -> seconds a call in each of `rounds` rounds over all the requests, the order rotating."""
    keys = list(requests)
    for key in keys:
        seconds(requests[key], x, budget / 5, clock)  # warm-up
    times = {key: [] for key in keys}
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            times[key].append(seconds(requests[key], x, budget, clock))
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--threads', type=int, default=1, help="OpenVINO's INFERENCE_NUM_THREADS")
    p.add_argument('--rounds', type=int, default=7)
    p.add_argument('--profile', metavar='MODEL', help='print OpenVINO\'s profile of MODEL and the plain backbone')
    args = p.parse_args()
    warnings.simplefilter('ignore')  # the tracers' warnings on the modules' shape checks
    config = {'INFERENCE_PRECISION_HINT': 'f32', 'INFERENCE_NUM_THREADS': args.threads, 'PERFORMANCE_HINT': 'LATENCY',
              'PERF_COUNT': bool(args.profile)}
    clock = time.process_time if args.threads == 1 else time.perf_counter
    budget = 0.05 if args.batch == 1 else 0.4
    names = sorted(n for n in ZOO if n.startswith('mobilenet_'))
    if args.profile:
        names = list(dict.fromkeys([PLAIN, args.profile]))
    requests = compiled(names, config)
    x = np.random.default_rng(0).standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    if args.profile:
        for (name, route), request in requests.items():
            print_profile(request, x, f'{name} via {route}, batch {args.batch}, {args.threads} thread(s)')
        return
    times = interleaved(requests, x, args.rounds, budget, clock)
    plain_ms = ', '.join(f'{route} {np.median(times[PLAIN, route]) * 1e3:.2f} ms' for route in ROUTES)
    print(f'OpenVINO {ov.__version__.split("-")[0]}, batch {args.batch}, {args.threads} thread(s), {args.rounds} '
          f'rounds; {PLAIN}: {plain_ms}')
    print('| model | ' + ' | '.join(ROUTES) + ' |\n|---|' + '--:|' * len(ROUTES))
    for name in (n for n in names if n != PLAIN):
        ratios = [ratio_of_rounds(times[name, route], times[PLAIN, route])['median'] for route in ROUTES]
        print(f'| `{name}` | ' + ' | '.join(f'{r:.3f}x' for r in ratios) + ' |')


if __name__ == '__main__':
    main()
