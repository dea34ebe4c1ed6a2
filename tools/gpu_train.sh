#!/usr/bin/env bash
# Train the shipped models (and equal-budget ablations) on a lent GPU machine in one call:
# scenes are generated there from .carry/data (tools/pack_device_data.sh makes it), then every
# run trains at the same time on the same scenes, with the same epochs and batch.
# Expects, in the repo root: .carry/data, .carry/whl (soundfile), .carry/effnet_lite0_fp16.pth,
# .carry/soundfont and .carry/drumkits (the instruments),
# and for PRESET=paper .carry/resnet18-f37072fd.pth.
# Env: PRESET (edge), EPOCHS (12), BATCH (64), TRAIN_SCENES (16000 frames, the scenes of the shipped default:
#      20,188 training items; on the CPU more scenes helped at every step so far, README Listening), OUT,
#      RUNS: "name:train flags;..." (default: the shipped default's recipe trained at 384 x 384 from the start,
#      the same at output stride 16 (a 24 x 24 grid, benchmarks/listening_cpu-2core-x86_64/2026-12-06-s16), and
#      EZ-VSL on the same data and budget: tools/recipes/*.json),
#      TRAIN_LIMIT_S (each run is stopped after this many seconds; best.pt so far is kept).
set -euo pipefail
export PYTHONUNBUFFERED=1
PRESET=${PRESET:-edge}; EPOCHS=${EPOCHS:-12}; BATCH=${BATCH:-64}
TRAIN_SCENES=${TRAIN_SCENES:-16000}; OUT=${OUT:-/tmp/gpu_train_out}; TRAIN_LIMIT_S=${TRAIN_LIMIT_S:-100000}
RUNS=${RUNS:-"jsa-listen-384:--model jsa --variant listen --config tools/recipes/listen-384.json;jsa-listen-384-s16:--model jsa --variant listen --config tools/recipes/listen-384-s16.json;ezvsl-384:--model ezvsl --config tools/recipes/ezvsl-384.json"}
PY=${PY:-python3}
mkdir -p "$OUT"
if ls .carry/whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .carry/whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export JSA_DATA=${JSA_DATA:-$PWD/.carry/data}
[ -f .carry/effnet_lite0_fp16.pth ] && export JSA_EFFNET_LITE0_WEIGHTS=$PWD/.carry/effnet_lite0_fp16.pth
[ -f .carry/sound8_conv1-7_fp16.npy ] && export JSA_SOUNDNET8_WEIGHTS=$PWD/.carry/sound8_conv1-7_fp16.npy
[ -f .carry/resnet18-f37072fd.pth ] && export JSA_RESNET18_WEIGHTS=$PWD/.carry/resnet18-f37072fd.pth
# the instruments (no fluidsynth, SoundFont or drum kits there): read by instruments.py at import
[ -d .carry/soundfont ] && export JSA_SOUNDFONT_CACHE=$PWD/.carry/soundfont
[ -d .carry/drumkits ] && export JSA_DRUMKITS=$PWD/.carry/drumkits
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
SCENES=/tmp/scenes
t0=$(date +%s)
[ -f $SCENES/annotations/train.json ] || $PY -m jsa_rt.cli make-scenes --out $SCENES --seed 0 --quiet --workers $(nproc) --plan .carry/plan.json \
    --counts "train=$TRAIN_SCENES,val=300,test=0,test-unheard=0,digits=0,pairs=0,pairs-unheard=0,real=0,real-pairs=0" \
    | tee "$OUT/scenes.log"
echo "scenes: $(( $(date +%s) - t0 )) s"

IFS=';' read -ra runs <<< "$RUNS"
workers=$(( ($(nproc) - ${#runs[@]}) / ${#runs[@]} )); [ $workers -ge 1 ] || workers=1
pids=()
for run in "${runs[@]}"; do
    name=${run%%:*}; flags=${run#*:}
    ( t1=$(date +%s)
      timeout --signal=TERM $TRAIN_LIMIT_S $PY -m jsa_rt.cli train --preset $PRESET $flags --data $SCENES \
          --out /tmp/runs/$name --epochs $EPOCHS --batch-size $BATCH --workers $workers --no-progress \
          --save-every 100000 > "$OUT/train_$name.log" 2>&1 || echo "stopped: exit $?" >> "$OUT/train_$name.log"
      echo "$name: $(( $(date +%s) - t1 )) s" >> "$OUT/train_$name.log" ) &
    pids+=($!)
done
wait "${pids[@]}"
for run in "${runs[@]}"; do
    name=${run%%:*}
    tail -n 4 "$OUT/train_$name.log"
    [ -f /tmp/runs/$name/best.pt ] || continue
    # shipped form: fp16 weights (half the size; loads back as fp32)
    $PY -c "import sys; from jsa_rt.model.checkpoint import load_checkpoint, save_checkpoint; \
m, meta = load_checkpoint(sys.argv[1]); save_checkpoint(sys.argv[2], m, extra=meta['extra'], half=True)" \
        /tmp/runs/$name/best.pt "$OUT/$PRESET-$name.pt"
    cp /tmp/runs/$name/history.json "$OUT/history_$name.json" 2>/dev/null || true
done
(cd "$OUT" && tar czf logs.tgz *.log history_*.json 2>/dev/null && rm -f *.log history_*.json)
ls -la "$OUT"
