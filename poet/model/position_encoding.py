"""2-D position encodings of the feature map, as in DETR and the authors' POET.

The sine encoding normalises by the count of unpadded positions in the last row/column, so padded
regions repeat the last valid value; exporters feed the padding mask to keep that exact.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinePositionEncoding(nn.Module):
    """Interleaved sin/cos of normalised cumulative row and column indices; y channels first."""

    def __init__(self, hidden_dim: int, temperature: float = 10000.0) -> None:
        super().__init__()
        self.features_per_axis = hidden_dim // 2
        self.temperature = temperature

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` [B,h,w] (True on padding) -> encoding [B, hidden_dim, h, w] in float32."""
        valid = (~mask).to(torch.float32)
        rows = valid.cumsum(dim=1)
        cols = valid.cumsum(dim=2)
        rows = rows / (rows[:, -1:, :] + 1e-6) * (2 * math.pi)
        cols = cols / (cols[:, :, -1:] + 1e-6) * (2 * math.pi)
        channel = torch.arange(self.features_per_axis, dtype=torch.float32, device=mask.device)
        wavelength = self.temperature ** (2 * torch.div(channel, 2, rounding_mode="floor") / self.features_per_axis)
        is_even = (channel % 2 == 0).view(1, 1, 1, -1)

        def encode(position: torch.Tensor) -> torch.Tensor:
            angle = position.unsqueeze(-1) / wavelength
            return torch.where(is_even, angle.sin(), angle.cos())

        return torch.cat((encode(rows), encode(cols)), dim=-1).permute(0, 3, 1, 2)


class LearnedPositionEncoding(nn.Module):
    """Learned row and column tables of 50 entries each; x (column) channels first."""

    max_positions = 50

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.row_embed = nn.Embedding(self.max_positions, hidden_dim // 2)
        self.col_embed = nn.Embedding(self.max_positions, hidden_dim // 2)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        batch, height, width = mask.shape
        if height > self.max_positions or width > self.max_positions:
            raise ValueError(f"learned position encoding supports at most 50x50 features, got {height}x{width}")
        cols = self.col_embed(torch.arange(width, device=mask.device))
        rows = self.row_embed(torch.arange(height, device=mask.device))
        grid = torch.cat((cols.unsqueeze(0).expand(height, -1, -1), rows.unsqueeze(1).expand(-1, width, -1)), dim=-1)
        return grid.permute(2, 0, 1).unsqueeze(0).expand(batch, -1, -1, -1)


def build_position_encoding(kind: str, hidden_dim: int) -> nn.Module:
    return SinePositionEncoding(hidden_dim) if kind == "sine" else LearnedPositionEncoding(hidden_dim)
