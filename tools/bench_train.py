"""Training throughput (samples/s) per preset on this machine: forward + loss + backward + AdamW
step on random inputs of the preset's shapes (data loading excluded; it is measured by
`jsa-rt train`'s own progress bar). Prints a table and writes JSON under benchmarks/.

    python tools/bench_train.py [--presets edge,paper] [--batch 8] [--steps 3] [--device cpu]
"""

import sys
from pathlib import Path

# tools/profile.py would shadow the standard library's `profile` (imported by torch): drop tools/
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import platform
import time

import torch

from jsa_rt.config import get_preset
from jsa_rt.model import build_model, count_parameters


def machine_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name().replace(" ", "-").lower()
    return f"cpu-{torch.get_num_threads()}thread-{platform.machine()}"


def bench(preset: str, kind: str, batch: int, steps: int, device: str) -> dict:
    cfg = get_preset(preset)
    model = build_model(cfg, kind, pretrained=False).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, cfg.image_size, cfg.image_size, device=device)
    wave = torch.randn(batch, cfg.num_samples, device=device) * 0.1
    times = []
    for i in range(steps + 1):                       # the first step is warm-up
        t0 = time.perf_counter()
        loss, _ = model.loss(images, wave)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    return {"preset": preset, "model": kind, "batch": batch, "params_m": round(count_parameters(model) / 1e6, 2),
            "step_s_median": round(step_s, 4), "samples_per_s": round(batch / step_s, 2), "steps": steps}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="edge,paper")
    ap.add_argument("--models", default="jsa,ezvsl")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = [bench(p, m, args.batch, args.steps, args.device)
            for p in args.presets.split(",") for m in args.models.split(",")]
    name = machine_name(args.device)
    print(f"training throughput on {name} (torch {torch.__version__}, batch {args.batch})")
    print(f"{'preset':8} {'model':6} {'params M':>9} {'step s':>8} {'samples/s':>10}")
    for r in rows:
        print(f"{r['preset']:8} {r['model']:6} {r['params_m']:9.2f} {r['step_s_median']:8.3f} {r['samples_per_s']:10.2f}")
    out = Path(args.out or f"benchmarks/train_throughput_{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": name, "cpu": platform.processor() or platform.machine(),
                               "torch": torch.__version__, "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
