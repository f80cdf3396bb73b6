"""The local executor: the runs of a sweep on this machine, one `python -m zamzoo.zoo.worker` process per run
(torchrun with G processes for G GPUs per run), at most as many at once as there are slots.

Slots: each group of G visible GPUs (CUDA_VISIBLE_DEVICES of the run) taken K times (`runs_per_gpu`: small CIFAR
models leave most of a large GPU idle); on a machine without GPUs (or with device 'cpu'), K runs at once (K=1:
one after another). Each attempt at a run logs to a file of its own, `<out>/_zoo/logs/<run>.<time>-<pid>.log`;
with `mps`, the runs are clients of an MPS control daemon of their own (`zamzoo.zoo.mps`), whose log goes to
`<out>/_zoo/logs/mps/`.
"""
import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from .._process import sigterm_as_interrupt
from ..dataset_table import DATASETS
from ..errors import UsageError, ZamzooError
from .plan import TRAIN_IMAGES, PlannedRun
from ..train.run_folder import mark_failed
from ..sweep_files import MPS_LOGS
from .state import log_dir, run_state
from .worker import RUN_LOG_ENV, SKIPPED, outcome_line

POLL_S = 0.2
MPS_NEEDS_A_GPU = '--mps: MPS shares a GPU between processes, and no GPU is visible here (or --device cpu)'


def visible_gpus() -> List[str]:
    """This process's GPUs as CUDA_VISIBLE_DEVICES entries (indices or UUIDs)."""
    env = os.environ.get('CUDA_VISIBLE_DEVICES')
    if env is not None:
        return [d.strip() for d in env.split(',') if d.strip()]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


def local_slots(device: Optional[str], gpus_per_run: int, runs_per_gpu: int) -> List[Optional[str]]:
    """CUDA_VISIBLE_DEVICES of each slot (None: a CPU slot)."""
    gpus = [] if device == 'cpu' else visible_gpus()
    if not gpus:
        if device is not None and device.startswith('cuda'):
            raise ZamzooError('--device cuda: no GPU is visible on this machine (CUDA_VISIBLE_DEVICES, drivers)')
        return [None] * runs_per_gpu
    groups = [gpus[i:i + gpus_per_run] for i in range(0, len(gpus) - gpus_per_run + 1, gpus_per_run)]
    if not groups:
        raise ZamzooError(f'--gpus-per-run {gpus_per_run}: only {len(gpus)} GPU(s) visible on this machine')
    return [','.join(group) for _ in range(runs_per_gpu) for group in groups]  # spread over the GPUs first


PROBE_STEPS = 5               # training steps of the probe, after as many warm-up steps
CONTEXT_BYTES = 1 << 30      # per process, beside its tensors: the CUDA context, cuDNN/cuBLAS workspaces
MEMORY_MARGIN = 1.25         # on the probe's peak: the caching allocator's fragmentation, a longer epoch's spread


