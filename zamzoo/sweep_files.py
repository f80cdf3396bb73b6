"""The names of what a sweep (`zamzoo zoo run --out OUT`) writes besides its run folders, in one place: the sweep
is run and read by `zamzoo.zoo`, and `zamzoo bench gpu` (a lower layer, which runs `zoo run` as a child process)
reads its logs. This module imports nothing.

    <out>/_zoo/plan.json          every run any `zoo run` planned there                      SWEEP_DIR, PLAN_FILE
    <out>/_zoo/jobs.json          the last SLURM job id of each run                          JOBS_FILE
    <out>/_zoo/last-run.json      what the last `zoo run` did, with its aggregate images/s   LAST_RUN_FILE
    <out>/_zoo/logs/              the local executor's <run>.<time>-<pid>.log per attempt    LOGS_DIR
    <out>/_zoo/logs/mps/          the MPS control daemon's logs (`zoo run --mps`)            MPS_LOGS
    <out>/_zoo/slurm/<job id>/    submitit's job folders: <job id>_<task>_log.{out,err}      SLURM_DIR, SLURM_LOG
"""
SWEEP_DIR = '_zoo'
PLAN_FILE = 'plan.json'
JOBS_FILE = 'jobs.json'
LAST_RUN_FILE = 'last-run.json'
LOGS_DIR = 'logs'
MPS_LOGS = 'mps'
MPS_CONTROL_LOG = 'control.log'  # the name nvidia-cuda-mps-control gives its log in MPS_LOGS, not ours
SLURM_DIR = 'slurm'
SLURM_LOG = '{job_id}_0_log.err'  # task 0's
