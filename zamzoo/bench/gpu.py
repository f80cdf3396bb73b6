"""`zamzoo bench gpu`: the GPU training measurements of one machine, in one call, written as it goes.

Three parts, each figure with the command that reproduces it alone:

- **train**: `zamzoo bench train` (zamzoo.train.bench, our loop only) for every model x mode: eager, the whole
  step replayed as one CUDA graph (`cuda-graph`: `zamzoo train --cuda-graph`), and torch.compile's default,
  `reduce-overhead` (CUDA graphs of the forward and backward) and `max-autotune-no-cudagraphs` modes.
- **profile**: torch.profiler over one training step of ResNet-18 after warm-up: the top kernels by device time,
  and the share of the step's wall time the GPU waits on the host (`gpu_wait_share`).
- **zoo**: `zamzoo zoo run` with K runs sharing one GPU, on CIFAR-100-format data this command writes itself;
  the aggregate is read from the runs' own metrics after their first epoch (start-up excluded), over the window
  from the first run's second epoch to the last run's last epoch (a lower bound: the runs' start-up is staggered),
  next to the sum of each run's own rate (an upper bound, reached only if the runs overlapped fully).

Cheap and important first (eager, cuda-graph, profile, zoo), then the compile modes; a measurement that would
start after `budget_s` is recorded as skipped. The JSON and Markdown are rewritten after every measurement, so a
call killed by a time limit still leaves what it measured.
"""
import os
import pickle
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .. import provenance
from .._io import read_json_object
from .._paths import check_writable
from ..errors import UsageError
from ..models import BACKBONES
from ..sweep_files import LOGS_DIR, MPS_CONTROL_LOG, MPS_LOGS, SWEEP_DIR
from ..train.bench import DEFAULT_BATCH, SYNTHETIC_CLASSES
from ..train.run_files import METRICS_FILE
from .tables import DEFAULT_RESULTS

# one ZAM model per backbone (the zoo's cost needs every backbone's images/s); resnet34, which issue 20 does not
# name, last: a budget cut leaves it out first
DEFAULT_MODELS = tuple(sorted((f'{b}_zam' for b in BACKBONES), key=lambda name: name == 'resnet34_zam'))
MODES = ('eager', 'cuda-graph', 'default', 'reduce-overhead', 'max-autotune-no-cudagraphs')
CHEAP_MODES = ('eager', 'cuda-graph')  # no compilation: measured for every model before the profile and the zoo
CUDA_ONLY_MODES = {'cuda-graph': 'CUDA graphs need a CUDA device', 'reduce-overhead': 'CUDA graphs need a CUDA device',
                   'max-autotune-no-cudagraphs': "autotunes inductor's GPU (Triton) kernels: needs a CUDA device"}
DEFAULT_RUNS_PER_GPU = (1, 2, 4, 8)
STOP_GRACE_S = 10.0  # for an interrupted `zoo run` to stop its runs and quit its MPS daemon, twice at most
PROFILE_MODEL = 'resnet18_zam'
TOP_KERNELS = 15
GPU_WAIT_DEFINITION = (
    "1 - (time at least one kernel, memcpy or memset runs on the GPU) / (wall time of the step), both from the "
    "profiler's events: the step is a record_function range around one call of the training loop's "
    "train_one_epoch over one batch, ending with the loss's host sync; the GPU's activity is the union of the "
    "intervals of its device events inside that range")
ZOO_WINDOW_DEFINITION = (
    "the training images of the K runs' epochs after the first / the window from the earliest start of such an "
    "epoch's training pass to the latest end of one (metrics.jsonl: train_end_unix - train_time_s .. "
    "train_end_unix): process start-up, data to the GPU and the first epoch's warm-up are left out; evaluation "
    "between epochs and any time a run was still starting or already done are inside the window, so it is a lower "
    "bound. overlap: the share of the window in which every run was past its first epoch and not yet done. The "
    "sum of each run's own rate (its images / its training seconds after its first epoch) is an upper bound: the "
    "runs need not have trained at the same time")


