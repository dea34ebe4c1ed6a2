"""Train JSA heads on cached frozen-backbone features; evaluate pointing/follows on cached eval splits."""
import sys, json, time, math, argparse, random
from collections import defaultdict
import torch, torch.nn.functional as F
sys.path.insert(0, "/work/main")
from jsa_rt.config import PRESETS, with_variant
from jsa_rt.model import build_model
torch.set_num_threads(int(__import__("os").environ.get("THREADS", "2")))
p = argparse.ArgumentParser()
p.add_argument("--name", required=True); p.add_argument("--steps", type=int, default=600)
p.add_argument("--bs", type=int, default=64); p.add_argument("--lr", type=float, default=5e-4)
p.add_argument("--over", default="{}"); p.add_argument("--model", default="jsa")
p.add_argument("--variant", default="listen"); p.add_argument("--eval-every", type=int, default=200)
p.add_argument("--splits", default="pairs,real-pairs,val")
p.add_argument("--cache", default="train")
p.add_argument("--box", type=float, default=0.0)
p.add_argument("--flip", type=int, default=1)
p.add_argument("--mlp", type=int, default=0)
p.add_argument("--k", type=int, default=8)
p.add_argument("--grp", type=float, default=0.0)
p.add_argument("--mask", type=int, default=1)
p.add_argument("--top-lr", type=float, default=1e-4)
p.add_argument("--top-bn", default="eval")
a = p.parse_args()
over = json.loads(a.over)
base = PRESETS["edge"].with_overrides(audio_encoder="soundnet8", freeze_encoders=True)
cfg = with_variant(base, a.variant) if a.model == "jsa" else base
cfg = cfg.with_overrides(**over)
torch.manual_seed(0); random.seed(0)
model = build_model(cfg, a.model, pretrained=True)
if a.mlp:
    sys.path.insert(0, "/tmp/exp"); import patch_mlp; patch_mlp.patch(model, a.mlp)
def with_blocks(d, split):
    b = torch.load(f"/tmp/s8/blk{a.k}_{split}.pt", weights_only=False)
    assert b["ids"] == d["ids"], split
    d["images"] = [b["images"]]; return d
tr = with_blocks(torch.load(f"/tmp/exp/cache_{a.cache}.pt", weights_only=False), "train")
evals = {s: with_blocks(torch.load(f"/tmp/exp/cache_{s}.pt", weights_only=False), s) for s in a.splits.split(",")}
bb = model.image_encoder.backbone
top = torch.nn.ModuleList(list(bb._blocks[a.k:]) + [bb._conv_head, bb._bn1])
top.requires_grad_(True)
enc = model.image_encoder; plain_tokens = enc.tokens
def top_tokens(h):
    if a.top_bn == "train" and model.training: top.train()
    else: top.eval()
    for blk in bb._blocks[a.k:]: h = blk(h)
    return plain_tokens(torch.nn.functional.relu6(bb._bn1(bb._conv_head(h))))
enc.tokens = top_tokens
top_params = list(top.parameters()); top_ids = {id(p) for p in top_params}
params = [p for p in model.parameters() if p.requires_grad and id(p) not in top_ids]
opt = torch.optim.AdamW([{"params": params, "lr": a.lr}, {"params": top_params, "lr": a.top_lr}], weight_decay=1e-4)
print("trainable heads", sum(p.numel() for p in params), "top", sum(p.numel() for p in top_params), flush=True)
params = params + top_params
n = tr["images"][0].shape[0]; nviews = len(tr["audio"])
G = cfg.grid
def coverage(boxes):
    c = torch.zeros(G, G)
    for b in boxes:
        x0, y0, x1, y1 = [min(max(v * G, 0), G) for v in b]
        for r in range(G):
            for q in range(G):
                c[r, q] = max(c[r, q], max(0, min(x1, q + 1) - max(x0, q)) * max(0, min(y1, r + 1) - max(y0, r)))
    return c
COV = torch.stack([coverage(b) if not ns else torch.zeros(G, G) for b, ns in zip(tr["boxes"], tr["no_source"])])
stash = {}
orig_forward = model.forward
def fwd(*x):
    o = orig_forward(*x); stash["out"] = o; return o
model.forward = fwd

def peak_in(mapg, boxes):
    g = mapg.shape[-1]; i = int(mapg.argmax()); y, x = (i // g + 0.5) / g, (i % g + 0.5) / g
    return any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in boxes)

