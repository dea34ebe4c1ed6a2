import sys, torch, torch.nn.functional as F
sys.path.insert(0, "/work/main")
from pathlib import Path
from jsa_rt.model.checkpoint import load_checkpoint
from jsa_rt.train.datasets import open_dataset, collate
torch.set_num_threads(1)
for name in sys.argv[1:]:
    model, meta = load_checkpoint(f"/work/main/jsa_rt/weights/{name}.pt"); model.eval()
    ds = open_dataset("scenes", Path("/tmp/sc"), meta["config"], "pairs")
    b = collate([ds[i] for i in range(0, 96)])
    with torch.no_grad():
        out = model.audio_branch(b["audio"])
        q = out["audio_query"]
        m = q[:, 0] - q[:, 1]
        mn = F.normalize(m, dim=-1); c = mn @ mn.T
        off = c[~torch.eye(len(c), dtype=bool)]
        q0 = F.normalize(q[:, 0], dim=-1); c0 = (q0 @ q0.T)[~torch.eye(len(c), dtype=bool)]
        centered = F.normalize(m - m.mean(0), dim=-1); cc = (centered @ centered.T)[~torch.eye(len(c), dtype=bool)]
        print(name, "margin cos between clips: mean %.3f min %.3f | q0 cos %.3f | norm of mean/mean norm %.3f"
              % (off.mean(), off.min(), c0.mean(), m.mean(0).norm() / m.norm(dim=-1).mean()))