@dataclass
class GpuBenchSettings:
    models: Sequence[str] = DEFAULT_MODELS
    modes: Sequence[str] = MODES
    runs_per_gpu: Sequence[int] = DEFAULT_RUNS_PER_GPU
    batch_size: int = DEFAULT_BATCH
    steps: int = 100             # timed steps of each `bench train` measurement
    warmup_steps: int = 20       # untimed steps before them (compilation, cuDNN autotuning)
    epochs: int = 4              # of each `zoo run` run; the first is excluded from the aggregate
    zoo_images: int = 50_000     # training images of the written data set (an epoch of each zoo run; CIFAR's):
    # epochs of a few seconds, so that the runs' staggered start-up (seconds) leaves them training together
    zoo_cuda_graph: bool = False  # the zoo runs with --cuda-graph
    zoo_mps: bool = False         # ... and with --mps (CUDA MPS: the runs' kernels side by side)
    profile: bool = True
    device: Optional[str] = None
    budget_s: float = 330.0      # then `bench gpu` ends within about 7 minutes (scripts/gpu_bench.sh passes less)
    out: str = str(DEFAULT_RESULTS)

    def validate(self):
        from ..models import list_models
        for m in self.models:
            if m not in list_models():
                raise UsageError(f"--models: unknown zamzoo model '{m}' (see `zamzoo list`)")
        for mode in self.modes:
            if mode not in MODES:
                raise UsageError(f"--modes: unknown mode '{mode}'; expected some of {list(MODES)}")
        if self.epochs < 2:
            raise UsageError(f'--epochs: at least 2 (the first is excluded from the aggregate), got {self.epochs}')
        if self.zoo_images < self.batch_size:
            raise UsageError(f'--zoo-images ({self.zoo_images}) must be at least one batch ({self.batch_size})')
        return self


# ------------------------------------------------------------------------------------------------ train


def train_command(model: str, mode: str, s: GpuBenchSettings, device: str) -> str:
    cmd = (f'zamzoo bench train --model {model} --device {device} --batch-size {s.batch_size} '
           f'--images {s.steps * s.batch_size} --warmup-steps {s.warmup_steps} --no-reference')
    if mode == 'eager':
        return cmd
    return f'{cmd} --cuda-graph' if mode == 'cuda-graph' else f'{cmd} --compile --compile-mode {mode}'


def measure_train(model: str, mode: str, s: GpuBenchSettings, device) -> dict:
    """One `bench train` measurement (our loop); a CUDA-only mode on another device is skipped with its reason,
    a failure (compile error, out of memory) is recorded as the error's last line."""
    import torch
    from ..train.bench import bench_train

    cell = {'model': model, 'mode': mode, 'command': train_command(model, mode, s, device.type)}
    if device.type != 'cuda' and mode in CUDA_ONLY_MODES:
        return {**cell, 'skipped': CUDA_ONLY_MODES[mode]}
    torch._dynamo.reset()  # each compiled model starts from a clean cache (no recompile limit carried over)
    try:
        r = bench_train(model, device=str(device), batch_size=s.batch_size, images=s.steps * s.batch_size,
                        compile=mode not in CHEAP_MODES,
                        compile_mode=None if mode in (*CHEAP_MODES, 'default') else mode,
                        reference=False, warmup_steps=s.warmup_steps, cuda_graph=mode == 'cuda-graph')
    except Exception as e:  # noqa: BLE001 -- one failing mode must not lose the other measurements
        return {**cell, 'error': _last_line(e)}
    finally:
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    o = r['ours']
    return {**cell, 'images_per_s': o['images_per_s'], 'epoch_s': o['epoch_s'], 'warmup_s': o['warmup_s'],
            'steps': o['steps'], 'amp': o['amp'], 'channels_last': o['channels_last'], 'loss': o['loss']}


def _last_line(error: BaseException) -> str:
    lines = [line for line in f'{type(error).__name__}: {error}'.splitlines() if line.strip()]
    return lines[-1][:500]


