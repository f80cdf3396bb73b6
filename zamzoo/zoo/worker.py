"""One run of a sweep, in the process (or each of the processes) that trains it: exactly `zamzoo train`
(`zamzoo.train.train`) on the run folder, resuming from its checkpoint when there is one; a run that raises is
marked failed. Both executors end here: the local one through `python -m zamzoo.zoo.worker CONFIG_JSON` (under
torchrun for several processes), the SLURM one through submitit.

Under torch.distributed every rank calls `run_one`; only rank 0 writes the run folder (train() holds its lock)."""
import dataclasses
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

from .._process import Terminated, end_as_terminated, freeze_imports, sigterm_as_interrupt
from ..train import CHECKPOINT_FILE, RunFolderBusy, TrainConfig, train
from ..train.run_folder import mark_attempt_failed, read_failure, run_status
from .plan import PlannedRun, settings_conflict


REFUSED = 'refused (other settings)'
SKIPPED = ('already done', 'running elsewhere', REFUSED)  # outcomes of a run this process did not train
RUN_LOG_ENV = 'ZAMZOO_RUN_LOG'  # the local executor's log of this attempt, recorded in failed.json on a failure


def outcome_line(out, outcome: str) -> str:
    """What the worker prints when it ends: the executors read it back to know whether it trained the run."""
    return f'{out}: {outcome}'


def run_one(config: TrainConfig, *, job_id: Optional[str] = None, log: Optional[str] = None, reporter=None,
            interruptions=()) -> str:
    """Train `config` in its run folder (config.out): 'trained', or why not ('already done', 'running elsewhere',
    or REFUSED when the run another invocation finished, is training or left to resume there has other settings than
    `config`: the plan checked the folder before that run existed). An exception marks the run failed and
    propagates, except `interruptions` (a pre-empted job's)."""
    folder = Path(config.out)
    state = run_status(folder).state  # every rank checks before any of them can take the lock in train()
    if state == 'done':
        return _left_alone(config, 'already done', 'finished by another invocation')
    if state == 'running':
        return _left_alone(config, 'running elsewhere', 'being trained by another invocation')
    resume = (folder / CHECKPOINT_FILE).is_file()
    if resume and _left_alone(config, 'resumable', 'started by another invocation') == REFUSED:
        return REFUSED  # its folder, its run: not marked failed here
    rank = int(os.environ.get('RANK', '0'))
    config = dataclasses.replace(config, resume=resume)
    before = read_failure(folder)
    try:
        train(config, reporter=reporter, interruptions=interruptions)
    except RunFolderBusy:
        return _left_alone(config, 'running elsewhere', 'being trained by another invocation')
    except interruptions:
        raise
    except Exception as e:
        mark_attempt_failed(folder, e, job_id, log, before, rank)
        raise
    return 'trained'


def _left_alone(config: TrainConfig, outcome: str, how: str) -> str:
    """`outcome`, or REFUSED (the reason on stderr) when the run in config.out has other settings than `config`."""
    recipe = config.resolve_recipe()
    conflict = settings_conflict(PlannedRun(config, recipe.name, recipe.epochs), how)
    if conflict is None:
        return outcome
    print(f'{config.out}: {conflict}; this run is not the planned one (use another --out for these settings)',
          file=sys.stderr, flush=True)
    return REFUSED


def main(argv=None) -> int:
    from ..train.reporting import TqdmReporter
    from ..train.distributed import is_main_process

    argv = sys.argv[1:] if argv is None else argv
    config = TrainConfig(**json.loads(argv[0]))
    try:
        with sigterm_as_interrupt():  # a checkpoint being written when the sweep stops its runs is finished first
            outcome = run_one(config, log=os.environ.get(RUN_LOG_ENV),
                              reporter=TqdmReporter() if is_main_process() else None)
    except Terminated:
        end_as_terminated()
    except Exception:
        traceback.print_exc()
        return 1
    print(outcome_line(config.out, outcome), flush=True)
    return 1 if outcome == REFUSED else 0


if __name__ == '__main__':
    freeze_imports()
    raise SystemExit(main())
