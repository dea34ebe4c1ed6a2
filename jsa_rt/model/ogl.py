"""OGL, EZ-VSL's object-guided localisation prior (method.md section 5, step 5).

OBJ = channel mean of |layer4| of an ImageNet-pretrained ResNet-18 (a separate, frozen network:
the model's own image encoder is fine-tuned). The map is fused with the audio map like IQR:
norm(alpha * AUD + (1 - alpha) * OBJ). Needs the ImageNet weights as a local file.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from .encoders import ResNet18Trunk, find_resnet18_weights
from .maps import object_prior
from .torch_files import load_trunk


class ObjectPrior(nn.Module):
    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        path = find_resnet18_weights(weights)
        if path is None:
            raise CheckpointError("OGL needs ImageNet ResNet-18 weights: pass the path to torchvision's "
                                  "resnet18-f37072fd.pth (or set JSA_RESNET18_WEIGHTS)")
        self.trunk = ResNet18Trunk(3)
        load_trunk(self.trunk, path, "fc.", "torchvision ResNet-18 weights file",
                   "download torchvision's resnet18-f37072fd.pth again")
        self.trunk.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) ImageNet-normalised -> (B, g, g) object map."""
        return object_prior(self.trunk(images))
