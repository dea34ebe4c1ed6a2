#!/usr/bin/env bash
# Every GPU check of the Triton kernels in one go (the lent H100, or any NVIDIA box with triton;
# on a lent machine run tools/device_tree.sh checks first, and back after):
#   1. smoke: one launch of the persistent slot-loop EXPERIMENT (kernels/experiments/) at the
#      paper size vs the reference (catches a hung grid barrier early; on failure the rest runs
#      without the persistent mode)
#   2. tools/bench_kernels.py: the product kernels' timing table + JSON (benchmarks/kernels_<card>.json),
#      then kernels/experiments/bench_slot_loop.py: the experiment's (kernels_slot_loop_<card>.json)
#   3. tests/test_kernels.py, test_joint_loop.py, test_slot_kernels.py (the model's seam) and
#      test_experiment_slot_loop.py compiled (JSA_KERNELS_DEVICE=cuda, no interpreter)
#   4. tools/profile.py model on the GPU: edge-jsa and paper, every backend (torch eager,
#      torch + Triton + CUDA graphs, onnxruntime, TensorRT when present)
#   5. tools/check_aot_launch.py: the AOT PTX (hidden parameters removed) launched through the
#      CUDA driver with exactly the TensorRT plugin's arguments, against the reference
# Writes everything under $OUT (default: out/gpu_checks). Needs python3 with torch and triton;
# the package need not be installed (jsa_rt is imported from this checkout). Each step has a
# timeout; the script always runs all steps.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/out/gpu_checks}
PY=${PYTHON:-python3}
mkdir -p "$OUT"

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_INTERPRET=0      # compiled kernels (tests/conftest.py defaults to the interpreter)
cd "$REPO"

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, \
'cuda', torch.version.cuda, torch.cuda.get_device_name(), torch.cuda.get_device_capability())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== 1/5 smoke (persistent slot-loop experiment)"
timeout 60 $PY kernels/experiments/bench_slot_loop.py --smoke 2>&1 | tee "$OUT/smoke.txt"
smoke=${PIPESTATUS[0]}
if [ "$smoke" -eq 0 ]; then
  modes="persistent"; skip=""
else
  echo "persistent kernel failed (status $smoke): continuing with the phased mode only"
  modes="phased"; skip="not persistent and not repeat_calls and not slot_iterations_gradients"
fi

echo "== 2/5 bench_kernels.py, then the slot-loop experiment's benchmark"
timeout 160 $PY tools/bench_kernels.py --out-dir "$OUT" --compile-budget-s 60 2>&1 | tee "$OUT/bench.txt"
bench=${PIPESTATUS[0]}
timeout 80 $PY kernels/experiments/bench_slot_loop.py --out-dir "$OUT" --modes $modes 2>&1 \
  | tee "$OUT/bench_slot_loop.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || bench=1

echo "== 3/5 kernel tests compiled"
JSA_KERNELS_DEVICE=cuda timeout 130 $PY -m pytest tests/test_kernels.py tests/test_joint_loop.py \
  tests/test_slot_kernels.py tests/test_experiment_slot_loop.py -v -p no:cacheprovider \
  --durations=5 ${skip:+-k "$skip"} 2>&1 | tee "$OUT/pytest.txt"
tests=${PIPESTATUS[0]}

echo "== 4/5 end-to-end model profiles"
profiles=0
for spec in "--checkpoint edge-jsa edge-jsa" "--preset paper paper"; do
  set -- $spec
  timeout 120 $PY tools/profile.py model $1 $2 --device cuda --iterations 50 --warmup 10 \
    --json "$OUT/profile_model_$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr A-Z a-z)_$3.json" \
    2>&1 | tail -20 | tee "$OUT/profile_$3.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || profiles=1
done

echo "== 5/5 AOT PTX launched with exactly TensorRT's plugin arguments (tools/check_aot_launch.py)"
timeout 120 $PY tools/check_aot_launch.py 2>&1 | tee "$OUT/aot_launch.txt"
aot=${PIPESTATUS[0]}

echo "gpu_checks: smoke=$smoke bench=$bench tests=$tests profiles=$profiles aot=$aot (0 = ok, 124 = timeout); outputs in $OUT" \
  | tee "$OUT/summary.txt"
