#!/usr/bin/env bash
# Issue 20's GPU checks and measurement in ONE call on a machine with a CUDA GPU (no internet, no CIFAR needed: the
# zoo part writes its own CIFAR-100-format data), done within 10 minutes. Into $OUT (default docs/bench/):
#   gpu_tests.log                what only a GPU can check (tests/test_cuda.py, the captured step); if ZAM's Triton
#                                kernels fail there, the measurements run with ZAMZOO_TRITON=0 (and say so)
#   gpu_overhead_train.{json,md} `zamzoo bench overhead` on CUDA: one SGD step of the fused modules (ZAM through
#                                Triton) against the plain backbone and the reference formula, and ZAM's eager
#                                PyTorch path (ZAMZOO_TRITON=0) in a second process
#   gpu_bench.log                the overhead benches' progress and errors
#   gpu_<device>.{json,md}       `zamzoo bench gpu`: rewritten after every measurement, so even the outer timeout
#                                leaves what was measured; those that would start after --budget-s are skipped
#   scripts/gpu_bench.sh                      # everything (defaults of `zamzoo bench gpu`)
#   scripts/gpu_bench.sh --modes eager cuda-graph --runs-per-gpu 1 4   # extra options go to `zamzoo bench gpu`
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-docs/bench}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
python3 -c 'import torch, timm, triton; print("torch", torch.__version__, "timm", timm.__version__, "triton",
           triton.__version__, "cuda", torch.cuda.is_available())' || exit 1

timeout --kill-after=10 150 python3 -m pytest -p no:cacheprovider -q -n 0 -o addopts= --timeout 120 \
    tests/test_cuda.py tests/test_step.py::test_captured_step_equals_the_same_step_run_eagerly_on_cuda \
    >"$out/gpu_tests.log" 2>&1
echo "GPU checks: exit $? ($(tail -1 "$out/gpu_tests.log"))"
if grep -q '^FAILED tests/test_cuda.py::test_triton' "$out/gpu_tests.log"; then
    echo "ZAM's Triton kernels failed their checks: measuring with ZAMZOO_TRITON=0"
    export ZAMZOO_TRITON=0
fi

overhead=(--device cuda --setting train --batch 128 --repeats 5 --warmup 3 --min-time 0.3)
timeout --kill-after=10 90 python3 -m zamzoo bench overhead "${overhead[@]}" \
    --models resnet18_zam mobilenet_zam resnet18_simam resnet18_nam --json "$out/gpu_overhead_train.json" \
    >"$out/gpu_overhead_train.md" 2>>"$out/gpu_bench.log"
echo "bench overhead: exit $?"
printf '\n## ZAM without its Triton kernels (ZAMZOO_TRITON=0: the eager PyTorch path), another process\n\n' \
    >>"$out/gpu_overhead_train.md"
ZAMZOO_TRITON=0 timeout --kill-after=10 45 python3 -m zamzoo bench overhead "${overhead[@]}" \
    --models resnet18_zam mobilenet_zam >>"$out/gpu_overhead_train.md" 2>>"$out/gpu_bench.log"
echo "bench overhead, ZAMZOO_TRITON=0: exit $?"
cat "$out/gpu_overhead_train.md"

# the checks and the overhead take about 2 minutes: the measurement's budget keeps the call under 10 minutes
timeout --signal=INT --kill-after=20 "${GPU_BENCH_TIMEOUT_S:-360}" python3 -m zamzoo bench gpu --device cuda \
    --out "$out" --budget-s 270 "$@"
