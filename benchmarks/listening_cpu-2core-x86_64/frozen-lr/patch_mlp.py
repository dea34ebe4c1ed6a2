"""Experiment patch: a 2-layer MLP head (1x1 convs) instead of the single 1x1 projection."""
from torch import nn
def patch(model, hidden=512):
    enc = model.image_encoder; conv = enc.proj
    enc.proj = nn.Sequential(nn.Conv2d(conv.in_channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, conv.out_channels, 1))
    aenc = model.audio_encoder; bn, aconv = aenc.proj[0], aenc.proj[1]
    aenc.proj = nn.Sequential(bn, nn.Conv1d(aconv.in_channels, hidden, 1), nn.ReLU(), nn.Conv1d(hidden, aconv.out_channels, 1))
    return model
