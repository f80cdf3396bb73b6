"""`zamzoo bench models`: cost of every model against its plain backbone, measured in the same run.

For each model: parameters, MACs (torch's FlopCounterMode) and FLOPs under the ZAM seed's thop convention
(:mod:`zamzoo.bench.flops`), and latency of inference at batch 1 and 64 (and of one SGD training step,
by default on CUDA only), always next to ``<backbone>_plain`` built in the same process.

Timing: every (model, setting) is warmed up, then measured ``repeats`` times; the rounds are interleaved
(round r times the plain backbone and each variant one after the other, the order rotating from round to
round) so that a drift of the machine (other processes, clocks, heat) touches them alike. One measurement is
the mean over enough back-to-back calls to last ``min_time`` seconds. Reported: the median over rounds of
each, and the overhead ``ratio`` = median over rounds of (variant time / plain time of the same round).

``runtime='onnxruntime'`` (CPU) also times every model exported to ONNX (timm's ``onnx_export``, the dynamo
exporter, dynamic batch; checked against PyTorch before it is timed) under ONNX Runtime, with ``threads`` intra-op
threads: each batch size's rounds interleave the PyTorch and the ONNX Runtime calls of the whole group, and the ONNX
Runtime ratio is against the plain backbone under ONNX Runtime (settings ``onnxruntime_infer_b<B>``).
``runtime='compile'`` likewise times every model through ``torch.compile`` (inductor, default mode, static shapes,
the whole forward as one graph; checked against eager PyTorch on the timed batch before it is timed), against the
plain backbone compiled alike (settings ``compile_infer_b<B>``).
"""
import contextlib
import fnmatch
import functools
import logging
import math
import os
import statistics
import tempfile
from collections import Counter
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .. import provenance
from .._io import write_json_atomic, write_text_atomic
from ..errors import UsageError, ZamzooError
from ..models import ZOO
from .calibration import calibrate_batchnorm
from .flops import count_macs, count_params, seed_flops
from .onnx import RTOL

SCHEMA = 1
KIND = 'zamzoo-bench-models'

INFER_BATCHES = (1, 64)
# the timing defaults per device type: interleaved rounds, warm-up calls, seconds of back-to-back calls per round
TIMING_DEFAULTS = {'cpu': dict(repeats=3, warmup=1, min_time=0.2), 'cuda': dict(repeats=10, warmup=10, min_time=0.5)}
TIMERS = {'wall': time.perf_counter, 'process': time.process_time}
TRAIN_BATCH = 128
RUNTIMES = ('torch', 'onnxruntime', 'compile')
ATOL = 1e-5  # a compiled model against eager PyTorch: onnx.RTOL (the checked export's), and this near zero


def plain_of(model_name: str) -> str:
    """'resnet18_zam_avg' -> 'resnet18_plain', from the zoo table."""
    return ZOO[model_name].baseline


def select_models(patterns: Optional[Sequence[str]] = None) -> List[str]:
    """Our registered model names matching any of the fnmatch patterns (default: all), sorted. Refuses a pattern
    that matches no model, or that names (no wildcard) a model of an attention entry point that failed to register;
    a wildcard that would have matched such models warns (on the 'zamzoo' logger) and goes on without them."""
    import zamzoo
    from ..models.plugins import unregistered_models

    patterns = list(patterns or ['*'])
    names = zamzoo.list_models()
    for p in patterns:
        missing = unregistered_models(p)
        if missing and not any(c in p for c in '*?['):
            raise UsageError(f'--models {p!r}: {missing}; fix the plugin or leave it out')
        if missing:
            logging.getLogger('zamzoo').warning('--models %r: %s; going on without them', p, missing)
        if not any(fnmatch.fnmatchcase(n, p) for n in names):
            raise UsageError(f'--models: no zamzoo model matches {p!r}; see `zamzoo list` (e.g. resnet18_zam, '
                             f'mobilenet_*)')
    return sorted({n for n in names for p in patterns if fnmatch.fnmatchcase(n, p)})


