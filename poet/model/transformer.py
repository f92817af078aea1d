"""DETR's encoder-decoder transformer, as the authors' POET uses it, post-norm by default.

Positional encodings are added to queries and keys only, never to values, which is why the
layers are written here rather than taken from ``torch.nn.Transformer``. Sequences are (L, B, C).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from poet.model.config import PoetConfig


def _with_position(tensor: torch.Tensor, position: torch.Tensor | None) -> torch.Tensor:
    return tensor if position is None else tensor + position


class _AttentionBlocks(nn.Module):
    """What encoder and decoder layers share: ``blocks`` residual blocks (attention ones, then the feed-forward
    one), each with its ``normN`` and ``dropoutN``, under the authors' parameter names."""

    # Made by _add_blocks (the encoder has two blocks, the decoder three).
    norm1: nn.LayerNorm
    norm2: nn.LayerNorm
    norm3: nn.LayerNorm
    dropout1: nn.Dropout
    dropout2: nn.Dropout
    dropout3: nn.Dropout

    def _add_blocks(self, width: int, hidden: int, dropout: float, pre_norm: bool, blocks: int) -> None:
        # Created after the attention modules and in this order, so a seed gives the authors' initial weights.
        self.linear1 = nn.Linear(width, hidden)
        self.linear2 = nn.Linear(hidden, width)
        for index in range(1, blocks + 1):
            self.add_module(f"norm{index}", nn.LayerNorm(width))
        self.dropout = nn.Dropout(dropout)
        for index in range(1, blocks + 1):
            self.add_module(f"dropout{index}", nn.Dropout(dropout))
        self.pre_norm = pre_norm

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))


class EncoderLayer(_AttentionBlocks):
    """Self-attention over the flattened feature map, then a feed-forward block."""

    def __init__(self, width: int, heads: int, hidden: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout)
        self._add_blocks(width, hidden, dropout, pre_norm, blocks=2)

    def forward(self, src: torch.Tensor, padding_mask: torch.Tensor | None, pos: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            normed = self.norm1(src)
            query = _with_position(normed, pos)
            src = src + self.dropout1(self.self_attn(query, query, normed, key_padding_mask=padding_mask)[0])
            return src + self.dropout2(self._feed_forward(self.norm2(src)))
        query = _with_position(src, pos)
        src = self.norm1(src + self.dropout1(self.self_attn(query, query, src, key_padding_mask=padding_mask)[0]))
        return self.norm2(src + self.dropout2(self._feed_forward(src)))


class DecoderLayer(_AttentionBlocks):
    """Query self-attention, cross-attention into the encoder memory, then a feed-forward block."""

    def __init__(self, width: int, heads: int, hidden: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(width, heads, dropout=dropout)
        self._add_blocks(width, hidden, dropout, pre_norm, blocks=3)

    def forward(
        self, tgt: Tensor, memory: Tensor, memory_mask: Tensor | None, pos: Tensor, query_pos: Tensor
    ) -> Tensor:
        if self.pre_norm:
            normed = self.norm1(tgt)
            query = normed + query_pos
            tgt = tgt + self.dropout1(self.self_attn(query, query, normed)[0])
            normed = self.norm2(tgt)
            attended = self.multihead_attn(normed + query_pos, memory + pos, memory, key_padding_mask=memory_mask)[0]
            tgt = tgt + self.dropout2(attended)
            return tgt + self.dropout3(self._feed_forward(self.norm3(tgt)))
        query = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(query, query, tgt)[0]))
        attended = self.multihead_attn(tgt + query_pos, memory + pos, memory, key_padding_mask=memory_mask)[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        return self.norm3(tgt + self.dropout3(self._feed_forward(tgt)))


class Encoder(nn.Module):
    def __init__(self, config: PoetConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(config.hidden_dim, config.nheads, config.dim_feedforward, config.dropout, config.pre_norm)
            for _ in range(config.enc_layers)
        )
        # Only the pre-norm variant has a final encoder norm (absent from the default checkpoint).
        self.norm = nn.LayerNorm(config.hidden_dim) if config.pre_norm else None

    def forward(self, src: torch.Tensor, padding_mask: torch.Tensor | None, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, padding_mask, pos)
        return src if self.norm is None else self.norm(src)


class Decoder(nn.Module):
    """Returns every layer's normalised output; the un-normalised output feeds the next layer."""

    def __init__(self, config: PoetConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(config.hidden_dim, config.nheads, config.dim_feedforward, config.dropout, config.pre_norm)
            for _ in range(config.dec_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_dim)

    def forward(
        self, tgt: Tensor, memory: Tensor, memory_mask: Tensor | None, pos: Tensor, query_pos: Tensor
    ) -> Tensor:
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_mask, pos, query_pos)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class Transformer(nn.Module):
    def __init__(self, config: PoetConfig) -> None:
        super().__init__()
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor, query_embed: torch.Tensor, pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features, pos [B,C,h,w]; mask [B,h,w]; query_embed [Q,C] -> decoder states [layers, B, Q, C] and
        the encoder memory [B,C,h,w] (as DETR's transformer returns it)."""
        batch = features.shape[0]
        src = features.flatten(2).permute(2, 0, 1)
        pos_seq = pos.flatten(2).permute(2, 0, 1)
        padding_mask = mask.flatten(1)
        query_pos = query_embed.unsqueeze(1).expand(-1, batch, -1)
        memory = self.encoder(src, padding_mask, pos_seq)
        states = self.decoder(torch.zeros_like(query_pos), memory, padding_mask, pos_seq, query_pos)
        return states.transpose(1, 2), memory.permute(1, 2, 0).reshape(features.shape)
