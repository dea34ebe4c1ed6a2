"""Cache EfficientNet-Lite0 activations after block K (un-augmented frames) for partial fine-tuning."""
import sys, torch
from pathlib import Path
sys.path.insert(0, "/work/main")
from jsa_rt.config import PRESETS, with_variant
from jsa_rt.model import build_model
from jsa_rt.train.datasets import open_dataset, collate
torch.set_num_threads(2)
K = int(sys.argv[1]); splits = sys.argv[2].split(",")
cfg = with_variant(PRESETS["edge"].with_overrides(audio_encoder="soundnet8", freeze_encoders=True), "listen")
model = build_model(cfg, "jsa", pretrained=True).eval()
bb = model.image_encoder.backbone
for split in splits:
    ds = open_dataset("scenes", Path("/tmp/sc"), cfg, split, train=False)
    out = []
    with torch.no_grad():
        dl = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=1, collate_fn=collate)
        for i, b in enumerate(dl):
            h = torch.nn.functional.relu6(bb._bn0(bb._conv_stem(b["image"])))
            for blk in bb._blocks[:K]: h = blk(h)
            out.append(h.half())
            if i % 20 == 0: print(split, i * 32, flush=True)
    torch.save({"ids": [s.id for s in ds.samples], "images": torch.cat(out)}, f"/tmp/s8/blk{K}_{split}.pt")
    print("saved", split, flush=True)