def progress_printer(quiet: bool = False) -> Callable[[str], None]:
    """Progress lines to stderr (nothing with `quiet`)."""
    return (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


def device_description(device: torch.device) -> Dict:
    """What the numbers were measured on (and how busy the machine was)."""
    desc = {'type': device.type, 'name': provenance.device_description(device), 'threads': torch.get_num_threads(),
            'cpu_count': os.cpu_count()}
    load = load_average()
    if load is not None:
        desc['load_avg'] = load
    return desc


def load_average() -> Optional[List[float]]:
    """The 1, 5 and 15 minute load averages, rounded to 2 places; None where the OS keeps none."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, 'getloadavg') else None


def _sync(device: torch.device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class _Runner:
    """One model's timed call for one setting (inference at a batch size, or a training step)."""

    def __init__(self, name: str, model, batch: int, input_size, device, train: bool, clock=time.perf_counter):
        self.name, self.model, self.device, self.train, self.clock = name, model, device, train, clock
        self.x = torch.randn(batch, *input_size, device=device)
        if train:
            num_classes = model.get_classifier().out_features if hasattr(model, 'get_classifier') else 1000
            self.y = torch.randint(0, max(int(num_classes), 1), (batch,), device=device)
            self.opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        self.iters = 1

    def call(self):
        if self.train:
            self.model.train()
            loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        else:
            self.model.eval()
            with torch.inference_mode():
                return self.model(self.x)

    def warmup(self, n: int, min_time: float):
        """`n` untimed calls; then, with `min_time`, one more that sizes each measurement (`iters` calls lasting
        about `min_time` seconds)."""
        for _ in range(n):
            self.call()
        self.iters = max(1, math.ceil(min_time / max(self._time(1), 1e-9))) if min_time > 0 else 1

    def _time(self, iters: int) -> float:
        _sync(self.device)
        start = self.clock()
        for _ in range(iters):
            self.call()
        _sync(self.device)
        return (self.clock() - start) / iters

    def measure(self) -> float:
        return self._time(self.iters)


class _CompiledRunner(_Runner):
    """One model's inference at a batch size through torch.compile (the whole forward as one graph: a graph break is an
    error), refused unless the compiled model's output on the timed batch matches eager PyTorch's."""

    def __init__(self, name: str, model, batch: int, input_size, device, clock=time.perf_counter):
        super().__init__(name, torch.compile(model, fullgraph=True, dynamic=False), batch, input_size, device, False,
                         clock)
        self.eager = model

    def warmup(self, n: int, min_time: float):
        try:
            got = self.call()
        except Exception as e:  # no C++ compiler, an op inductor cannot compile: Dynamo's and inductor's own errors
            raise ZamzooError(f'{self.name}: torch.compile failed: {str(e).strip().splitlines()[0]}') from e
        with torch.inference_mode():
            expected = self.eager(self.x)
        if not torch.allclose(got, expected, rtol=RTOL, atol=ATOL):
            raise ZamzooError(f'{self.name}: torch.compile gives other outputs than eager PyTorch (max difference '
                              f'{(got - expected).abs().max().item():.3g}); not timed')
        super().warmup(n, min_time)


class _OrtRunner(_Runner):
    """One exported model's inference at a batch size under an ONNX Runtime session."""

    def __init__(self, name: str, session, batch: int, input_size, clock=time.perf_counter):
        self.name, self.session, self.device, self.clock = name, session, torch.device('cpu'), clock
        self.feed = {session.get_inputs()[0].name: torch.randn(batch, *input_size).numpy()}
        self.iters = 1

    def call(self):
        self.session.run(None, self.feed)


def onnx_session(model, input_size, threads: Optional[int], folder):
    """`model` exported into `folder` by `zamzoo.bench.onnx.export_onnx` (dynamo exporter, dynamic batch, refused
    unless ONNX Runtime matches eager PyTorch), as an ONNX Runtime CPU session with `threads` intra-op threads."""
    from .onnx import export_onnx
    path = Path(folder) / 'model.onnx'
    export_onnx(model, path, input_size, use_dynamo=True)
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])


