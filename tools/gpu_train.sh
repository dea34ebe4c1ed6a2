#!/usr/bin/env bash
# Train the shipped models on a lent GPU machine in one call (scenes generated there).
# Expects, in the repo root: .carry/data (a copy of ../shared/data's stamps, FSDD, backgrounds),
# .carry/whl (wheels missing there, e.g. soundfile), .carry/effnet_lite0_fp16.pth, and for
# PRESET=paper .carry/resnet18-f37072fd.pth.
# Env: PRESET (edge), EPOCHS (16), BATCH (64), TRAIN_SCENES (6000), MODELS ("jsa ezvsl"), OUT.
# The defaults are the shipped edge models' recipe (they were trained on format-1 scenes; this
# generates the current format, so its models will not equal them).
set -euo pipefail
export PYTHONUNBUFFERED=1
PRESET=${PRESET:-edge}; EPOCHS=${EPOCHS:-16}; BATCH=${BATCH:-64}
TRAIN_SCENES=${TRAIN_SCENES:-6000}; MODELS=${MODELS:-"jsa ezvsl"}; OUT=${OUT:-/tmp/gpu_train_out}
WORKERS=${WORKERS:-$(( $(nproc) - 2 ))}
PY=${PY:-python3}
mkdir -p "$OUT"
if ls .carry/whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .carry/whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -c "import jsa_rt.kernels" 2>/dev/null || $PY -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
export JSA_DATA=${JSA_DATA:-$PWD/.carry/data}
[ -f .carry/effnet_lite0_fp16.pth ] && export JSA_EFFNET_LITE0_WEIGHTS=$PWD/.carry/effnet_lite0_fp16.pth
# PRESET=paper needs torchvision's ImageNet ResNet-18 (train stops without it)
[ -f .carry/resnet18-f37072fd.pth ] && export JSA_RESNET18_WEIGHTS=$PWD/.carry/resnet18-f37072fd.pth
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
SCENES=/tmp/scenes
t0=$(date +%s)
[ -f $SCENES/annotations/train.json ] || $PY -m jsa_rt.train.scenes --out $SCENES --seed 0 --quiet --workers $(nproc) \
    --counts "train=$TRAIN_SCENES,val=200,test=0,test-unheard=0,digits=0"
echo "scenes: $(( $(date +%s) - t0 )) s"
for model in $MODELS; do
    t0=$(date +%s)
    $PY -m jsa_rt.cli train --preset $PRESET --model $model --data $SCENES --out /tmp/runs/$PRESET-$model \
        --epochs $EPOCHS --batch-size $BATCH --workers $WORKERS --no-progress --save-every 100000 \
        2>&1 | grep -v Warning | tee "$OUT/train_$PRESET-$model.log"
    echo "$model: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/train_$PRESET-$model.log"
    # shipped form: fp16 weights (half the size; loads back as fp32)
    $PY -c "import sys; from jsa_rt.model.checkpoint import load_checkpoint, save_checkpoint; \
m, meta = load_checkpoint(sys.argv[1]); save_checkpoint(sys.argv[2], m, extra=meta['extra'], half=True)" \
        /tmp/runs/$PRESET-$model/best.pt "$OUT/$PRESET-$model.pt"
    cp /tmp/runs/$PRESET-$model/history.json "$OUT/history_$PRESET-$model.json"
done
ls -la "$OUT"