# ------------------------------------------------------------------------------------------------ profile


def gpu_wait_share(step: tuple, busy: Sequence[tuple]) -> float:
    """The share of the interval `step` (start, end) covered by none of the intervals `busy` (clipped to it)."""
    start, end = step
    if end <= start:
        raise ValueError(f'empty step interval {step}')
    covered, reach = 0.0, start
    for a, b in sorted((max(a, start), min(b, end)) for a, b in busy):
        if b <= reach:
            continue
        covered += b - max(a, reach)
        reach = b
    return 1.0 - covered / (end - start)


def profile_step(s: GpuBenchSettings, device) -> dict:
    """torch.profiler over one training step of PROFILE_MODEL (after warm-up steps), summarized."""
    from ..recipes import get_recipe
    return profile_training_steps(PROFILE_MODEL, device=device, batch_size=s.batch_size, recipe=get_recipe('zam'),
                                  warmup_steps=max(1, s.warmup_steps))


def profile_training_steps(model: str, *, device, batch_size: int, recipe, warmup_steps: int, steps: int = 1,
                           amp: str = 'auto', cuda_graph: bool = False, num_classes: int = SYNTHETIC_CLASSES) -> dict:
    """torch.profiler over `steps` training steps of `model` in our loop (one pass of train_one_epoch, ending with
    its host sync) after `warmup_steps` untimed ones (with `cuda_graph`, at least 4: the step is captured on the
    4th): the wall ms of a step and, on CUDA, the GPU's busy share of the steps and the top device work (or, on a
    CPU, operators), summed over the `steps` steps."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function
    from ..train.bench import synthetic_cifar, ours_trainer

    mk, run_epoch, _ = ours_trainer(model, device=device, batch_size=batch_size, recipe=recipe, amp=amp,
                                    compile=False, compile_mode=None, num_classes=num_classes,
                                    steps_per_epoch=warmup_steps + steps, cuda_graph=cuda_graph)
    images, targets = synthetic_cifar((warmup_steps + steps) * batch_size, num_classes)
    n = warmup_steps * batch_size
    warm, timed = mk(images[:n], targets[:n]), mk(images[n:], targets[n:])
    float(run_epoch(warm)['loss_sum'])
    cuda = device.type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        with record_function('zamzoo.step'):
            float(run_epoch(timed)['loss_sum'])  # the host sync every epoch of the loop ends with
            if cuda:
                torch.cuda.synchronize(device)
    events = prof.events()
    span = next(e.time_range for e in events if e.name == 'zamzoo.step' and e.device_type == DeviceType.CPU)
    step_us = (span.end - span.start) / steps
    summary = {'model': model, 'batch_size': batch_size, 'warmup_steps': warmup_steps, 'steps': steps,
               'cuda_graph': cuda_graph and cuda, 'step_ms': step_us / 1e3}
    if not cuda:
        ops = [e for e in prof.key_averages() if e.key != 'zamzoo.step']
        top = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:TOP_KERNELS]
        return {**summary, 'top': [{'name': e.key, 'calls': e.count, 'self_ms': e.self_cpu_time_total / 1e3}
                                   for e in top], 'top_by': 'self CPU time of operators (no GPU)',
                'gpu_wait_share': None, 'gpu_wait_skipped': 'no GPU: the device timeline exists only on CUDA'}
    # the device's own work: kernels, memcpy, memset (not the record_function ranges mirrored onto its timeline)
    work = [e for e in events if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
    wait = gpu_wait_share((span.start, span.end), [(e.time_range.start, e.time_range.end) for e in work])
    return {**summary, 'top_by': 'device time of GPU kernels, memcpy and memset', 'top': _top_device_work(work),
            'device_events': len(work), 'device_busy_ms': (1 - wait) * step_us / 1e3, 'gpu_wait_share': wait}


def _top_device_work(work) -> List[dict]:
    totals: Dict[str, list] = {}
    for e in work:
        t = totals.setdefault(e.name, [0, 0.0])
        t[0] += 1
        t[1] += e.time_range.end - e.time_range.start
    top = sorted(totals.items(), key=lambda kv: kv[1][1], reverse=True)[:TOP_KERNELS]
    return [{'name': name, 'calls': calls, 'self_ms': us / 1e3} for name, (calls, us) in top]


# ------------------------------------------------------------------------------------------------ zoo run


def write_synthetic_cifar100(root, n_train: int, n_test: int, seed: int = 0) -> Path:
    """`root`/cifar-100-python/{train,test,meta} in the official archive's format: random images and labels."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / 'cifar-100-python'
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (('train', n_train), ('test', n_test)):
        labels = [int(v) for v in rng.integers(0, 100, n)]
        part = {'filenames': [f'{name}_{i}.png' for i in range(n)], 'batch_label': name, 'fine_labels': labels,
                'coarse_labels': [v % 20 for v in labels], 'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(part, protocol=2))
    meta = {'fine_label_names': [f'class_{i:03d}' for i in range(100)],
            'coarse_label_names': [f'superclass_{i:02d}' for i in range(20)]}
    (folder / 'meta').write_bytes(pickle.dumps(meta, protocol=2))
    return Path(root)


def _one_gpu_environment(device) -> dict:
    """The zoo runs share the first visible GPU only (the figure is per GPU)."""
    env = dict(os.environ)
    if device.type == 'cuda':
        visible = [d.strip() for d in env.get('CUDA_VISIBLE_DEVICES', '0').split(',') if d.strip()]
        env['CUDA_VISIBLE_DEVICES'] = visible[0] if visible else '0'
    return env


def _steady_images_per_s(epochs: List[dict]) -> Optional[float]:
    later = epochs[1:]
    seconds = sum(r['train_time_s'] for r in later)
    return sum(r['train_images'] for r in later) / seconds if seconds else None


def zoo_window(runs: List[List[dict]]) -> dict:
    """The K runs' aggregate over their common window (ZOO_WINDOW_DEFINITION) from their metrics records."""
    spans = [(run[1]['train_end_unix'] - run[1]['train_time_s'], run[-1]['train_end_unix']) for run in runs]
    start, end = min(a for a, _ in spans), max(b for _, b in spans)
    common = min(b for _, b in spans) - max(a for a, _ in spans)
    images = sum(r['train_images'] for run in runs for r in run[1:])
    return {'window_s': end - start, 'window_images_per_s': images / (end - start),
            'overlap': max(0.0, common) / (end - start)}


def _tail(path: Path, lines: int) -> List[str]:
    return path.read_text(errors='replace').splitlines()[-lines:] if path.exists() else [f'(no {path.name})']


def _run_to_the_end(argv: List[str], env: dict) -> subprocess.CompletedProcess:
    """subprocess.run with its output captured, except when interrupted: then the child (`zoo run`, which got the
    same Ctrl-C or `timeout`'s signal as its process group) gets time to stop its runs and quit its MPS daemon,
    where subprocess.run would kill it at once and leave the daemon running."""
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        try:
            stdout, stderr = child.communicate()
        except BaseException:
            try:
                child.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                child.terminate()  # the signal did not reach it: `zoo run` takes SIGTERM as an interrupt
                try:
                    child.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    child.kill()
            raise
    return subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)


