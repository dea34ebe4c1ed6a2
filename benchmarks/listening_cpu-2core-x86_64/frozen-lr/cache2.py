"""Train split without image augmentation (boxes stay valid), 2 audio crops per item."""
import sys, random, torch, numpy as np
from pathlib import Path
sys.path.insert(0, "/work/main")
from jsa_rt.config import PRESETS, with_variant
from jsa_rt.model import build_model
from jsa_rt.train.datasets import open_dataset, collate, random_crop_audio
from jsa_rt.audio_io import load_audio
torch.set_num_threads(2)
root = Path(sys.argv[1]); split = sys.argv[2]; views = int(sys.argv[3])
cfg = with_variant(PRESETS["edge"].with_overrides(audio_encoder="soundnet8", freeze_encoders=True), "listen")
model = build_model(cfg, "jsa", pretrained=True).eval()
ds = open_dataset("scenes", root, cfg, split, train=False)
out = {"ids": [s.id for s in ds.samples], "labels": [s.label for s in ds.samples],
       "boxes": [s.boxes for s in ds.samples], "no_source": [s.no_source for s in ds.samples],
       "meta": [s.meta for s in ds.samples], "images": [None], "audio": []}
rng = random.Random(0)
im = []
with torch.no_grad():
    dl = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=1, collate_fn=collate)
    for i, b in enumerate(dl):
        im.append(model.image_encoder.backbone(b["image"]).half()); print("img", i * 32, flush=True)
    out["images"] = [torch.cat(im)]
    for v in range(views):
        au = []
        for i0 in range(0, len(ds), 32):
            waves = [random_crop_audio(load_audio(s.audio, cfg.sample_rate), cfg.num_samples, rng) for s in ds.samples[i0:i0 + 32]]
            w = torch.from_numpy(np.stack(waves).astype(np.float32))
            au.append(model.audio_encoder.backbone(model.frontend(w)).half()); print("aud", v, i0, flush=True)
        out["audio"].append(torch.cat(au))
torch.save(out, f"/tmp/exp/cache_{split}_plain.pt")
print("saved")
