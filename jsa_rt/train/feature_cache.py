"""Frozen backbones, run once: training that updates only what follows them.

With `freeze_encoders` the image and audio backbones are fixed functions of their inputs, so
their outputs for every training item can be computed once and reused each epoch. A step then
costs the projections, the slots and the losses only: on the 2-core dev CPU 55-70 samples/s,
against about 5 through EfficientNet-Lite0 and SoundNet-8. Each of `views` passes draws the
dataset's augmentation anew (crop, flip, colour, audio window); epoch e trains on view e % views. SpecAugment's masking of a
spectrogram, applied after the front end, is not part of a cached view.

With a `store` folder the views are also written to disk, one file per view, and read back by a
later run over the same items, views, seed and model settings (a `--resume`, or the next session):
caching 20,000 items takes about 13 minutes on that CPU, reading them back seconds. Before a stored
view is used, the first batch is recomputed and compared, so a changed backbone or augmentation
recomputes the cache instead of training on stale features.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..atomic import atomic_path
from .datasets import collate
from .progress import progress_bar


# The model settings that shape the backbones' fixed outputs, with the image backbone's fixed
# layers themselves (their strides and dilations: an output stride that only changes layers past
# the cut shares the store). Heads and losses do not, so runs that differ only there share a store
# (the weights themselves are checked on a first batch when a view is read back). The method's
# augmentation does: EZ-VSL crops and jitters differently.
BACKBONE_SETTINGS = ("image_encoder", "audio_encoder", "image_size", "sample_rate",
                     "audio_seconds", "n_fft", "hop_length", "log_offset", "log_scale", "image_tuned_blocks")


def cache_key(ds, model, views: int, seed: int) -> str:
    """What a stored cache depends on: the items, their augmentation, the views, the seed and the
    backbone settings."""
    backbones = {name: getattr(model.cfg, name) for name in BACKBONE_SETTINGS}
    backbones["image_fixed_layers"] = model.image_encoder.fixed_part()
    text = json.dumps({"ids": [s.id for s in ds.samples], "augmentation": ds.method, "views": views,
                       "seed": seed, "backbones": backbones}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FeatureCache(torch.utils.data.Dataset):
    """A training Dataset of backbone outputs, one stored copy per augmented view (fp16)."""

    def __init__(self, ds, model, views: int, seed: int, batch_size: int, num_workers: int,
                 device: torch.device, show_progress: bool = True, store: str | Path | None = None):
        if not model.cfg.freeze_encoders:
            raise ValueError("a feature cache needs frozen encoder backbones (model setting freeze_encoders)")
        self.samples = ds.samples
        self.images: list[torch.Tensor] = []
        self.audio: list[torch.Tensor] = []
        self.reused_views = 0
        folder = Path(store) / cache_key(ds, model, views, seed) if store else None
        bar = progress_bar(views * len(ds), "caching backbone features", "item", enabled=show_progress)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for view in range(views):
                ds.aug_seed = (seed, view)
                loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=num_workers,
                                                     collate_fn=collate)
                stored = self._read(folder, view, loader, model, device)
                if stored is not None:
                    image, audio = stored
                    self.reused_views += 1
                    bar.update(len(ds))
                else:
                    image, audio = self._compute(loader, model, device, bar)
                    if folder is not None:
                        with atomic_path(folder / f"view{view}.pt") as tmp:
                            torch.save({"image": image, "audio": audio}, tmp)
                self.images.append(image)
                self.audio.append(audio)
        bar.close()
        model.train(was_training)
        self.view = 0

    @staticmethod
    def _compute(loader, model, device, bar=None) -> tuple[torch.Tensor, torch.Tensor]:
        images, audio = [], []
        for batch in loader:
            if batch["errors"]:
                raise ValueError(f"unreadable training items: {batch['errors'][:3]}")
            image, wave = model.backbone_features(batch["image"].to(device), batch["audio"].to(device))
            images.append(image.half().cpu())
            audio.append(wave.half().cpu())
            if bar is not None:
                bar.update(len(batch["id"]))
        return torch.cat(images), torch.cat(audio)

    @staticmethod
    def _read(folder: Path | None, view: int, loader, model, device):
        """A stored view whose first batch matches a fresh computation of it, or None."""
        path = folder / f"view{view}.pt" if folder is not None else None
        if path is None or not path.is_file():
            return None
        try:
            stored = torch.load(path, weights_only=True)
        except Exception:                     # a damaged file is recomputed (and replaced)
            return None
        batch = next(iter(loader))
        image, audio = model.backbone_features(batch["image"].to(device), batch["audio"].to(device))
        n = len(batch["id"])
        same = (stored["image"].shape[0] == len(loader.dataset)
                and torch.allclose(stored["image"][:n].float(), image.cpu().half().float(), atol=2e-2, rtol=2e-2)
                and torch.allclose(stored["audio"][:n].float(), audio.cpu().half().float(), atol=2e-2, rtol=2e-2))
        return (stored["image"], stored["audio"]) if same else None

    # the trainer sets (seed, epoch) each epoch, as on the image Dataset: it picks the view
    @property
    def aug_seed(self):
        return None

    @aug_seed.setter
    def aug_seed(self, value) -> None:
        if value is not None:
            self.view = value[1] % len(self.images)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        return {"image": self.images[self.view][index].float(), "audio": self.audio[self.view][index].float(),
                "gt": torch.zeros(0), "has_gt": False, "no_source": s.no_source, "index": index,
                "id": s.id, "label": s.label}
