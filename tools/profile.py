#!/usr/bin/env python
"""Latency reports for jsa-rt (thin wrapper; the logic is jsa_rt/profile/).

    python tools/profile.py model --preset edge --json benchmarks/edge.json
    python tools/profile.py pipeline --camera file://clip.mp4 --mic clip.wav --duration 10 --json p.json
    python tools/profile.py --compare old.json new.json --fail-if "p95_ratio>1.10"
    python tools/profile.py check new.json --fail-if "p95_ms>50"
"""
import os
import sys

# Python puts this script's folder first on sys.path, where this file would shadow the standard
# library's `profile` module (cProfile imports it, torch imports cProfile): use the repo root.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from jsa_rt.profile.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
