#!/usr/bin/env bash
# One command on a fresh GPU machine with a CUDA torch already installed (no network needed):
#   benchmarks/gpu_check.sh OUT_DIR
# builds the extension for the visible card, runs the GPU tests, compute-sanitizer memcheck on the
# CUDA kernels, the kernel and bi-level step benchmarks, and prints a short table last.
# Full results: OUT_DIR/gpu_report.json, OUT_DIR/*.log, OUT_DIR/pytest.xml.
# `benchmarks/gpu_check.sh OUT_DIR --dry-run` exercises the report on the CPU (no GPU needed).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [--dry-run]}
MODE=${2:-}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
start=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - start ))s] $*"; }

if [ "$MODE" = "--dry-run" ]; then
    stamp "dry run on the CPU"
    exec "$PY" benchmarks/gpu_report.py "$OUT" --dry-run
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/card.txt"
cap=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$cap}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
stamp "building for sm_${cap/./} against torch $("$PY" -c 'import torch; print(torch.__version__)')"
if ! "$PY" setup.py build_ext --inplace >"$OUT/build.log" 2>&1; then
    tail -30 "$OUT/build.log"; stamp "BUILD FAILED"; exit 1
fi
"$PY" -c "import torch, bfdkern.ops as o; print('backends on cuda:', o.available(torch.device('cuda')))" | tee "$OUT/backends.txt"

stamp "GPU tests"
# The GPU cases of the op tests (the CUDA and Triton backends on CUDA tensors).
timeout ${T_TESTS:-150} "$PY" -m pytest tests/ops -q -p no:cacheprovider -k "cuda or triton" --junitxml="$OUT/pytest.xml" \
    >"$OUT/pytest.log" 2>&1
echo "pytest exit $?: $(tail -1 "$OUT/pytest.log")"

stamp "compute-sanitizer memcheck"
if command -v compute-sanitizer >/dev/null; then
    timeout ${T_SAN:-100} compute-sanitizer --tool memcheck --error-exitcode 9 "$PY" benchmarks/sanitize_ops.py \
        >"$OUT/sanitizer.log" 2>&1
    echo "memcheck exit $?: $(grep -E 'ERROR SUMMARY|sanitize_ops' "$OUT/sanitizer.log" | tail -2 | tr '\n' ' ')"
else
    echo "compute-sanitizer not found"
fi

stamp "bi-level step: ResNet-50 224x224 B=48, the targets' variants against the baseline"
# The variants the targets name, 10 rounds: fits T_STEP (peak memory is read in-process on CUDA).
BFDKERN_BENCH_VARIANTS=${BFDKERN_BENCH_VARIANTS:-fd,fd_lagged,fd_fresh_output,jvp,unroll} \
BFDKERN_BENCH_ROUNDS=${BFDKERN_BENCH_ROUNDS:-10} \
timeout ${T_STEP:-150} "$PY" -m pytest --benchmark benchmarks/bench_bilevel.py -q -s -p no:cacheprovider \
    -k "test_step_summary and cuda" >"$OUT/bilevel.log" 2>&1
echo "bilevel benchmark exit $?"

stamp "op report"
timeout ${T_REPORT:-150} "$PY" benchmarks/gpu_report.py "$OUT" >"$OUT/report.log" 2>&1
echo "report exit $?"
grep -v "^\\s*$" "$OUT/bilevel.log" | grep -E "x |ratio|target|median|variant|plain|baseline|fd|jvp|unroll" | head -30
tail -32 "$OUT/report.log"
stamp "done"
