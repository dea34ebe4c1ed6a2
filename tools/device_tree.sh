#!/usr/bin/env bash
# Keep what travels to a lent GPU machine under its 64 MiB limit (tracked files + untracked,
# not-ignored files + carried paths). The repository's tracked files alone are over it (shipped
# weights ~75 MB, benchmark pictures ~31 MB), and neither job on the device needs all of them:
#   tools/device_tree.sh train    moves jsa_rt/weights/* and benchmarks/ aside (gpu_train.sh needs neither)
#   tools/device_tree.sh checks   moves benchmarks/ and every weight but edge-jsa.* aside (gpu_checks.sh)
#   tools/device_tree.sh back     puts everything back (run it after the device call, before any commit)
#   tools/device_tree.sh size     prints what would travel now
# "Aside" is .aside/ in the repository root, ignored through .git/info/exclude, so it does not travel.
set -euo pipefail
cd "$(dirname "$0")/.."
ASIDE=.aside
grep -qx "/$ASIDE/" .git/info/exclude 2>/dev/null || echo "/$ASIDE/" >> .git/info/exclude

size() {   # tracked files present + untracked not-ignored files + .carry
    local tracked untracked carry
    tracked=$( { git ls-files -z | xargs -0 du -cb 2>/dev/null || true; } | awk 'END {print $1 + 0}')   # files moved aside: not counted
    untracked=$( { git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null || true; } | awk 'END {print $1 + 0}')
    carry=$( { du -sb .carry 2>/dev/null || echo 0; } | cut -f1)
    awk -v t="$tracked" -v u="$untracked" -v c="$carry" 'BEGIN {
        s = t + u + c
        printf "device tree: tracked %.1f MB + untracked %.1f MB + .carry %.1f MB = %.1f MB (limit 64 MiB = %.1f MB)%s\n",
               t / 1e6, u / 1e6, c / 1e6, s / 1e6, 67108864 / 1e6, (s > 67108864 ? ": OVER, it will not travel" : "") }'
}

move_aside() {   # paths relative to the root -> .aside/<same path>
    for path in "$@"; do
        [ -e "$path" ] || continue
        mkdir -p "$ASIDE/$(dirname "$path")"
        mv "$path" "$ASIDE/$path"
    done
}

case "${1:-}" in
    train)  move_aside benchmarks jsa_rt/weights/*.pt jsa_rt/weights/*.onnx ;;
    checks) move_aside benchmarks $(ls jsa_rt/weights/*.pt jsa_rt/weights/*.onnx | grep -v '/edge-jsa\.') ;;
    back)
        if [ -d "$ASIDE" ]; then
            (cd "$ASIDE" && find . -type f -print0) | while IFS= read -r -d '' f; do
                mkdir -p "$(dirname "$f")"; mv "$ASIDE/$f" "$f"; done
            rm -rf "$ASIDE"
        fi
        git status --short -- benchmarks jsa_rt/weights | grep '^ D' && { echo "device tree: files still missing (above)"; exit 1; }
        echo "device tree: everything is back" ;;
    size) ;;
    *) echo "usage: tools/device_tree.sh train|checks|back|size" >&2; exit 2 ;;
esac
size
