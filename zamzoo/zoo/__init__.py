"""The whole zoo in one command: a sweep of `zamzoo train` runs (models x datasets x seeds), on this machine or
on SLURM through submitit, resumable, then exported group by group. Orchestration only: every run is
`zamzoo.train.train` in its own run folder.

    from zamzoo.zoo import plan_sweep, run_sweep, sweep_status, export_sweep
    runs = plan_sweep(['mobilenet_*'], ['cifar100'], [0, 1, 2], data='data/', out='runs')
    run_sweep(runs, 'runs', executor='local', runs_per_gpu=2)
    sweep_status('runs')['totals']
    export_sweep('runs', min_seeds=3)

Modules: plan (runs, folders, actions, cost), state (run and sweep state read from the folders), worker (one run),
local and slurm (executors), sweep (`zoo run`), export (`zoo export`), commands (the CLI).
"""
from .export import export_sweep
from .plan import PlannedRun, plan_sweep
from .state import run_state, sweep_status
from .sweep import run_sweep

__all__ = ['PlannedRun', 'plan_sweep', 'run_sweep', 'run_state', 'sweep_status', 'export_sweep']
