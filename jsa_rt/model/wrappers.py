"""Raw-in, maps-out wrappers around a jsa-rt model: what the ONNX graphs (and the torch backend)
compute, so every backend runs the same function.

Inputs, as a camera and a microphone deliver them:
  frame  uint8 (B, S, S, 3), RGB channel order, HWC (height, width, channel), S = cfg.image_size
  wave   float32 (B, cfg.num_samples), mono, at cfg.sample_rate, full scale [-1, 1]
The graph does the rest: /255, ImageNet mean/std, NHWC -> NCHW, the spectrogram (the model's
front end is a convolution with a fixed windowed DFT basis), both encoders, joint slot
attention, the maps, IQR fusion, bicubic upsampling and min-max normalisation.

fp16: `half_precision(model)` runs the encoders and the slot updates in fp16 but keeps three
islands in fp32: the audio front end (|STFT|^2 of a full-scale signal overflows fp16's 65504),
the slot softmax with its eps (1e-8 is 0 in fp16) and renormalisation (the model computes those
in fp32 whatever its dtype), and the map post-processing (upsampling, min-max with its eps).
Graph inputs and outputs stay fp32 (uint8 for the frame) whatever the precision.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


FRAME, WAVE = "frame", "wave"
AUDIO_QUERY, AUDIO_SLOT = "audio_query", "audio_slot"
MAP_OUTPUTS = ("heatmap", "aud", "img", "image_slot", "audio_slot", "confidence")
AUDIO_OUTPUTS = (AUDIO_QUERY, AUDIO_SLOT)
CHANNEL_ORDER = "RGB, HWC, uint8"


class _CastIn(nn.Module):
    """Runs the encoder `inner` in `dtype`: casts the input on the way in (the fp16 island
    boundary). It offers the encoder calls the models make, each with that cast."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def forward(self, x):
        return self.inner(x.to(self.dtype))

    def backbone(self, x):
        return self.inner.backbone(x.to(self.dtype))

    def tokens(self, features):
        return self.inner.tokens(features.to(self.dtype))

    def pooled_token(self, features):
        return self.inner.pooled_token(features.to(self.dtype))


def half_precision(model: nn.Module) -> nn.Module:
    """A copy of `model` with encoders and slot modules in fp16 and the fp32 islands kept
    (module docstring). The original model is untouched."""
    model = copy.deepcopy(model).float().eval()
    model.image_encoder = _CastIn(model.image_encoder.half(), torch.float16)
    model.audio_encoder = _CastIn(model.audio_encoder.half(), torch.float16)
    if hasattr(model, "slots"):
        model.slots.half()
    return model


def compute_dtype(model: nn.Module) -> torch.dtype:
    return torch.float16 if isinstance(model.image_encoder, _CastIn) else torch.float32


class _Base(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.dtype = compute_dtype(model)

    @staticmethod
    def _fp32(out: dict, names) -> tuple:
        # One tensor under two names (EZ-VSL's aud is its img) must stay two graph outputs:
        # a second output of the same value would take the first one's name.
        tensors, seen = [], set()
        for n in names:
            t = out[n].to(torch.float32)
            tensors.append(t.clone() if id(t) in seen else t)
            seen.add(id(t))
        return tuple(tensors)


class RawLocalizer(_Base):
    """(frame uint8 (B,S,S,3), wave (B,L)) -> heatmap, aud, img, image_slot, audio_slot, confidence."""

    def forward(self, frame, wave):
        out = self.model.localize(self.model.preprocess_frames(frame), wave.to(torch.float32))
        return self._fp32(out, MAP_OUTPUTS)


class RawAudioBranch(_Base):
    """wave (B,L) -> audio_query (B,S,D), audio_slot (B,D): refreshed at the audio rate."""

    def forward(self, wave):
        return self._fp32(self.model.audio_branch(wave.to(torch.float32)), AUDIO_OUTPUTS)


class RawVisualBranch(_Base):
    """(frame, audio_query, audio_slot) -> the same six outputs as RawLocalizer."""

    def forward(self, frame, audio_query, audio_slot):
        out = self.model.visual_branch(self.model.preprocess_frames(frame), audio_query.to(self.dtype),
                                       audio_slot.to(self.dtype))
        return self._fp32(out, MAP_OUTPUTS)


GRAPHS = {
    # name: (wrapper, input names, output names)
    "full": (RawLocalizer, (FRAME, WAVE), MAP_OUTPUTS),
    "audio": (RawAudioBranch, (WAVE,), AUDIO_OUTPUTS),
    "visual": (RawVisualBranch, (FRAME, AUDIO_QUERY, AUDIO_SLOT), MAP_OUTPUTS),
}
