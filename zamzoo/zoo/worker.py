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

from ..train import CHECKPOINT_FILE, RunFolderBusy, TrainConfig, train
from ..train.run_folder import mark_failed, run_status


SKIPPED = ('already done', 'running elsewhere')  # outcomes of a run this process did not train


def outcome_line(out, outcome: str) -> str:
    """What the worker prints when it ends: the executors read it back to know whether it trained the run."""
    return f'{out}: {outcome}'


def run_one(config: TrainConfig, *, job_id: Optional[str] = None, reporter=None, interruptions=()) -> str:
    """Train `config` in its run folder (config.out): 'trained', or why not ('already done', 'running elsewhere').
    An exception marks the run failed and propagates, except `interruptions` (a pre-empted job's)."""
    folder = Path(config.out)
    state = run_status(folder).state  # every rank checks before any of them can take the lock in train()
    if state == 'done':
        return 'already done'
    if state == 'running':
        return 'running elsewhere'
    main = int(os.environ.get('RANK', '0')) == 0
    config = dataclasses.replace(config, resume=(folder / CHECKPOINT_FILE).is_file())
    try:
        train(config, reporter=reporter)
    except RunFolderBusy:
        return 'running elsewhere'
    except interruptions:
        raise
    except Exception as e:
        if main:
            mark_failed(folder, e, job_id)
        raise
    return 'trained'


def main(argv=None) -> int:
    from ..train.reporting import TqdmReporter
    from ..train.distributed import is_main_process

    argv = sys.argv[1:] if argv is None else argv
    config = TrainConfig(**json.loads(argv[0]))
    try:
        outcome = run_one(config, reporter=TqdmReporter() if is_main_process() else None)
    except Exception:
        traceback.print_exc()
        return 1
    print(outcome_line(config.out, outcome), flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