def measure_zoo(k: int, s: GpuBenchSettings, device, data, work) -> dict:
    """`zamzoo zoo run` (a child process: the zoo is a higher layer) of K runs of the first model sharing one GPU
    (K at once on a CPU), and its aggregate from the runs' metrics (`zoo_window`)."""
    from ..train.run_folder import read_metrics

    out = Path(work) / f'zoo-k{k}'
    argv = ['zoo', 'run', '--models', s.models[0], '--seeds', *map(str, range(k)), '--epochs', str(s.epochs),
            '--batch-size', str(s.batch_size), '--runs-per-gpu', str(k), '--device', device.type]
    argv += (['--cuda-graph'] if s.zoo_cuda_graph else []) + (['--mps'] if s.zoo_mps else [])
    cell = {'runs_per_gpu': k, 'model': s.models[0], 'epochs': s.epochs, 'train_images_per_epoch': s.zoo_images,
            'cuda_graph': s.zoo_cuda_graph, 'mps': s.zoo_mps,
            'command': 'zamzoo ' + shlex.join(argv) + f' --data DATA --out zoo-k{k}'}
    argv += ['--data', str(data), '--out', str(out)]
    t0 = time.perf_counter()
    proc = _run_to_the_end([sys.executable, '-m', 'zamzoo', *argv], env=_one_gpu_environment(device))
    wall = time.perf_counter() - t0
    if s.zoo_mps:  # what says whether the runs reached the daemon; the work folder goes with the call
        cell['mps_control_log'] = _tail(out / SWEEP_DIR / LOGS_DIR / MPS_LOGS / MPS_CONTROL_LOG, 8)
    epochs = [read_metrics(f) for f in sorted(out.glob(f'*/{METRICS_FILE}'))]
    per_run = [_steady_images_per_s(e) for e in epochs]
    if proc.returncode != 0 or len(per_run) != k or None in per_run:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return {**cell, 'error': f'exit code {proc.returncode}, {len(per_run)} of {k} runs with metrics: '
                                 f"{' | '.join(tail)} (logs: {out / SWEEP_DIR / LOGS_DIR})"}
    images = sum(r['train_images'] for run in epochs for r in run)
    return {**cell, 'wall_s': wall, 'aggregate_with_startup': images / wall, **zoo_window(epochs),
            'run_steady_images_per_s': per_run, 'sum_of_run_rates': sum(per_run)}


