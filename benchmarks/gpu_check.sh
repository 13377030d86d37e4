#!/usr/bin/env bash
# The CUDA check: on a machine with an NVIDIA GPU, run the differentiable-op and solver tests on the
# cuda arch, then the benchmark suite and the karman benchmark on cuda (side by side with plain PyTorch
# eager and torch.compile on the same GPU, PhiFlow when installed), and, with two or more GPUs, the
# torchrun + NCCL test. Everything is written to benchmarks/results/ (JSON, logs, a summary).
#
#   bash benchmarks/gpu_check.sh               # full check
#   GPU_CHECK_QUICK=1 bash benchmarks/gpu_check.sh   # small grids only (a few minutes)
#
# Needs: a CUDA build of torch, taichi_dp importable (pip install -e ".[test]", or PYTHONPATH).
# Exit status: non-zero when a test failed or a stage could not run; every stage runs regardless.
set -uo pipefail   # pipefail: a stage's status is its command's, not tee's
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DAY=$(date -u +%F)
OUT=${GPU_CHECK_OUT:-benchmarks/results}
mkdir -p "$OUT"
LOG="$OUT/gpu_check_${DAY}.log"
status=0
stage() { echo "== $* ($(date -u +%T))" | tee -a "$LOG"; }

stage "device"
"$PY" - <<'PY' 2>&1 | tee -a "$LOG"
import torch, taichi_dp as tdp
assert torch.cuda.is_available(), "torch has no CUDA device (install a CUDA build of torch)"
print("torch", torch.__version__, "| GPUs:", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
rt = tdp.init("cuda", "f32")
print("taichi_dp runtime:", rt.arch, rt.precision, "gradient route:", rt.grad_route, dict(rt.grad_failures))
rt = tdp.init("cuda", "f64")
print("f64 gradient route:", rt.grad_route, dict(rt.grad_failures))
print("auto picks:", tdp.init("auto", "f32").arch)
PY
[ "$?" = 0 ] || { echo "no usable CUDA runtime: stopping" | tee -a "$LOG"; exit 1; }

stage "tests on --arch cuda"
TESTS="tests/test_grad_routes.py tests/test_runtime.py tests/test_bridge.py tests/test_advection.py tests/test_diffusion.py
  tests/test_staggered.py tests/test_staggered_ops.py tests/test_pressure.py tests/test_multigrid.py tests/test_linear_solve.py
  tests/test_burgers.py tests/test_navier_stokes.py tests/test_solvers.py tests/test_smoke.py tests/test_f32.py"
# shellcheck disable=SC2086
"$PY" -m pytest -q --arch cuda $TESTS --junitxml="$OUT/gpu_check_${DAY}_tests.xml" 2>&1 | tail -40 | tee -a "$LOG"
[ "$?" = 0 ] || status=1

if [ "${GPU_CHECK_QUICK:-0}" = 1 ]; then
  SUITE_ARGS="--sizes 256 1024 --karman-scales 1 4 --smoke-sizes 128"; KARMAN_SCALES="1 4"
else
  SUITE_ARGS="--sizes 256 1024 4096 --karman-scales 1 4 8 --smoke-sizes 128 512"; KARMAN_SCALES="1 2 4 8"
fi
stage "benchmark suite on cuda ($SUITE_ARGS)"
# shellcheck disable=SC2086
"$PY" -m benchmarks.run --arch cuda $SUITE_ARGS --json "$OUT/suite_${DAY}_cuda.json" --markdown "$OUT/suite_${DAY}_cuda.md" \
  2>&1 | tail -80 | tee -a "$LOG"
[ "$?" = 0 ] || status=1

stage "karman step / forward+backward on cuda (scales $KARMAN_SCALES)"
PHI=""; "$PY" -c "import phi" 2>/dev/null && PHI="--phiflow"
# shellcheck disable=SC2086
"$PY" -m benchmarks.bench_karman --arch cuda --scales $KARMAN_SCALES $PHI --json "$OUT/karman_cuda_${DAY}.json" 2>&1 | tee -a "$LOG"
[ "$?" = 0 ] || status=1

NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -ge 2 ]; then
  stage "torchrun + NCCL, one GPU per rank ($NGPU GPUs): train karman --preset tiny --distributed"
  DDP_OUT=$(mktemp -d)
  "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NGPU" -m taichi_dp train karman --preset tiny \
    --distributed --arch cuda --out "$DDP_OUT/run" --cache "$DDP_OUT/cache" 2>&1 | tail -20 | tee -a "$LOG"
  [ "$?" = 0 ] || status=1
  cp "$DDP_OUT/run/metrics.json" "$OUT/gpu_check_${DAY}_ddp_metrics.json" 2>/dev/null || status=1
else
  stage "torchrun + NCCL skipped: $NGPU GPU"
fi
stage "done: status $status (results in $OUT)"
exit $status