def runs_that_fit(free_bytes: int, peak_bytes: int, data_bytes: int, cpus: int, gpu_groups: int,
                  busy_share: Optional[float] = None) -> int:
    """Runs per GPU for `auto`: as many as the free memory holds (each run: its probed peak with a margin, its
    data set on the GPU and a CUDA context), at most one per CPU core (each run's process needs a core to keep its
    GPU fed), at most as many as fill the GPU's time (1 / `busy_share`, the share of a step in which one run keeps
    the GPU busy, rounded: processes without MPS take turns on a GPU, so runs beyond that only wait; None under
    MPS, where a busy GPU may still have idle SMs), at least 1."""
    per_run = peak_bytes * MEMORY_MARGIN + data_bytes + CONTEXT_BYTES
    runs = min(int(free_bytes // per_run), cpus // max(1, gpu_groups))
    if busy_share:
        runs = min(runs, round(1 / busy_share))
    return max(1, runs)


def auto_runs_per_gpu(run: PlannedRun, device: Optional[str], gpus_per_run: int, mps: bool = False) -> int:
    """`--runs-per-gpu auto`: 1 without a GPU; else a probe of `run`'s training step on the first GPU (its own
    step: eager or `--cuda-graph`; a `--compile`d run is probed uncompiled): the peak memory against the GPU's free
    memory and, without `mps`, the share of the step in which the GPU is busy (runs_that_fit)."""
    gpus = [] if device == 'cpu' else visible_gpus()
    if not gpus:
        return 1
    import torch
    from ..bench.gpu import profile_training_steps
    from ..recipes import get_recipe

    c = run.config
    recipe = get_recipe(run.recipe)
    batch = (c.batch_size or recipe.batch_size) // gpus_per_run
    free, _ = torch.cuda.mem_get_info(0)
    torch.cuda.reset_peak_memory_stats(0)
    profile = functools.partial(profile_training_steps, c.model, device=torch.device('cuda:0'), batch_size=batch,
                                recipe=recipe, warmup_steps=PROBE_STEPS, steps=PROBE_STEPS, amp=c.amp,
                                num_classes=DATASETS[c.dataset].num_classes or 100)
    try:
        probe = profile(cuda_graph=c.cuda_graph)
    except UsageError:  # the step cannot be captured (fp16's GradScaler): train runs it eagerly, with a warning
        probe = profile(cuda_graph=False)
    peak = torch.cuda.max_memory_allocated(0)
    torch.cuda.empty_cache()
    # no device events (a profiler that cannot see the GPU's work): the memory and the cores decide alone
    busy = 1 - probe['gpu_wait_share'] if probe.get('device_events') else None
    print(f"--runs-per-gpu auto: the probe's peak {peak / 2**30:.2f} GiB of {free / 2**30:.0f} GiB free; "
          + (f'the GPU busy {busy:.0%} of a step' if busy is not None else "the GPU's busy time not seen")
          + ('; under MPS the busy share sets no limit' if mps else ''))
    data_bytes = TRAIN_IMAGES.get(c.dataset, 50_000) * 3 * 32 * 32 * 6 // 5  # uint8 train + test (a sixth)
    return runs_that_fit(free, peak, data_bytes, os.cpu_count() or 1, len(gpus) // gpus_per_run,
                         None if mps else busy)


def worker_command(run: PlannedRun, processes: int) -> List[str]:
    config = json.dumps(run.config.to_dict())
    if processes == 1:
        return [sys.executable, '-m', 'zamzoo.zoo.worker', config]
    return [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(processes),
            '-m', 'zamzoo.zoo.worker', config]


def _environment(slot: Optional[str], threads: int, extra: Optional[dict] = None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED='1', **(extra or {}))
    if slot is not None:
        env['CUDA_VISIBLE_DEVICES'] = slot
    env.setdefault('OMP_NUM_THREADS', str(threads))  # the user's choice wins
    return env


def _last_line(log: Path) -> str:
    """What the log says of the failure. Of torchrun's (a run of several processes): its root cause, a process
    killed by a signal (`exitcode : -9`), else the last exception line its processes wrote before torchrun's own
    (those it ended afterwards are listed too, killed by its SIGTERM). Else the last line that is not a rule of '='
    or '-'."""
    text = log.read_text(errors='replace')
    before, root, cause = text.partition('Root Cause (first observed failure):')
    killed = re.search(r'^\s*exitcode\s*:\s*-(\d+)', cause, re.MULTILINE) if root else None
    if killed:
        return f'a process of the run was killed by {signal_name(int(killed.group(1)))}'
    raised = [line.strip() for line in before.splitlines()
              if re.match(r'[\w.]*(Error|Exception|Interrupt)\b.*:', line) and not line.startswith('torch.distributed')]
    if root and raised:
        return raised[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip().strip('=-')]
    return lines[-1] if lines else '(no output)'


def _skipped(run: PlannedRun, log: Path) -> Optional[str]:
    """The worker's outcome where its `log` says it left the run alone (done, trained by another process, or
    refused: another invocation's with other settings); None where it trained the run."""
    lines = {line.strip() for line in log.read_text(errors='replace').splitlines()}
    return next((outcome for outcome in SKIPPED if outcome_line(run.config.out, outcome) in lines), None)


def _attempt_log(logs: Path, run: PlannedRun) -> Path:
    """This attempt's own log: the worker's outcome line is read back from it, where another invocation on the
    same --out writing to a shared log could run its own output into that line."""
    return logs / f"{run.name}.{datetime.now().strftime('%Y%m%dT%H%M%S.%f')}-{os.getpid()}.log"


def _finish(run: PlannedRun, returncode: int, log: Path) -> dict:
    """The run's state after its process ended (`skipped`: the worker's outcome where it left the run alone). A
    process that failed before it could mark the run itself (an import error, torchrun's own failure) marks it with
    its log's last line; one that left the run to another process (whose folder it is) leaves the run as it was, and
    so does one killed by a signal, which is said (`killed`: the signal, with this attempt's `log`, which says it
    too): this process signals its workers only when it is interrupted itself, and then ends none of them here. The
    run resumes from its checkpoint as an interrupted one does."""
    skipped = _skipped(run, log)
    state = dict(run_state(run.folder, run.epochs), skipped=skipped)
    if returncode > 0 and state['state'] == 'pending' and not skipped:
        mark_failed(run.folder, RuntimeError(f'exit code {returncode}: {_last_line(log)}'), log=str(log))
        state = dict(run_state(run.folder, run.epochs), skipped=skipped)
    elif returncode < 0 and state['state'] != 'done' and not skipped:
        state.update(killed=signal_name(-returncode), log=str(log))
        with open(log, 'a') as f:
            f.write(f"\n{run.name}: the worker was killed by {state['killed']}\n")
    state['returncode'] = returncode
    return state


def signal_name(signum: int) -> str:
    """'signal 9 (SIGKILL: e.g. the out-of-memory killer)': the signal that ended a process, as it is reported."""
    try:
        name = signal.Signals(signum).name
    except ValueError:  # a real-time signal, which has no name of its own
        return f'signal {signum}'
    hint = ': e.g. the out-of-memory killer' if signum == signal.SIGKILL else ''
    return f'signal {signum} ({name}{hint})'


def run_local(runs: Sequence[PlannedRun], out, *, gpus_per_run: int = 1, runs_per_gpu: int = 1,
              device: Optional[str] = None, mps: bool = False, on_event: Callable = lambda *a: None) -> dict:
    """Train `runs`, as many at once as there are slots; run folder name -> final state (run_state's, with the
    process's returncode and whether it skipped the run). `mps`: the runs as clients of an MPS control daemon
    started for them. on_event('start', run, slot) and on_event('end', run, state) report progress."""
    slots = local_slots(device, gpus_per_run, runs_per_gpu)
    threads = max(1, (os.cpu_count() or 1) // (len(slots) * gpus_per_run))
    logs = log_dir(out)
    logs.mkdir(parents=True, exist_ok=True)
    mps_logs = logs / MPS_LOGS if mps else None
    with sigterm_as_interrupt(), _client_environment(slots, threads, mps_logs) as environment:
        return _train_in_slots(runs, slots, gpus_per_run, logs, environment, on_event)


@contextlib.contextmanager
def _client_environment(slots: List[Optional[str]], threads: int, mps_logs: Optional[Path]):
    """Yields slot -> the environment of a run's process there; with `mps_logs`, under an MPS daemon of the slots'
    GPUs (logging into it) that serves the runs while the block runs."""
    if mps_logs is None:
        yield lambda slot: _environment(slot, threads)
        return
    if None in slots:
        raise UsageError(MPS_NEEDS_A_GPU)
    from .mps import client_slot, mps_daemon
    gpus = list(dict.fromkeys(gpu for slot in slots for gpu in slot.split(',')))
    with mps_daemon(gpus, mps_logs) as client:
        yield lambda slot: _environment(client_slot(slot, gpus), threads, client)


def _train_in_slots(runs: Sequence[PlannedRun], slots: List[Optional[str]], gpus_per_run: int, logs: Path,
                    environment: Callable, on_event: Callable) -> dict:
    queue, free, running, final = deque(runs), list(slots), {}, {}
    try:
        while queue or running:
            while queue and free:
                run, slot = queue.popleft(), free.pop(0)
                log = _attempt_log(logs, run)
                env = {**environment(slot), RUN_LOG_ENV: str(log)}
                with open(log, 'x') as f:
                    proc = subprocess.Popen(worker_command(run, gpus_per_run), env=env, stdout=f,
                                            stderr=subprocess.STDOUT)
                running[proc] = (run, slot, log)
                on_event('start', run, slot)
            time.sleep(POLL_S)
            for proc in [p for p in running if p.poll() is not None]:
                run, slot, log = running.pop(proc)
                free.append(slot)
                final[run.name] = _finish(run, proc.returncode, log)
                on_event('end', run, final[run.name])
    finally:  # interrupted (Ctrl-C): the runs stop where they are and resume next time
        for proc in running:
            proc.terminate()
        for proc in running:
            proc.wait()
    return final
