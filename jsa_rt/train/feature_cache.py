"""Frozen backbones, run once: training that updates only what follows them.

With `freeze_encoders` the image and audio backbones are fixed functions of their inputs, so
their outputs for every training item can be computed once and reused each epoch. A step then
costs the projections, the slots and the losses only: on the 2-core dev CPU 55-70 samples/s,
against about 5 through EfficientNet-Lite0 and SoundNet-8. Each of `views` passes draws the
dataset's augmentation anew (crop, flip, colour, audio window); epoch e trains on view e % views. SpecAugment's masking of a
spectrogram, applied after the front end, is not part of a cached view.
"""
from __future__ import annotations

import torch

from .datasets import collate
from .progress import progress_bar


class FeatureCache(torch.utils.data.Dataset):
    """A training Dataset of backbone outputs, one stored copy per augmented view (fp16)."""

    def __init__(self, ds, model, views: int, seed: int, batch_size: int, num_workers: int,
                 device: torch.device, show_progress: bool = True):
        if not model.cfg.freeze_encoders:
            raise ValueError("a feature cache needs frozen encoder backbones (model setting freeze_encoders)")
        self.samples = ds.samples
        self.images: list[torch.Tensor] = []
        self.audio: list[torch.Tensor] = []
        bar = progress_bar(views * len(ds), "caching backbone features", "item", enabled=show_progress)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for view in range(views):
                ds.aug_seed = (seed, view)
                loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=num_workers,
                                                     collate_fn=collate)
                images, audio = [], []
                for batch in loader:
                    if batch["errors"]:
                        raise ValueError(f"unreadable training items: {batch['errors'][:3]}")
                    image, wave = model.backbone_features(batch["image"].to(device), batch["audio"].to(device))
                    images.append(image.half().cpu())
                    audio.append(wave.half().cpu())
                    bar.update(len(batch["id"]))
                self.images.append(torch.cat(images))
                self.audio.append(torch.cat(audio))
        bar.close()
        model.train(was_training)
        self.view = 0

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
