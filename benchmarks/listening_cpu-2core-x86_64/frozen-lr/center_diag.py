"""Zero-training check: the localisation map from the audio margin minus its mean over training sounds."""
import sys, torch, torch.nn.functional as F
from collections import defaultdict
sys.path.insert(0, "/work/main")
from pathlib import Path
from jsa_rt.model.checkpoint import load_checkpoint
from jsa_rt.train.datasets import open_dataset, collate
torch.set_num_threads(1)
name, split = sys.argv[1], sys.argv[2]
model, meta = load_checkpoint(f"/work/main/jsa_rt/weights/{name}.pt"); model.eval(); cfg = meta["config"]
def margins(ds, idx):
    b = collate([ds[i] for i in idx])
    with torch.no_grad():
        q = model.audio_branch(b["audio"])["audio_query"]
    return q[:, 0] - q[:, 1], b
tr = open_dataset("scenes", Path("/tmp/sc"), cfg, "train")
mu = margins(tr, range(0, len(tr), len(tr) // 256))[0].mean(0)
ds = open_dataset("scenes", Path("/tmp/sc"), cfg, split)
res = defaultdict(list); groups = {k: defaultdict(list) for k in ("raw", "centered")}
for i0 in range(0, len(ds), 64):
    idx = list(range(i0, min(len(ds), i0 + 64)))
    m, b = margins(ds, idx)
    with torch.no_grad():
        st = model.slots.image(model.encode_image(b["image"]), model.slots.initial_slots)
    for kind, mm in (("raw", m), ("centered", m - mu)):
        logit = torch.einsum("bd,bnd->bn", mm, st.keys)
        g = cfg.grid
        for j, k in enumerate(idx):
            s = ds.samples[k]
            if s.no_source: continue
            n = int(logit[j].argmax()); y, x = (n // g + .5) / g, (n % g + .5) / g
            h = any(bb[0] <= x <= bb[2] and bb[1] <= y <= bb[3] for bb in s.boxes)
            res[kind].append(h)
            if s.meta.get("group") is not None: groups[kind][s.meta["group"]].append(h)
for kind in res:
    gr = groups[kind]
    print(name, split, kind, "pointing %.1f" % (100 * sum(res[kind]) / len(res[kind])),
          "follows %.1f" % (100 * sum(all(v) for v in gr.values()) / max(1, len(gr))) if gr else "")
