#!/usr/bin/env bash
# Validate the TensorRT path on a machine that HAS TensorRT (Jetson with JetPack 6.x / 7.x,
# or x86 with NVIDIA's `tensorrt` wheel or an NGC TensorRT container). jsa-rt's development
# machines cannot run this: it is the only real check of export -> build -> run.
#
#   tools/validate_trt.sh [CHECKPOINT] [--fp32] [--plugins triton]
#
# 1. export the fp16 (or fp32) ONNX graphs         jsa-rt export-onnx
# 2. build the engines (cache under engines/)      jsa-rt build-engine --force
# 3. compare engine vs onnxruntime with polygraphy (same seeded inputs, fp16 tolerances)
# 4. jsa-rt's own tensorrt backend vs onnxruntime backend on the same real-looking inputs
# 5. time the plan with trtexec (CUDA graph on)
# Exit code 0 only if every step passed. Output under $OUT (default validate-trt-out/).
set -euo pipefail

CKPT="edge-jsa"; PREC="--fp16"; PRECISION=fp16; PLUGINS=none
while [[ $# -gt 0 ]]; do
  case "$1" in
    --fp32) PREC=""; PRECISION=fp32 ;;
    --plugins) PLUGINS="$2"; shift ;;
    *) CKPT="$1" ;;
  esac
  shift
done
OUT="${OUT:-validate-trt-out}"
PY="${PYTHON:-python3}"
ATOL=$([[ $PRECISION == fp16 ]] && echo 5e-2 || echo 1e-2)
mkdir -p "$OUT"

"$PY" -c "import tensorrt" 2>/dev/null || {
  echo "TensorRT is not importable: x86: pip install tensorrt --extra-index-url https://pypi.nvidia.com (or an NGC container); Jetson: JetPack ships it, use a venv made with --system-site-packages" >&2
  exit 2; }
"$PY" -c "import tensorrt as t; print('TensorRT', t.__version__)"

echo "== 1/5 export ($PRECISION, plugins $PLUGINS)"
ONNX="$OUT/model.$PRECISION.onnx"
jsa-rt export-onnx --checkpoint "$CKPT" $PREC --plugins "$PLUGINS" --out "$ONNX"

echo "== 2/5 build"
jsa-rt build-engine $PREC --onnx "$ONNX" --plugins "$PLUGINS" --force | tee "$OUT/build.log"
PLAN=$(grep -o 'engine: [^ ]*model.plan' "$OUT/build.log" | tail -1 | cut -d' ' -f2)
[[ -f "$PLAN" ]] || { echo "no plan found in the build log" >&2; exit 1; }

echo "== 3/5 polygraphy: engine vs onnxruntime (atol $ATOL)"
if command -v polygraphy >/dev/null && [[ $PLUGINS == none ]]; then
  VALS=(--val-range "frame:[0,255]" "wave:[-0.5,0.5]" --seed 0)
  polygraphy run "$ONNX" --onnxrt "${VALS[@]}" --save-outputs "$OUT/ort_outputs.json"
  polygraphy run "$PLAN" --model-type engine --trt "${VALS[@]}" \
      --load-outputs "$OUT/ort_outputs.json" --atol "$ATOL" --rtol 1e-2
else
  echo "(skipped: polygraphy not installed (pip install polygraphy) or plugin engine)"
fi

echo "== 4/5 jsa-rt tensorrt backend vs onnxruntime backend"
"$PY" - "$PLAN" "$ONNX" "$ATOL" <<'EOF'
import sys
import numpy as np
from jsa_rt.runtime import load_backend
from jsa_rt.export.onnx_export import example_inputs
plan, onnx_path, atol = sys.argv[1], sys.argv[2], float(sys.argv[3])
trt_b = load_backend("tensorrt", model=plan)
ort_b = load_backend("onnxruntime", model=onnx_path, device="cpu")
ex = example_inputs(trt_b.config)
frame, wave = ex["frame"][0], ex["wave"][0]
a, b = trt_b.run(frame, wave), ort_b.run(frame, wave)
errs = {k: float(np.abs(getattr(a, k) - getattr(b, k)).max()) for k in ("heatmap", "aud", "img", "image_slot", "audio_slot")}
split = trt_b.run_visual(frame, trt_b.run_audio(wave))
errs["split_vs_full"] = float(np.abs(split.heatmap - a.heatmap).max())
print(trt_b.describe(), errs, "peak", a.peak, b.peak)
sys.exit(0 if max(errs.values()) <= atol else 1)
EOF

echo "== 5/5 trtexec timing"
if command -v trtexec >/dev/null; then
  trtexec --loadEngine="$PLAN" --warmUp=500 --duration=10 --useCudaGraph | tee "$OUT/trtexec.log" | tail -n 20
else
  echo "(skipped: trtexec not on PATH; on Jetson it is /usr/src/tensorrt/bin/trtexec)"
fi
echo "validate_trt: all steps passed for $PLAN"
