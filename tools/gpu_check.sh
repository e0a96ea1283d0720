#!/usr/bin/env bash
# The GPU checks of issue 8 in one go, for a machine with an NVIDIA GPU, CuPy (cupy-cuda13x)
# and, for the comparison rows, PyTorch with CUDA. Run from anywhere; everything it prints
# is also written under $OUT (default ./gpu_check_out):
#
#   env.txt            nvidia-smi, Python/CuPy/PyTorch versions, `minicaffe device_query`
#   test_gpu.txt       pytest tests/test_gpu.py (layer parity, training, memory pool, no-sync)
#   test_gpu.xml       the same as JUnit XML
#   gpu_benchmark.txt  tools/gpu_benchmark.py (train batch 100 / forward batch 1000 vs PyTorch,
#                      per-layer table)
#   time_gpu.txt       `minicaffe time --gpu 0` on models/cifar10_bn/deploy.prototxt
#   summary.txt        exit codes and the test summary line
#
# At most 9 minutes (pytest 330 s, benchmark 150 s, time 60 s); each step has its own
# time limit, so one stuck step still leaves the others' output. Run it under a limit of
# 600 s or more, e.g. OUT=$OUT bash tools/gpu_check.sh.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

{
  echo "== date"; date -u
  echo "== nvidia-smi"; (nvidia-smi 2>&1 || echo "nvidia-smi not available")
  echo "== python"; "$PY" --version
  "$PY" - <<'PYEOF'
import importlib
for name in ("numpy", "cupy", "torch"):
    try:
        m = importlib.import_module(name)
        extra = ""
        if name == "cupy":
            extra = f" CUDA runtime {m.cuda.runtime.runtimeGetVersion()}, " \
                    f"{m.cuda.runtime.getDeviceCount()} device(s)"
        if name == "torch":
            extra = f" cuda available: {m.cuda.is_available()}"
        print(f"{name} {m.__version__}{extra}")
    except Exception as e:
        print(f"{name}: not usable ({type(e).__name__}: {e})")
PYEOF
  echo "== minicaffe device_query"; "$PY" -m minicaffe device_query 2>&1
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== tests/test_gpu.py" | tee "$OUT/test_gpu.txt"
timeout 330 "$PY" -m pytest -q -rs --durations=15 -p no:cacheprovider \
    --junitxml="$OUT/test_gpu.xml" tests/test_gpu.py 2>&1 | tee -a "$OUT/test_gpu.txt"
TEST_RC=${PIPESTATUS[0]}

echo "== tools/gpu_benchmark.py" | tee "$OUT/gpu_benchmark.txt"
timeout 150 "$PY" tools/gpu_benchmark.py 2>&1 | tee -a "$OUT/gpu_benchmark.txt"
BENCH_RC=${PIPESTATUS[0]}

echo "== minicaffe time --gpu 0" | tee "$OUT/time_gpu.txt"
timeout 60 "$PY" -m minicaffe time --model models/cifar10_bn/deploy.prototxt --gpu 0 \
    --iterations 20 2>&1 | tee -a "$OUT/time_gpu.txt"
TIME_RC=${PIPESTATUS[0]}

{
  echo "test_gpu exit code: $TEST_RC"
  grep -E "passed|failed|error" "$OUT/test_gpu.txt" | tail -1
  echo "gpu_benchmark exit code: $BENCH_RC"
  echo "minicaffe time exit code: $TIME_RC"
} | tee "$OUT/summary.txt"
[ "$TEST_RC" = 0 ] && [ "$BENCH_RC" = 0 ] && [ "$TIME_RC" = 0 ]
