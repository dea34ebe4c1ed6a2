"""Experiment: centre the audio query by its mean over training sounds (PMI-style map), then run `jsa-rt eval`.
usage: BETA=1 python centre_eval.py CENTRE.pt <jsa-rt eval args...>;  python centre_eval.py --make CKPT DATA OUT.pt [N]"""
import os, sys
import torch, torch.nn.functional as F

if sys.argv[1] == "--make":
    from jsa_rt.model.checkpoint import load_checkpoint
    from jsa_rt.train.datasets import open_dataset
    ckpt, data, out = sys.argv[2:5]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 512
    model, meta = load_checkpoint(ckpt, device="cpu")
    model.eval()
    ds = open_dataset("scenes", data, meta["config"], "train", None)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n].tolist()
    qs = []
    with torch.no_grad():
        for s in range(0, len(idx), 32):
            wave = torch.stack([torch.as_tensor(ds[i]["audio"]) for i in idx[s:s + 32]])
            qs.append(model.audio_branch(wave)["audio_query"])
    q = torch.cat(qs)
    print("queries", q.shape, "norm of mean / mean norm of d=q0-q1:",
          ((q[:, 0] - q[:, 1]).mean(0).norm() / (q[:, 0] - q[:, 1]).norm(dim=-1).mean()).item())
    torch.save(q.mean(0), out)
    sys.exit(0)

centre = torch.load(sys.argv[1])
beta = float(os.environ.get("BETA", "1"))
import jsa_rt.model.checkpoint as ck
orig = ck.load_checkpoint
def patched(*a, **k):
    model, meta = orig(*a, **k)
    def localize(images, wave, alpha=None, object_prior=None):
        img, aud = model.slots.both(model.encode_image(images), model.encode_audio(wave))
        out = model._maps(img, aud.query - beta * centre.to(aud.query), F.normalize(aud.slots[:, 0], dim=-1), alpha)
        return model.fuse_object_prior(out, images, alpha, object_prior)
    model.localize = localize
    return model, meta
ck.load_checkpoint = patched
from jsa_rt.cli import main
sys.exit(main(["eval"] + sys.argv[2:]))
