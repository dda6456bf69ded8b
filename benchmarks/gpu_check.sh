#!/usr/bin/env bash
# The whole GPU check in one command, in at most 8 minutes on an H200 (each phase has its own timeout;
# the defaults add up to 460 s), on a fresh GPU machine with a CUDA torch already installed:
#   benchmarks/gpu_check.sh OUT_DIR            build for the visible card (sm_90 on an H100/H200), the GPU
#                                              tests (ops and bi-level), compute-sanitizer memcheck, the op
#                                              report (loss per call eager and in a CUDA graph at B = 48 /
#                                              256 / 1024, perturb_pair against the copy bandwidth), the
#                                              bi-level step side by side (ResNet-50 224 px B = 48 in float32
#                                              and bf16 autocast, ResNet-18 112 px B = 48; eager and captured;
#                                              medians of 10 rounds; peak memory), one JSON of everything.
#   benchmarks/gpu_check.sh OUT_DIR --dry-run  the same Python parts on the CPU at tiny sizes (under about
#                                              2 minutes): proves the scripts and the JSON before a GPU session.
# Results: OUT_DIR/gpu_check.json (all figures, card, torch/CUDA, commit), OUT_DIR/*.log; a full run also
# copies the JSON next to benchmarks/RESULTS.md (benchmarks/gpu_check.json).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [--dry-run]}
MODE=${2:-}
mkdir -p "$OUT"
: >"$OUT/phases.txt"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
start=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - start ))s] $*"; }
# phase NAME TIMEOUT_S LOG COMMAND...: run it with a timeout, log its output, record "NAME EXIT SECONDS".
phase() {
    local name=$1 limit=$2 log=$3; shift 3
    local t0=$(date +%s)
    stamp "$name (at most ${limit}s)"
    timeout "$limit" "$@" >"$OUT/$log" 2>&1
    local rc=$?
    echo "$name $rc $(( $(date +%s) - t0 ))" >>"$OUT/phases.txt"
    [ $rc -eq 124 ] && echo "   $name TIMED OUT after ${limit}s (see $OUT/$log)"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "   $name exit $rc: $(tail -1 "$OUT/$log")"
    return 0
}
STEP_VARIANTS=plain,baseline,fd,fd_lagged,jvp,unroll,fd_captured,fd_lagged_captured,jvp_captured

if [ "$MODE" = "--dry-run" ]; then
    stamp "dry run on the CPU (tiny sizes, one thread)"
    phase gpu_tests_collect 60 pytest.log "$PY" -m pytest tests/ops tests/bilevel -q --co -p no:cacheprovider \
        -k "cuda or triton"
    phase op_report 120 report.log "$PY" benchmarks/gpu_report.py "$OUT" --dry-run
    phase step_fp32 120 step_fp32.log "$PY" -m benchmarks.bench_bilevel summary tiny \
        --variants "$STEP_VARIANTS" --rounds 2 --json "$OUT/step_fp32.json"
    phase step_bf16 60 step_bf16.log "$PY" -m benchmarks.bench_bilevel summary tiny --amp bf16 \
        --variants fd,jvp_captured --rounds 1 --json "$OUT/step_bf16.json"
    "$PY" benchmarks/gpu_report.py "$OUT" --merge --dry-run
    stamp "dry run done"
    exit 0
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/card.txt"
cap=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$cap}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
stamp "building for sm_${cap/./} against torch $("$PY" -c 'import torch; print(torch.__version__)')"
phase build "${T_BUILD:-100}" build.log "$PY" setup.py build_ext --inplace
if ! grep -q "^build 0 " "$OUT/phases.txt"; then
    tail -30 "$OUT/build.log"; stamp "BUILD FAILED"; "$PY" benchmarks/gpu_report.py "$OUT" --merge; exit 1
fi
"$PY" -c "import torch, bfdkern.ops as o; print('backends on cuda:', o.available(torch.device('cuda')))" | tee "$OUT/backends.txt"

# The GPU cases of the op tests (CUDA and Triton backends) and of the bi-level engine (a step on the GPU,
# set_sync_debug_mode('error') around steps, captured = eager over 20 steps): -k also matches the marker.
phase gpu_tests "${T_TESTS:-85}" pytest.log "$PY" -m pytest tests/ops tests/bilevel -q -p no:cacheprovider \
    -k "cuda or triton" --junitxml="$OUT/pytest.xml"
echo "   pytest: $(tail -1 "$OUT/pytest.log")"

if command -v compute-sanitizer >/dev/null; then
    phase memcheck "${T_SAN:-75}" sanitizer.log compute-sanitizer --tool memcheck --error-exitcode 9 \
        "$PY" benchmarks/sanitize_ops.py
    echo "   memcheck: $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)"
else
    echo "memcheck skipped 0 0" >>"$OUT/phases.txt"; echo "compute-sanitizer not found"
fi

phase op_report "${T_REPORT:-70}" report.log "$PY" benchmarks/gpu_report.py "$OUT"
phase step_r50_fp32 "${T_STEP_FP32:-60}" step_fp32.log "$PY" -m benchmarks.bench_bilevel summary cuda \
    --variants "$STEP_VARIANTS" --rounds 10 --json "$OUT/step_fp32.json"
phase step_r50_bf16 "${T_STEP_BF16:-45}" step_bf16.log "$PY" -m benchmarks.bench_bilevel summary cuda --amp bf16 \
    --variants "$STEP_VARIANTS" --rounds 10 --json "$OUT/step_bf16.json"
phase step_r18 "${T_STEP_R18:-25}" step_r18.log "$PY" -m benchmarks.bench_bilevel summary cuda-r18 \
    --variants fd,fd_lagged,jvp,fd_captured,fd_lagged_captured,jvp_captured --rounds 10 --json "$OUT/step_r18.json"
"$PY" benchmarks/gpu_report.py "$OUT" --merge
cp "$OUT/gpu_check.json" benchmarks/gpu_check.json
stamp "done: $OUT/gpu_check.json (copied to benchmarks/gpu_check.json)"
