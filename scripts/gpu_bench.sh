#!/usr/bin/env bash
# Issue 20's GPU checks and measurement in ONE call on a machine with a CUDA GPU (no internet, no CIFAR needed: the
# zoo part writes its own CIFAR-100-format data), done within 10 minutes. Into $OUT (default docs/bench/):
#   gpu_tests.log                what only a GPU can check (tests/test_cuda.py, the captured step); unless ZAM's
#                                Triton kernels pass there, the measurements run with ZAMZOO_TRITON=0 (and say so)
#   gpu_overhead_train.{json,md} `zamzoo bench overhead` on CUDA: one SGD step of the fused modules (ZAM through
#                                Triton) against the plain backbone and the reference formula, and ZAM's eager
#                                PyTorch path (ZAMZOO_TRITON=0) in a second process
#   gpu_bench.log                the overhead benches' progress and errors
#   gpu_<device>.{json,md}       `zamzoo bench gpu` without its zoo part: rewritten after every measurement, so
#                                even the outer timeout leaves what was measured; those that would start after
#                                --budget-s are skipped
#   zoo/gpu_<device>.{json,md}   its zoo part alone: `zoo run` with 4, then 8 runs of resnet18_zam sharing the GPU
#                                (3 epochs of 25,000 images each),
#                                each step a CUDA graph, under CUDA MPS (--zoo-mps) where nvidia-cuda-mps-control
#                                is on PATH, else time-sliced (and the file says which)
#   zoo_timesliced/gpu_<device>.*  the same, time-sliced, where the runs under MPS measured nothing and time is left
# It exits 1 at once without a CUDA device, and at the end with 1 when any step failed (or was stopped by its
# timeout), 0 when every step passed.
#   scripts/gpu_bench.sh                      # everything
#   scripts/gpu_bench.sh --modes eager cuda-graph reduce-overhead   # extra options: the first `bench gpu` only
set -uo pipefail
GPU_BENCH_TOTAL_S=${GPU_BENCH_TOTAL_S:-590}  # what the timeouts below add up to at worst
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-docs/bench}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
python3 -c 'import torch, timm, triton; print("torch", torch.__version__, "timm", timm.__version__, "triton",
           triton.__version__, "cuda", torch.cuda.is_available())' || exit 1
python3 -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' || {
    echo "scripts/gpu_bench.sh needs a CUDA device: torch sees none (driver, CUDA_VISIBLE_DEVICES?)"; exit 1; }
failed=()  # the steps that did not exit 0
step() {   # step NAME STATUS: say how a step ended, and remember a failure
    echo "$1: exit $2"
    [ "$2" -eq 0 ] || failed+=("$1")
}
# pytest's summary line says that some test passed: every test skipped (no GPU seen) exits 0 too
passed() { tail -1 "$out/gpu_tests.log" | grep -q ' passed'; }
# the checks need the dev extra's pytest and pytest-xdist: without them pytest's exit would read as failed kernels
python3 -c 'import pytest, xdist' || { echo "scripts/gpu_bench.sh needs the dev extra: pip install -e '.[dev]'"; exit 1; }

# ZAM's Triton kernels first, alone: unless they pass (a failure, an error or the timeout), measure without them
checks=(-p no:cacheprovider -q -n 0 -o addopts= tests/test_cuda.py)
timeout --kill-after=5 80 python3 -m pytest "${checks[@]}" -k triton >"$out/gpu_tests.log" 2>&1
status=$?
passed || [ "$status" -ne 0 ] || status=1
step "GPU checks of the Triton kernels ($(tail -1 "$out/gpu_tests.log"))" "$status"
if [ "$status" -ne 0 ]; then
    echo "ZAM's Triton kernels did not pass their checks: measuring with ZAMZOO_TRITON=0"
    export ZAMZOO_TRITON=0
fi
timeout --kill-after=5 100 python3 -m pytest "${checks[@]}" -k 'not triton' \
    tests/test_step.py::test_captured_step_equals_the_same_step_run_eagerly_on_cuda >>"$out/gpu_tests.log" 2>&1
status=$?
passed || [ "$status" -ne 0 ] || status=1
step "the other GPU checks ($(tail -1 "$out/gpu_tests.log"))" "$status"

overhead=(--device cuda --setting train --batch 128 --repeats 5 --warmup 3 --min-time 0.3)
timeout --kill-after=5 60 python3 -m zamzoo bench overhead "${overhead[@]}" \
    --models resnet18_zam mobilenet_zam resnet18_simam resnet18_nam --json "$out/gpu_overhead_train.json" \
    >"$out/gpu_overhead_train.md" 2>>"$out/gpu_bench.log"
step "bench overhead" $?
printf '\n## ZAM without its Triton kernels (ZAMZOO_TRITON=0: the eager PyTorch path), another process\n\n' \
    >>"$out/gpu_overhead_train.md"
ZAMZOO_TRITON=0 timeout --kill-after=5 30 python3 -m zamzoo bench overhead "${overhead[@]}" \
    --models resnet18_zam mobilenet_zam >>"$out/gpu_overhead_train.md" 2>>"$out/gpu_bench.log"
step "bench overhead, ZAMZOO_TRITON=0" $?
cat "$out/gpu_overhead_train.md"

# the limits: 80 + 100 + 60 + 30 s (+ 5 s each to die) before them, 120 + 10 and 140 + 30 s for them: 590 s at worst;
# a measurement that would start after its --budget-s is skipped, the timeout stops the one running then (the zoo
# part's kill-after leaves `zoo run` the time to stop its runs and quit its MPS daemon)
timeout --signal=INT --kill-after=10 "${GPU_BENCH_TIMEOUT_S:-120}" python3 -m zamzoo bench gpu --device cuda \
    --out "$out" --budget-s 80 --runs-per-gpu "$@"
step "bench gpu" $?
mps=()
if command -v nvidia-cuda-mps-control >/dev/null; then mps=(--zoo-mps); fi
timeout --signal=INT --kill-after=30 "${GPU_ZOO_TIMEOUT_S:-140}" python3 -m zamzoo bench gpu --device cuda \
    --out "$out/zoo" --budget-s 70 --models resnet18_zam --modes --no-profile --runs-per-gpu 4 8 --epochs 3 \
    --zoo-images 25000 --zoo-cuda-graph ${mps[@]+"${mps[@]}"}
step "bench gpu, the zoo part${mps[*]:+ under MPS}" $?
# MPS that measured nothing (no daemon in this container, runs that could not reach it): the same zoo part
# time-sliced, in what is left of the 590 s (a fast failure leaves most of the zoo part's 170 s)
if [ ${#mps[@]} -gt 0 ] && ! python3 -c 'import json, sys, glob
sys.exit(not any("window_images_per_s" in z for f in glob.glob(sys.argv[1] + "/gpu_*.json")
                 for z in json.load(open(f))["zoo"]))' "$out/zoo"; then
    left=$((GPU_BENCH_TOTAL_S - SECONDS - 30))
    if [ "$left" -ge 60 ]; then
        timeout --signal=INT --kill-after=30 "$left" python3 -m zamzoo bench gpu --device cuda \
            --out "$out/zoo_timesliced" --budget-s $((left / 2)) --models resnet18_zam --modes --no-profile \
            --runs-per-gpu 4 8 --epochs 3 --zoo-images 25000 --zoo-cuda-graph
        step "bench gpu, the zoo part time-sliced (MPS measured nothing)" $?
    fi
fi
if [ ${#failed[@]} -gt 0 ]; then
    printf 'failed: %s\n' "${failed[@]}"
    exit 1
fi
echo "every step passed"
