"""Overhead of the fused attention modules over the plain backbone, next to the overhead of the plain reference
formula (``attn_kwargs=dict(impl='reference')``), measured in the same run.

For every model, three builds are timed together: ``<backbone>_plain``, the model (``impl='fused'``, the default)
and the model with ``impl='reference'``, same weights. Rounds are interleaved with a rotating order (as in
`zamzoo bench models`, whose runner is reused); each ratio is the median over rounds of (variant time / plain time
of the same round). With ``compile=True`` every build is wrapped in ``torch.compile``; there the two
implementations are the same formula (the modules hand it to inductor), so only the fused build is timed.

``clock='thread'`` (with ``threads=1``) counts the CPU time of the timing thread instead of wall time: on a machine
shared with other work, time spent waiting for a core is left out, so the ratios stay stable under load.

    zamzoo bench overhead --models resnet18_zam mobilenet_zamr --setting infer --batch 64
    zamzoo bench overhead --setting train --batch 32 --threads 1 --clock thread
"""
import statistics
import time
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .._argtypes import non_negative_float, non_negative_int, positive_int
from ..errors import UsageError
from ..models import ATTENTIONS, ZOO
from ..layers.fused import triton_zam
from .models import (_build, _check_options, median_ratio, num_threads, _Runner, _versions, device_description,
                     plain_of, progress_printer)

__all__ = ['has_reference_impl', 'attention_overhead', 'overhead_markdown']

KIND = 'zamzoo-bench-overhead'


def has_reference_impl(model_name: str) -> bool:
    """Does the model's attention module take ``impl='fused'|'reference'`` (the zoo table's `fused`)?
    'resnet18_zam' -> True; 'resnet18_cbam', 'resnet18_plain', a name outside the zoo -> False."""
    entry = ZOO.get(model_name)
    return entry is not None and entry.attention.fused


def attention_overhead(
        models: Sequence[str],
        setting: str = 'infer',
        batch: int = 64,
        device: str = 'cpu',
        compile: bool = False,
        repeats: int = 7,
        warmup: int = 2,
        min_time: float = 0.5,
        clock: str = 'wall',
        threads: Optional[int] = None,
        progress: Optional[Callable[[str], None]] = None,
) -> Dict:
    """Time `models` (names with a fused attention, has_reference_impl) against their plain backbone and against their
    reference implementation; `setting` 'infer' (inference mode) or 'train' (one SGD step); `threads` sets
    torch.set_num_threads for the run; `clock` 'wall' or 'thread' (CPU only, with one thread). Returns a JSON-ready
    report whose rows give ms and ratios (median of `repeats` interleaved rounds)."""
    if setting not in ('infer', 'train'):
        raise UsageError(f"setting must be 'infer' or 'train', got {setting!r}")
    if clock not in ('wall', 'thread'):
        raise UsageError(f"clock must be 'wall' or 'thread', got {clock!r}")
    if clock == 'thread' and (threads != 1 or torch.device(device).type != 'cpu'):
        raise UsageError("clock='thread' times the calling thread only: it needs device='cpu' and threads=1")
    bad = [m for m in models if not has_reference_impl(m)]
    if bad:
        fused = [a.name for a in ATTENTIONS.values() if a.fused]
        raise UsageError(f'{bad}: no fused / reference implementations to compare (attention in {fused})')
    dev = torch.device(device)
    _check_options(dev, repeats, 'wall', threads, 'torch')
    say = progress or (lambda msg: None)
    timer = time.thread_time if clock == 'thread' else time.perf_counter
    with num_threads(threads):
        rows = [_time_model(name, setting, batch, dev, compile, repeats, warmup, min_time, timer, say)
                for name in dict.fromkeys(models)]
        return {
            'kind': KIND,
            'created': datetime.now(timezone.utc).isoformat(timespec='seconds'),
            'device': device_description(dev),  # its 'threads': those of the run
            'versions': _versions(),
            'settings': {'setting': setting, 'batch': batch, 'compile': compile, 'repeats': repeats,
                         'warmup': warmup, 'min_time_s': min_time, 'clock': clock, 'dtype': 'float32',
                         'zam_kernels': triton_zam.kernels_on(dev)},
            'results': rows,
        }


