"""Spatial-broadcast decoder (training only): slots -> reconstruction of the encoder tokens.

Each slot plus a learned 2-D position embedding goes through an MLP whose last channel is a
mixing logit; a softmax over slots mixes the per-slot features into one token map.
"""
import torch
from torch import nn


class SpatialBroadcastDecoder(nn.Module):
    def __init__(self, dim: int, hidden: int, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width
        self.row_embed = nn.Embedding(height, dim // 2)
        self.col_embed = nn.Embedding(width, dim - dim // 2)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, dim + 1))

    def position_embedding(self) -> torch.Tensor:
        """(H*W, D): column embedding ++ row embedding, row-major like the tokens."""
        cols = self.col_embed.weight.unsqueeze(0).expand(self.height, -1, -1)
        rows = self.row_embed.weight.unsqueeze(1).expand(-1, self.width, -1)
        return torch.cat([cols, rows], dim=-1).flatten(0, 1)

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        """(B, S, D) -> (B, H*W, D)."""
        x = slots.unsqueeze(2) + self.position_embedding()          # (B, S, HW, D)
        out = self.mlp(x)
        features, logits = out[..., :-1], out[..., -1:]
        weights = logits.softmax(dim=1)                              # over slots
        return (weights * features).sum(dim=1)