@contextlib.contextmanager
def num_threads(threads: Optional[int]):
    """torch's CPU thread count set to `threads` for the block (unchanged when None), then restored."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _phases(train_step: bool, infer_batches: Sequence[int], train_batch: int, runtimes: Sequence[str]):
    """Settings (key, batch, train, runtime), in phases whose rounds are interleaved: one per inference batch size
    (every runtime), then the training step."""
    out = [[(setting_key(b, rt), b, False, rt) for rt in runtimes] for b in infer_batches]
    if train_step:
        out.append([(f'train_b{train_batch}', train_batch, True, 'torch')])
    return out


def setting_key(batch: int, runtime: str = 'torch') -> str:
    """'infer_b64' (eager PyTorch), 'onnxruntime_infer_b64'."""
    return f'infer_b{batch}' if runtime == 'torch' else f'{runtime}_infer_b{batch}'


def bench_models(
        models: Sequence[str],
        device: str = 'cpu',
        repeats: Optional[int] = None,
        warmup: Optional[int] = None,
        min_time: Optional[float] = None,
        infer_batches: Sequence[int] = INFER_BATCHES,
        train_step: Optional[bool] = None,
        train_batch: int = TRAIN_BATCH,
        latency: bool = True,
        input_size: Optional[Sequence[int]] = None,
        threads: Optional[int] = None,
        timer: str = 'wall',
        runtime: str = 'torch',
        progress: Optional[Callable[[str], None]] = None,
) -> Dict:
    """Measure `models` (names) against their plain backbones; returns the JSON-ready report.

    Defaults depend on the device: CPU repeats=3, warmup=1, min_time=0.2 s, no training step; CUDA
    repeats=10, warmup=10, min_time=0.5 s, training step at batch 128. ``latency=False`` counts only.

    ``timer='process'`` (CPU only) times with the CPU time of this process instead of the wall clock: on a machine
    shared with other work, with ``threads=1``, it measures the compute a model needs rather than the share of the
    processor it got (it is not a latency: it ignores waiting, and sums the time of all threads).
    """
    dev = torch.device(device)
    cuda = dev.type == 'cuda'
    defaults = TIMING_DEFAULTS['cuda' if cuda else 'cpu']
    repeats = repeats if repeats is not None else defaults['repeats']
    warmup = warmup if warmup is not None else defaults['warmup']
    min_time = min_time if min_time is not None else defaults['min_time']
    train_step = train_step if train_step is not None else cuda
    _check_options(dev, repeats, timer, threads, runtime)
    check_batch_sizes(infer_batches)
    say = progress or (lambda msg: None)
    if cuda:
        torch.backends.cudnn.benchmark = True
    with num_threads(threads):
        models = list(dict.fromkeys(models))
        start = device_description(dev)
        build = functools.partial(_build, device=dev, input_size=input_size)
        counts = _count(models + [plain_of(m) for m in models], build, say)
        runtimes = ('torch',) if runtime == 'torch' else ('torch', runtime)
        phases = _phases(train_step, infer_batches, train_batch, runtimes) if latency else []
        timings: Dict[str, Dict[str, List[float]]] = {}
        for group in (_timing_groups(models) if phases else ()):
            with _compile_limits(runtime, len(group) * len(infer_batches)):
                _time_group(group, phases, build, runtime, threads, dev, warmup, min_time, repeats, TIMERS[timer],
                            timings, say)
        settings = [setting for phase in phases for setting in phase]
        return {
            'schema': SCHEMA,
            'kind': KIND,
            'created': datetime.now(timezone.utc).isoformat(timespec='seconds'),
            'device': dict(device_description(dev), load_avg_start=start.get('load_avg')),
            'versions': _versions(),
            'code_commit': provenance.code_commit(),
            'settings': {'repeats': repeats, 'warmup': warmup, 'min_time_s': min_time, 'timer': timer,
                         'infer_batches': list(infer_batches) if latency else [],
                         'train_batch': train_batch if train_step and latency else None,
                         'latency': latency, 'dtype': 'float32', 'runtimes': list(runtimes)},
            'results': [_result_row(name, counts, timings, settings) for name in models],
        }


@contextlib.contextmanager
def _compile_limits(runtime: str, graphs: int):
    """With runtime 'compile': a fresh Dynamo cache for one group of models, with room for its `graphs` (models x
    batch sizes). The zoo's models share one forward function, whose compiled graphs Dynamo caps at 8, and past the
    cap a whole-graph compile is an error."""
    if runtime != 'compile':
        yield
        return
    import torch._dynamo
    torch._dynamo.reset()  # the earlier groups' graphs count against the cap too
    with torch._dynamo.config.patch(recompile_limit=max(graphs, 8), accumulated_recompile_limit=max(graphs, 256)):
        yield


def check_batch_sizes(batches: Sequence[int]) -> None:
    """Inference batch sizes must be distinct positive integers: a repeated one would time its setting twice into
    the same samples, an empty batch times nothing."""
    bad = [b for b in batches if isinstance(b, bool) or not isinstance(b, int) or b < 1]
    if bad:
        raise UsageError(f'--batch-sizes: expected positive integers, got {bad[0]!r}')
    repeated = sorted(b for b, n in Counter(batches).items() if n > 1)
    if repeated:
        raise UsageError(f"--batch-sizes: {', '.join(map(str, repeated))} given more than once; expected distinct "
                         f"batch sizes")


def _check_options(dev: torch.device, repeats: int, timer: str, threads: Optional[int], runtime: str):
    cuda = dev.type == 'cuda'
    if cuda and not torch.cuda.is_available():
        raise UsageError('--device cuda asked for, but torch sees no CUDA device here; use --device cpu')
    if repeats < 1:
        raise UsageError(f'repeats must be >= 1, got {repeats}')
    if timer not in TIMERS:
        raise UsageError(f'timer must be one of {sorted(TIMERS)}, got {timer!r}')
    if timer == 'process' and cuda:
        raise UsageError("timer='process' measures CPU time; on CUDA use the wall clock")
    if threads is not None and threads < 1:
        raise UsageError(f'threads must be >= 1, got {threads}')
    if runtime not in RUNTIMES:
        raise UsageError(f'runtime must be one of {list(RUNTIMES)}, got {runtime!r}')
    if runtime == 'onnxruntime' and cuda:
        raise UsageError('--runtime onnxruntime is timed on CPU only; use --device cpu')
    if runtime == 'onnxruntime':
        from .onnx import require_onnx
        require_onnx()  # before the first model is built and counted


def _build(name: str, device: torch.device, input_size: Optional[Sequence[int]], **kwargs):
    """(model on `device`, its input size: `input_size`, else its pretrained cfg's)."""
    import timm
    model = timm.create_model(name, **kwargs).to(device)
    return model, tuple(input_size or model.pretrained_cfg.get('input_size', (3, 32, 32)))


def _count(names: Sequence[str], build, say) -> Dict[str, dict]:
    """Parameters, MACs and seed-convention FLOPs of every model of `names`, once each."""
    counts = {}
    for name in names:
        if name not in counts:
            say(f'counting {name}')
            model, size = build(name)
            counts[name] = {'params': count_params(model), 'macs': count_macs(model, size),
                            'seed_flops': seed_flops(model, size), 'input_size': list(size)}
    return counts


def _timing_groups(models: Sequence[str]) -> List[List[str]]:
    """The models grouped by plain backbone, the plain one first: each group is timed together."""
    groups: Dict[str, List[str]] = {}
    for name in models:
        group = groups.setdefault(plain_of(name), [plain_of(name)])
        if name not in group:
            group.append(name)
    return list(groups.values())


def _time_group(group, phases, build, runtime, threads, dev, warmup, min_time, repeats, clock, timings, say):
    """Time every phase of one group (under ONNX Runtime too, with `runtime='onnxruntime'`) into `timings`. The
    models' BatchNorm statistics are calibrated first, so that the ONNX Runtime and torch.compile checks can fail."""
    built = {name: build(name) for name in group}
    for model, size in built.values():
        calibrate_batchnorm(model, size)
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for name in (group if runtime == 'onnxruntime' else ()):
            say(f'exporting {name} to ONNX')
            Path(tmp, name).mkdir()
            sessions[name] = onnx_session(built[name][0], built[name][1], threads, Path(tmp, name))
        for phase in phases:  # the training step last: it changes the weights
            _time_phase(phase, group, built, sessions, dev, warmup, min_time, repeats, clock, timings, say)


def _result_row(name: str, counts: Dict[str, dict], timings, settings) -> dict:
    """One model's report row: its counts, its plain backbone's, and each setting's latency against it."""
    plain = plain_of(name)
    row = {'model': name, 'backbone': ZOO[name].backbone.name, 'baseline': plain, **counts[name],
           'baseline_params': counts[plain]['params'], 'baseline_macs': counts[plain]['macs'],
           'baseline_seed_flops': counts[plain]['seed_flops'], 'latency': {}}
    for setting, batch, train, rt in settings:
        mine, base = timings[name][setting], timings[plain][setting]
        row['latency'][setting] = {
            'batch': batch, 'train': train, 'runtime': rt,
            'ms': _ms(statistics.median(mine)), 'baseline_ms': _ms(statistics.median(base)),
            'ratio': ratio_of_rounds(mine, base)['median'],
            'samples_ms': [_ms(t) for t in mine], 'baseline_samples_ms': [_ms(t) for t in base],
        }
    return row


def _time_phase(phase, group, built, sessions, dev, warmup, min_time, repeats, clock, timings, say):
    """Warm up every (setting, model) of the phase, then `repeats` rounds over all of them, the order rotating."""
    runners = []
    for setting, batch, train, rt in phase:
        for name in group:
            say(f'warming up {name} {setting}')
            model, size = built[name]
            if rt == 'onnxruntime':
                runner = _OrtRunner(name, sessions[name], batch, size, clock)
            elif rt == 'compile':
                runner = _CompiledRunner(name, model, batch, size, dev, clock)
            else:
                runner = _Runner(name, model, batch, size, dev, train, clock)
            runner.setting = setting
            runner.warmup(warmup, min_time)
            runners.append(runner)
    for r in range(repeats):
        for runner in runners[r % len(runners):] + runners[:r % len(runners)]:
            timings.setdefault(runner.name, {}).setdefault(runner.setting, []).append(runner.measure())
        say(f"{', '.join(s[0] for s in phase)} {group[0]} group, round {r + 1}/{repeats}")


def round_ratios(times: Sequence[float], plain_times: Sequence[float]) -> List[float]:
    """time / plain time of the same round, for each round."""
    return [t / p for t, p in zip(times, plain_times)]


def median_ratio(times: Sequence[float], plain_times: Sequence[float]) -> float:
    """The median over rounds of `round_ratios`, unrounded (what a table rounds once)."""
    return statistics.median(round_ratios(times, plain_times))


def entry_ratio(latency: Dict) -> float:
    """A report's latency entry's `median_ratio`, from its rounds' times: the `ratio` of reports written before it was
    stored to 6 places has 4, which shown to 3 places or 0.1 point were rounded twice (1.047475 -> 1.0475 -> +4.8%)."""
    return median_ratio(latency['samples_ms'], latency['baseline_samples_ms'])


def ratio_of_rounds(times: Sequence[float], plain_times: Sequence[float]) -> Dict[str, object]:
    """{'median': `median_ratio`, 'iqr': [first, third quartile] of the `round_ratios`}, both rounded to 6 places (a
    ratio shown to 3 places is then rounded once but where it lies within 5e-7 of a halfway point); one round gives an
    interquartile range of that ratio alone."""
    ratios = round_ratios(times, plain_times)
    quartiles = statistics.quantiles(ratios, n=4, method='inclusive') if len(ratios) > 1 else ratios * 3
    return {'median': round(statistics.median(ratios), 6), 'iqr': [round(quartiles[0], 6), round(quartiles[2], 6)]}


def interleaved_latency(models: Dict[str, torch.nn.Module], input_size: Sequence[int], batch: int, *,
                        repeats: int = TIMING_DEFAULTS['cpu']['repeats'], timer: str = 'wall',
                        threads: Optional[int] = None) -> Dict[str, List[float]]:
    """CPU inference time (seconds per call) of each model at `batch`, timed as `bench_models` times a group on the
    CPU (same `timer` and `threads`, its CPU warm-up and `min_time`): warm-up, then `repeats` interleaved rounds, the
    order rotating, each round >= `min_time` seconds of calls per model; name -> one time per round."""
    setting, cpu = setting_key(batch), TIMING_DEFAULTS['cpu']
    built = {name: (model, tuple(input_size)) for name, model in models.items()}
    timings: Dict[str, Dict[str, List[float]]] = {}
    with num_threads(threads):
        _time_phase([(setting, batch, False, 'torch')], list(built), built, {}, torch.device('cpu'), cpu['warmup'],
                    cpu['min_time'], repeats, TIMERS[timer], timings, lambda msg: None)
    return {name: timings[name][setting] for name in built}


def _ms(seconds: float) -> float:
    """Milliseconds to the nanosecond: the ratios shown are computed from these (`entry_ratio`)."""
    return round(seconds * 1e3, 6)


def _versions() -> Dict[str, str]:
    import timm
    import zamzoo

    return {'python': sys.version.split()[0], 'torch': torch.__version__, 'timm': timm.__version__,
            'zamzoo': zamzoo.__version__}


# ---------------------------------------------------------------------------------------------------
# Output

def fmt_count(n: Optional[float]) -> str:
    return '-' if n is None else f'{n / 1e6:.2f}M'


def fmt_ratio(r: Optional[float]) -> str:
    return '-' if r is None else f'{r:.3f}x ({(r - 1) * 100:+.1f}%)'


def load_average_text(dev: Dict) -> str:
    if not dev.get('load_avg'):
        return ''
    return f", load average (1/5/15 min) {dev.get('load_avg_start')} at the start, {dev['load_avg']} at the end"


def markdown_report(report: Dict) -> str:
    """The report as a Markdown page: what was measured, on what, and one row per model."""
    dev = report['device']
    s = report['settings']
    settings = list(report['results'][0]['latency'] if report['results'] else {})
    lines = [
        f"# zamzoo bench models ({report['created']})",
        '',
        f"Device: {dev.get('name', dev['type'])}{load_average_text(dev)}.",
        f"torch {report['versions']['torch']}, timm {report['versions']['timm']}, "
        f"zamzoo {report['versions']['zamzoo']}" + (f", commit {report['code_commit'][:12]}"
                                                    if report.get('code_commit') else '') + '.',
    ]
    if s['latency']:
        clock = 'CPU time of the process' if s.get('timer') == 'process' else 'wall-clock latency'
        lines.append(f"Timing: {clock}, median of {s['repeats']} interleaved rounds ({s['warmup']} warm-up "
                     f"call{'s' if s['warmup'] != 1 else ''} and one that sizes the rounds, each round >= "
                     f"{s['min_time_s']} s of calls), {s['dtype']}; ratio = median over rounds of "
                     f"model time / plain-backbone time of the same round.")
    head = ['model', 'params', 'MACs (torch)', 'FLOPs (seed conv.)']
    head += [c for k in settings for c in (f'{k} ms', f'{k} vs plain')]
    lines += ['', '| ' + ' | '.join(head) + ' |', '|---|' + '---:|' * (len(head) - 1)]
    for row in report['results']:
        cells = [row['model'], f"{row['params']:,}", fmt_count(row['macs']), fmt_count(row['seed_flops'])]
        for k in settings:
            lat = row['latency'][k]
            cells += [f"{lat['ms']:.2f}", fmt_ratio(entry_ratio(lat))]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def check_report_name(name: Optional[str]) -> None:
    """--name: a file name without folder (that is --out) or suffix (.json and .md are added), or None."""
    if name is not None and (not name or Path(name).name != name or '.' in name):
        raise UsageError(f'--name: expected a file name without a folder (the folder is --out) or a suffix, '
                         f'got {name!r}')


def report_stem(report: Dict, name: Optional[str] = None) -> str:
    """The report's file name without suffix: `name`, else ``models_<device>[_process]`` (``models_counts`` without
    timing)."""
    if name:
        check_report_name(name)
        return name
    s = report['settings']
    timer = '' if s.get('timer', 'wall') == 'wall' else f"_{s['timer']}"
    return f"models_{report['device']['type']}{timer}" if s['latency'] else 'models_counts'


def write_report(report: Dict, out_dir, name: Optional[str] = None) -> Dict[str, Path]:
    """Write `report_stem(report, name)` .json and .md into out_dir, atomically; returns the paths."""
    return write_json_and_markdown(report, markdown_report(report), Path(out_dir) / report_stem(report, name))


def write_json_and_markdown(report: Dict, markdown: str, stem: Path) -> Dict[str, Path]:
    """Write `stem`.json and `stem`.md, atomically; returns the paths."""
    paths = {'json': stem.with_suffix('.json'), 'md': stem.with_suffix('.md')}
    write_json_atomic(paths['json'], report)
    write_text_atomic(paths['md'], markdown)
    return paths