def _time_model(name, setting, batch, dev, compile, repeats, warmup, min_time, timer, say) -> Dict:
    """One row: `name` next to its plain backbone (and its reference build), interleaved rounds."""
    variants = {'plain': (plain_of(name), None), 'fused': (name, 'fused')}
    if not compile:
        variants['reference'] = (name, 'reference')
    runners = []
    for key, (model_name, impl) in variants.items():
        torch.manual_seed(0)  # same weights for the fused and the reference build
        model, size = _build(model_name, dev, None, **({'attn_kwargs': dict(impl=impl)} if impl else {}))
        say(f'warming up {model_name} ({key})')
        runner = _Runner(key, torch.compile(model) if compile else model, batch, size, dev, setting == 'train',
                         clock=timer)
        runner.warmup(warmup, min_time)
        runners.append(runner)
    times: Dict[str, List[float]] = {key: [] for key in variants}
    for r in range(repeats):
        for runner in runners[r % len(runners):] + runners[:r % len(runners)]:
            times[runner.name].append(runner.measure())
        say(f'{name} {setting} b{batch}: round {r + 1}/{repeats}')
    return {
        'model': name, 'baseline': plain_of(name),
        'ms': {key: round(statistics.median(t) * 1e3, 3) for key, t in times.items()},
        'ratio': {key: round(median_ratio(times[key], times['plain']), 6) for key in times if key != 'plain'},
        'samples_ms': {key: [round(v * 1e3, 6) for v in t] for key, t in times.items()},  # the ratios shown: to 1 ns
    }


def overhead_markdown(report: Dict) -> str:
    s, dev = report['settings'], report['device']
    mode = 'torch.compile' if s['compile'] else 'eager'
    clock = 'CPU time of the timing thread' if s.get('clock') == 'thread' else 'wall clock'
    lines = [f"{s['setting']} b{s['batch']}, {mode}, {dev['type']} ({dev.get('name', '?')}, {dev['threads']} threads, "
             f"load average {dev.get('load_avg')}); {clock}, median of {s['repeats']} interleaved rounds"
             + (f"; ZAM's kernels: {s['zam_kernels']}" if s.get('zam_kernels') else ''), '',
             '| model | plain ms | fused ms | fused vs plain | reference ms | reference vs plain |',
             '|---|---:|---:|---:|---:|---:|']
    for row in report['results']:  # the ratios from the rounds' times, as `entry_ratio` says why
        ms, samples = row['ms'], row['samples_ms']
        ratio = {key: median_ratio(samples[key], samples['plain']) for key in row['ratio']}
        ref = (f"{ms['reference']:.1f} | {ratio['reference']:.3f}x" if 'reference' in ms else '- | -')
        lines.append(f"| {row['model']} | {ms['plain']:.1f} | {ms['fused']:.1f} | {ratio['fused']:.3f}x | {ref} |")
    return '\n'.join(lines) + '\n'


def add_arguments(p):
    p.add_argument('--models', nargs='+', default=['resnet18_zam', 'mobilenet_zamr'])
    p.add_argument('--setting', default='infer', choices=['infer', 'train'])
    p.add_argument('--batch', type=positive_int, default=64)
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--compile', action='store_true', help='time torch.compile(model) builds')
    p.add_argument('--repeats', type=positive_int, default=7)
    p.add_argument('--warmup', type=non_negative_int, default=2)
    p.add_argument('--min-time', type=non_negative_float, default=0.5)
    p.add_argument('--threads', type=positive_int, default=None, help='torch.set_num_threads for the run')
    p.add_argument('--clock', default='wall', choices=['wall', 'thread'],
                   help="'thread': CPU time of the timing thread (needs --threads 1), robust to other load")
    p.add_argument('--json', metavar='PATH', help='also write the report as JSON')


def run(args) -> int:
    if args.json:  # before the timing
        from .._paths import check_writable
        check_writable(args.json, '--json', folder=False)
    report = attention_overhead(args.models, args.setting, args.batch, args.device, args.compile, args.repeats,
                                args.warmup, args.min_time, args.clock, args.threads,
                                progress=progress_printer())
    if args.json:
        from .._io import write_json_atomic
        write_json_atomic(args.json, report)
    print(overhead_markdown(report))
    return 0
