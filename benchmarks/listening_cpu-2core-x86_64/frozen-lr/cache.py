"""Cache frozen backbone outputs (EffNet-Lite0 tokens map, SoundNet conv7) for scene splits."""
import sys, json, torch
from pathlib import Path
sys.path.insert(0, "/work/main")
from jsa_rt.config import PRESETS, with_variant
from jsa_rt.model import build_model
from jsa_rt.train.datasets import open_dataset, collate
torch.set_num_threads(2)
root = Path(sys.argv[1]); views = int(sys.argv[2]); splits = sys.argv[3].split(",")
cfg = with_variant(PRESETS["edge"].with_overrides(audio_encoder="soundnet8", freeze_encoders=True), "listen")
model = build_model(cfg, "jsa", pretrained=True).eval()
for split in splits:
    train = split == "train"
    ds = open_dataset("scenes", root, cfg, split, train=train)
    out = {"ids": [s.id for s in ds.samples], "labels": [s.label for s in ds.samples],
           "boxes": [s.boxes for s in ds.samples], "no_source": [s.no_source for s in ds.samples],
           "meta": [s.meta for s in ds.samples], "images": [], "audio": []}
    for view in range(views if train else 1):
        ds.aug_seed = (0, view)
        dl = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=1, collate_fn=collate)
        im, au = [], []
        with torch.no_grad():
            for i, b in enumerate(dl):
                assert not b["errors"], b["errors"][:3]
                im.append(model.image_encoder.backbone(b["image"]).half())
                au.append(model.audio_encoder.backbone(model.frontend(b["audio"])).half())
                print(split, view, i * 32, len(ds), flush=True)
        out["images"].append(torch.cat(im)); out["audio"].append(torch.cat(au))
    torch.save(out, f"/tmp/exp/cache_{split}.pt")
    print("saved", split, out["images"][0].shape, out["audio"][0].shape, flush=True)
