#!/usr/bin/env bash
# One call on a lent GPU: kernel benchmark (incl. the joint loop), compiled kernel tests, and
# model-mode latency profiles of edge-jsa and paper on every backend. Everything lands in $OUT.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu_final}; mkdir -p "$OUT/r"
python3 -c "import jsa_rt.kernels" 2>/dev/null || python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1
export TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/r/env.txt"
echo "== kernels bench"
timeout 150 python3 tools/bench_kernels.py --out-dir "$OUT/r" --modes persistent --no-compile 2>&1 | tail -40 | tee "$OUT/r/bench.txt"
echo "== compiled kernel tests"
JSA_KERNELS_DEVICE=cuda timeout 150 python3 -m pytest tests/test_kernels.py tests/test_joint_loop.py -q -p no:cacheprovider -x 2>&1 | tail -15 | tee "$OUT/r/pytest.txt"
for spec in "--checkpoint edge-jsa edge" "--preset paper paper"; do
    set -- $spec
    echo "== profile model $3"
    timeout 150 python3 tools/profile.py model $1 $2 --device cuda --iterations 100 --warmup 20 \
        --json "$OUT/r/profile_model_nvidia-h100_$3.json" 2>&1 | tail -25 | tee "$OUT/r/profile_$3.txt"
done
tar czf "$OUT/gpu_final.tgz" -C "$OUT" r && ls -la "$OUT"
