#!/usr/bin/env bash
# Issue 20's GPU measurement in ONE call on a machine with a CUDA GPU (no internet, no CIFAR needed: the zoo part
# writes its own CIFAR-100-format data). Writes gpu_<device>.json and .md to $OUT (default docs/bench/) and is
# done within about 8 minutes: the measurements that would start after --budget-s are recorded as skipped, and
# the files are rewritten after every measurement, so even the outer timeout leaves what was measured.
#   scripts/gpu_bench.sh                      # everything (defaults of `zamzoo bench gpu`)
#   scripts/gpu_bench.sh --modes eager cuda-graph --runs-per-gpu 1 4   # extra options go to `zamzoo bench gpu`
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
timeout --signal=INT --kill-after=20 480 python -m zamzoo bench gpu --device cuda \
    --out "${OUT:-docs/bench}" "$@"