# ------------------------------------------------------------------------------------------------ the whole call


def report_stem(report: dict, out) -> Path:
    name = report['device_name'] if report['device_type'] == 'cuda' else 'cpu'
    return Path(out) / ('gpu_' + re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_'))


def _plan(s: GpuBenchSettings) -> List[tuple]:
    """(part, what) in the order measured: eager and cuda-graph, the profile, the zoo, then the compile modes model
    by model (the first model's every mode before the next model's, so a spent budget still leaves one complete
    comparison)."""
    plan = [('train', (m, mode)) for m in s.models for mode in CHEAP_MODES if mode in s.modes]
    plan += [('profile', None)] if s.profile else []
    plan += [('zoo', k) for k in s.runs_per_gpu]
    return plan + [('train', (m, mode)) for m in s.models for mode in MODES
                   if mode in s.modes and mode not in CHEAP_MODES]


def bench_gpu(s: GpuBenchSettings, command: str, progress: Callable[[str], None] = print) -> dict:
    """Measure everything in `s`, rewriting `<out>/gpu_<device>.json` and `.md` after each measurement."""
    import torch
    from ..layers.fused import triton_zam
    from ..train.distributed import resolve_device
    from .models import write_json_and_markdown

    s.validate()
    check_writable(s.out, '--out')
    device = resolve_device(s.device)
    report = {'benchmark': 'gpu', 'command': command, 'settings': asdict(s), 'device_type': device.type,
              'device_name': torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
              'device': provenance.device_description(device), 'torch': torch.__version__,
              'code_commit': provenance.code_commit(), 'measured': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
              'zam_kernels': triton_zam.kernels_on(device),
              'definitions': {'gpu_wait_share': GPU_WAIT_DEFINITION, 'zoo_window': ZOO_WINDOW_DEFINITION},
              'train': [], 'profile': None, 'zoo': []}
    stem = report_stem(report, s.out)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix='zamzoo-bench-gpu-') as work:
        data = Path(work) / 'data'
        if s.runs_per_gpu:
            write_synthetic_cifar100(data, s.zoo_images, max(s.batch_size, s.zoo_images // 10))
        for part, what in _plan(s):
            if time.perf_counter() - t0 > s.budget_s:
                result = {'skipped': f'time budget of {s.budget_s:.0f} s spent (--budget-s)'}
            elif part == 'train':
                result = measure_train(*what, s, device)
            elif part == 'profile':
                result = profile_step(s, device)
            else:
                result = measure_zoo(what, s, device, data, work)
            _record(report, part, what, result)
            progress(f'{part} {what or PROFILE_MODEL}: {_short(result)}')
            report['wall_s'] = time.perf_counter() - t0
            write_json_and_markdown(report, markdown_report(report), stem)
    report['paths'] = {k: str(stem.with_suffix('.' + k)) for k in ('json', 'md')}
    return report


def _record(report: dict, part: str, what, result: dict):
    if part == 'train':
        report['train'].append({'model': what[0], 'mode': what[1], **result})
    elif part == 'profile':
        report['profile'] = result
    else:
        report['zoo'].append({'runs_per_gpu': what, **result})


def _short(result: dict) -> str:
    for key in ('skipped', 'error'):
        if key in result:
            return f'{key}: {result[key]}'
    for key in ('images_per_s', 'window_images_per_s'):
        if key in result:
            return f'{result[key]:,.0f} images/s'
    wait = result.get('gpu_wait_share')
    return f"step {result['step_ms']:.1f} ms" + (f', GPU waits {wait:.0%} of it' if wait is not None else '')


# ------------------------------------------------------------------------------------------------ Markdown


def _cell(result: Optional[dict], key: str, notes: List[str]) -> str:
    if result is None:
        return '-'
    if key in result:
        return f'{result[key]:,.0f}'
    notes.append(f"{result.get('model', '')} {result.get('mode', '')}: "
                 f"{'skipped, ' + result['skipped'] if 'skipped' in result else 'error: ' + result['error']}")
    return 'skipped' if 'skipped' in result else 'error'


def _train_markdown(report: dict) -> List[str]:
    s, notes = report['settings'], []
    modes = [m for m in MODES if m in s['modes']]
    cells = {(r['model'], r['mode']): r for r in report['train']}
    lines = [f"## Training images/s (`zamzoo bench train`, our loop, batch {s['batch_size']}, {s['steps']} timed "
             f"steps after {s['warmup_steps']} warm-up steps, synthetic CIFAR-shaped data)", '',
             '| model | ' + ' | '.join(modes) + ' |', '|---|' + '---:|' * len(modes)]
    for model in s['models']:
        lines.append(f'| {model} | ' + ' | '.join(_cell(cells.get((model, m)), 'images_per_s', notes)
                                                 for m in modes) + ' |')
    lines += [''] + [f'- {n}' for n in notes] + ['', 'Commands (one per figure):', '']
    return lines + [f"- `{r['command']}`" for r in report['train'] if 'command' in r]


def _profile_markdown(p: dict) -> List[str]:
    lines = [f"## Profile of one {PROFILE_MODEL} training step (batch {p.get('batch_size', '-')})", '']
    if 'skipped' in p or 'error' in p:
        return lines + [f"Not measured: {p.get('skipped') or p.get('error')}"]
    wait = p['gpu_wait_share']
    lines.append(f"Step: {p['step_ms']:.2f} ms wall after {p['warmup_steps']} warm-up steps. GPU waiting on the host: "
                 + (f"{wait:.1%} of the step ({p['device_busy_ms']:.2f} ms busy)." if wait is not None
                    else f"not measured ({p['gpu_wait_skipped']})."))
    lines += ['', f"Top {len(p['top'])} by {p['top_by']}:", '', '| name | calls | ms |', '|---|---:|---:|']
    return lines + [f"| `{t['name'][:90]}` | {t['calls']} | {t['self_ms']:.3f} |" for t in p['top']]


def _zoo_row(z: dict, notes: List[str]) -> str:
    k = z['runs_per_gpu']
    if 'run_steady_images_per_s' not in z:
        notes.append(f"{k} runs per GPU: {z.get('skipped') or z.get('error')}")
        return f"| {k} | {'skipped' if 'skipped' in z else 'error'} | | | | |"
    each = ', '.join(f'{v:,.0f}' for v in z['run_steady_images_per_s'])
    upper = z.get('sum_of_run_rates', z.get('steady_images_per_s'))  # the latter: its name in files before 2026-12
    if 'window_images_per_s' in z:
        window = f"{z['window_images_per_s']:,.0f} ({z['overlap']:.0%} overlap)"
    else:
        window = 'not recorded'
        if not any('not recorded' in n for n in notes):
            notes.append('window not recorded: the runs of this file predate `train_end_unix` in metrics.jsonl, so '
                         'whether they trained at the same time is unknown (the sum of their rates is no aggregate)')
    return f"| {k} | {window} | {upper:,.0f} | {each} | {z['aggregate_with_startup']:,.0f} | {z['wall_s']:.0f} |"


def _zoo_markdown(report: dict) -> List[str]:
    step = 'the step as one CUDA graph (`--cuda-graph`)' if report['settings'].get('zoo_cuda_graph') else 'eager step'
    step += ', under CUDA MPS (`--mps`)' if report['settings'].get('zoo_mps') else ', no MPS (the GPU time-slices)'
    notes = []
    lines = [f'## `zoo run`: runs sharing one GPU ({step}; synthetic CIFAR-100-format data written by the command)', '',
             '| runs per GPU | images/s over the window (lower bound) | sum of the runs\' rates (upper bound) | '
             'each run | with start-up | wall s |', '|---:|---:|---:|---|---:|---:|']
    lines += [_zoo_row(z, notes) for z in report['zoo']]
    notes += [f"{z['runs_per_gpu']} runs per GPU, the MPS control log's last lines: "
              + ' / '.join(f'`{line}`' for line in z['mps_control_log']) for z in report['zoo'] if 'mps_control_log' in z]
    lines += [''] + [f'- {n}' for n in notes] + ['', f"Commands (DATA: {report['settings']['zoo_images']:,} random "
                                                  'training images in CIFAR-100 format, as '
                                                  '`zamzoo.bench.gpu.write_synthetic_cifar100` writes them):', '']
    return lines + [f"- `{z['command']}`" for z in report['zoo'] if 'command' in z]


def markdown_report(report: dict) -> str:
    d = report['definitions']
    lines = [f"# zamzoo bench gpu ({report['measured']})", '', f"Device: {report['device']}; torch {report['torch']}, "
             f"commit {report['code_commit'] or 'unknown'}; {report.get('wall_s', 0):.0f} s in all. ZAM's fused "
             f"path: {report.get('zam_kernels', 'unknown')}.", '',
             f"Command: `{report['command']}`", '', *_train_markdown(report), '']
    if report['profile'] is not None:
        lines += [*_profile_markdown(report['profile']), '', f"GPU waiting on the host: {d['gpu_wait_share']}.", '']
    if report['zoo']:
        lines += [*_zoo_markdown(report), '', f"Window, overlap and bounds: {ZOO_WINDOW_DEFINITION}.", '']
    return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------ for `zoo run`


def measured_train_throughput(folder=None, mode: str = 'eager') -> Optional[dict]:
    """The newest `gpu_*.json` in `folder` (default docs/bench; CUDA only): {'by_model': {model: images/s in `mode`},
    'rates': {backbone: images/s of the slowest model measured on it}, 'path', 'device'}; None when there is none."""
    from ..models import ZOO

    reports = []
    for path in sorted(Path(folder or DEFAULT_RESULTS).glob('gpu_*.json')):
        try:
            r = read_json_object(path, UsageError)
        except UsageError as e:
            raise UsageError(f'{e}: the `zamzoo bench gpu` reports there price the sweep; fix or remove it') from e
        if r.get('device_type') == 'cuda':
            reports.append((str(r.get('measured', '')), str(path), r))
    if not reports:
        return None
    _, path, r = max(reports)
    cells = [c for c in r.get('train') or [] if isinstance(c, dict)]
    by_model = {c['model']: c['images_per_s'] for c in cells
                if c.get('mode') == mode and c.get('model') in ZOO and _is_rate(c.get('images_per_s'))}
    rates = {}
    for model, rate in by_model.items():
        backbone = ZOO[model].backbone.name
        rates[backbone] = min(rate, rates.get(backbone, rate))
    return {'by_model': by_model, 'rates': rates, 'path': path, 'device': r.get('device')}


def _is_rate(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(p):
    from ..train.commands import positive_int

    d = GpuBenchSettings()
    p.add_argument('--models', nargs='+', default=list(d.models), metavar='MODEL',
                   help=f"bench train's models; the first is also the zoo run's (default: {' '.join(d.models)})")
    p.add_argument('--modes', nargs='*', default=list(d.modes), choices=MODES, metavar='MODE',
                   help=f"eager, the step as one CUDA graph and torch.compile's modes: {', '.join(MODES)} "
                        "(default: all; none: no bench train; the CUDA-only ones are skipped on a CPU)")
    p.add_argument('--runs-per-gpu', nargs='*', type=positive_int, default=list(d.runs_per_gpu), metavar='K',
                   help='zoo run with K runs sharing one GPU, for each K (default: 1 2 4 8; none: no zoo run)')
    p.add_argument('--batch-size', type=positive_int, default=d.batch_size)
    p.add_argument('--steps', type=positive_int, default=d.steps,
                   help=f'timed steps of each bench train (default {d.steps})')
    p.add_argument('--warmup-steps', type=positive_int, default=d.warmup_steps,
                   help=f'untimed steps before them and before the profiled step (default {d.warmup_steps})')
    p.add_argument('--epochs', type=positive_int, default=d.epochs,
                   help=f'epochs of each zoo run, >= 2: the first is not counted (default {d.epochs})')
    p.add_argument('--zoo-images', type=positive_int, default=d.zoo_images,
                   help=f'training images of the data set written for the zoo runs (default {d.zoo_images})')
    p.add_argument('--zoo-cuda-graph', action='store_true', help='the zoo runs train with --cuda-graph')
    p.add_argument('--zoo-mps', action='store_true', help='the zoo runs share the GPU under CUDA MPS (--mps)')
    p.add_argument('--no-profile', dest='profile', action='store_false', help='skip the profiled step')
    p.add_argument('--device', default=None, help='cuda or cpu (default: cuda if available)')
    p.add_argument('--budget-s', type=float, default=d.budget_s,
                   help='skip the measurements that would start later than this (default %(default)s s)')
    p.add_argument('--out', default=d.out, help='folder of gpu_<device>.json and .md (default: docs/bench)')
    p.add_argument('--quiet', action='store_true', help='no progress lines')


def run(args) -> int:
    s = GpuBenchSettings(models=args.models, modes=args.modes, runs_per_gpu=args.runs_per_gpu,
                         batch_size=args.batch_size, steps=args.steps, warmup_steps=args.warmup_steps,
                         epochs=args.epochs, zoo_images=args.zoo_images, zoo_cuda_graph=args.zoo_cuda_graph,
                         zoo_mps=args.zoo_mps,
                         profile=args.profile, device=args.device, budget_s=args.budget_s, out=args.out)
    argv = ['--models', *s.models, '--modes', *s.modes, '--runs-per-gpu', *map(str, s.runs_per_gpu),
            '--batch-size', str(s.batch_size), '--steps', str(s.steps), '--warmup-steps', str(s.warmup_steps),
            '--epochs', str(s.epochs), '--zoo-images', str(s.zoo_images), '--budget-s', str(s.budget_s)]
    argv += ([] if s.profile else ['--no-profile']) + (['--device', s.device] if s.device else [])
    argv += (['--zoo-cuda-graph'] if s.zoo_cuda_graph else []) + (['--zoo-mps'] if s.zoo_mps else [])
    report = bench_gpu(s, 'zamzoo bench gpu ' + shlex.join(argv), progress=(lambda line: None) if args.quiet else print)
    print(f"wrote {report['paths']['json']} and {report['paths']['md']}")
    return 0
