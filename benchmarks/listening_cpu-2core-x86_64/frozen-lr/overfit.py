import sys, torch
sys.path.insert(0, "/work/main")
from jsa_rt.config import PRESETS, with_variant
from jsa_rt.model import build_model
torch.set_num_threads(1); torch.manual_seed(0)
kind = sys.argv[1]
base = PRESETS["edge"].with_overrides(audio_encoder="soundnet8", freeze_encoders=True)
cfg = with_variant(base, "listen") if kind == "jsa" else base
model = build_model(cfg, kind, pretrained=True)
if len(sys.argv) > 3: import patch_bn; patch_bn.patch(model)
model.train()
d = torch.load("/tmp/exp/cache_pairs.pt", weights_only=False)
im, au = d["images"][0][:64].float(), d["audio"][0][:64].float()
params = [p for p in model.parameters() if p.requires_grad]
print("trainable", sum(p.numel() for p in params), "tau", cfg.tau)
opt = torch.optim.AdamW(params, lr=float(sys.argv[2]))
for step in range(101):
    with model.reading_backbone_features():
        total, terms = model.loss(im, au)
    opt.zero_grad(); total.backward()
    gn = sum(p.grad.norm()**2 for p in params if p.grad is not None) ** .5
    opt.step()
    if step % 20 == 0: print(step, {k: round(float(v), 3) for k, v in terms.items()}, "gradnorm %.4f" % gn)