def evaluate(split, d):
    model.eval(); hits = []; groups = defaultdict(list)
    with torch.no_grad(), model.reading_backbone_features():
        for i in range(0, len(d["ids"]), 64):
            out = model.localize(d["images"][0][i:i+64].float(), d["audio"][0][i:i+64].float())
            for j in range(out["aud"].shape[0]):
                k = i + j
                if d["no_source"][k]: continue
                m = out["aud"][j] if a.model == "jsa" else out["aud"][j]
                h = peak_in(m, d["boxes"][k]); hits.append(h)
                g = d["meta"][k].get("group")
                if g is not None: groups[g].append(h)
    model.train()
    r = {"pointing": round(100 * sum(hits) / max(1, len(hits)), 1)}
    if groups: r["follows"] = round(100 * sum(all(v) for v in groups.values()) / len(groups), 1)
    return r

from jsa_rt.model import losses as L
import jsa_rt.model.jsa as J
GROUP = {}
gid = torch.full((n,), -1, dtype=torch.long)
for i, m in enumerate(tr["meta"]):
    g = m.get("group")
    if g: gid[i] = GROUP.setdefault(g, len(GROUP))
units = {}
for i in range(n):
    units.setdefault(int(gid[i]) if gid[i] >= 0 else -1 - i, []).append(i)
units = list(units.values())
print("units", len(units), "grouped items", int((gid >= 0).sum()), flush=True)
CUR = {}
orig_loc = L.localisation_mil_loss
def loc_masked(query, keys, scale, tau):
    margin = (query[:, 0] - query[:, 1]).float() * scale
    S = torch.einsum("id,jnd->ijn", margin, keys.float()) / tau      # (B audio, B image, N)
    g = CUR["gid"]; same = (g[:, None] == g[None, :]) & (g[:, None] >= 0)
    eye = torch.eye(len(g), dtype=torch.bool)
    scores = S.amax(2)
    if a.mask: scores = scores.masked_fill(same & ~eye, float("-inf"))
    labels = torch.arange(len(g))
    loss = F.cross_entropy(scores, labels) + F.cross_entropy(scores.T, labels)
    if a.grp:
        # image i: at some token its own sound must beat the other sounds of its frame
        Sii = S.permute(1, 0, 2)                                           # (image i, audio k, N)
        masked = Sii.masked_fill(~(same | eye)[:, :, None], float("-inf"))
        lp = S.diagonal(0, 0, 1).T - masked.logsumexp(1)                   # (B, N)
        has = same.sum(1) > 1
        if has.any():
            CUR["grp"] = -(lp[has].amax(1)).mean()
            loss = loss + a.grp * CUR["grp"]
    return loss
L.localisation_mil_loss = loc_masked
def batches():
    while True:
        order = torch.randperm(len(units)).tolist(); cur = []
        for u in order:
            cur += units[u]
            if len(cur) >= a.bs: yield torch.tensor(cur[:a.bs + 3]); cur = []
bgen = batches()
log = []
t0 = time.time(); step = 0; perm = torch.randperm(n); pos = 0; view = 0
model.train()
run_terms = defaultdict(float)
while step < a.steps:
    idx = next(bgen); view = (step * a.bs // n) % nviews; CUR["gid"] = gid[idx]
    with model.reading_backbone_features():
        img = tr["images"][view % len(tr["images"])][idx].float(); cov = COV[idx]
        if a.flip:
            f = torch.rand(len(idx)) < 0.5
            img = torch.where(f[:, None, None, None], img.flip(-1), img); cov = torch.where(f[:, None, None], cov.flip(-1), cov)
        total, terms = model.loss(img, tr["audio"][view][idx].float())
        if a.box:
            o = stash["out"]; q = o["audio"].query
            m = torch.einsum("bd,bnd->bn", (q[:, 0] - q[:, 1]) * model.slots.scale, o["image"].keys)
            terms["box"] = F.binary_cross_entropy_with_logits(m, cov.flatten(1))
            total = total + a.box * terms["box"]
    opt.zero_grad(); total.backward(); opt.step(); step += 1
    for k, v in terms.items(): run_terms[k] += float(v) / 50
    if 'grp' in CUR: run_terms['grp'] += float(CUR.pop('grp')) / 50
    if step % 50 == 0:
        print(step, f"{time.time()-t0:.0f}s", {k: round(v, 3) for k, v in run_terms.items()}, flush=True)
        run_terms = defaultdict(float)
    if step % a.eval_every == 0 or step == a.steps:
        res = {s: evaluate(s, d) for s, d in evals.items()}
        print("EVAL", step, res, flush=True); log.append({"step": step, **res})
json.dump({"args": vars(a), "log": log}, open(f"/tmp/s8/res_{a.name}.json", "w"))
torch.save(model.state_dict(), f"/tmp/s8/model_{a.name}.pt")
