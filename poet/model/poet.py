"""POET: ResNet features -> 1x1 projection -> transformer -> class and keypoint heads on every decoder layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from poet.model.backbone import ResNetBody
from poet.model.config import PoetConfig
from poet.model.position_encoding import build_position_encoding
from poet.model.refine import REFINEMENT_STAGES, KeypointRefiner
from poet.model.transformer import Transformer
from poet.processing import KEYPOINT_OUTPUTS, NUM_CLASSES, PreprocessConfig


class KeypointHead(nn.Module):
    """Three-layer MLP (ReLU between layers) from a query state to the 53 keypoint values."""

    def __init__(self, width: int, outputs: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList((nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, outputs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else torch.relu(layer(x))
        return x


class BackboneWithPosition(nn.ModuleList):
    """Slot 0 is the ResNet body, slot 1 the position encoding: the authors' ``backbone.0`` / ``backbone.1`` keys."""

    def __init__(self, config: PoetConfig) -> None:
        super().__init__((ResNetBody(config), build_position_encoding(config.position_embedding, config.hidden_dim)))

    @property
    def body(self) -> ResNetBody:
        body = self[0]
        assert isinstance(body, ResNetBody)
        return body

    def forward(
        self, images: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Features, their padding mask and position encoding, and every ResNet stage's map by name (the
        finer ones only with keypoint refinement).
        ``mask`` None means no padding: the ResNet then has none to zero (a sixth of a CPU training step)."""
        maps = self.body(images, mask)
        features = maps["0"]
        if mask is None:
            feature_mask = torch.zeros(features.shape[0], *features.shape[2:], dtype=torch.bool, device=images.device)
        else:
            feature_mask = F.interpolate(mask[None].float(), size=features.shape[-2:]).to(torch.bool)[0]
        return features, feature_mask, self[1](feature_mask).to(features.dtype), maps


def _image_extent(images: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[B, 2]: each unpadded image's (width, height) as fractions of the canvas (ones without padding)."""
    if mask is None:
        return images.new_ones(images.shape[0], 2)
    valid = ~mask
    columns = valid.any(dim=1).sum(dim=-1)
    rows = valid.any(dim=2).sum(dim=-1)
    return torch.stack((columns / mask.shape[-1], rows / mask.shape[-2]), dim=-1).to(images.dtype)


class POET(nn.Module):
    """The pose estimation transformer. ``forward(images, mask=None)`` -> ``pred_logits``, ``pred_kpts``.

    ``images`` is ``[B,3,H,W]`` already normalised; ``mask`` ``[B,H,W]`` is True on padding (None:
    no padding). ``pred_kpts`` is already passed through a sigmoid. With ``aux_loss`` the dict also
    holds ``aux_outputs`` for decoder layers 1..L-1, as the authors' model does in eval mode too.
    ``return_memory`` adds the encoder memory ``[B,C,h,w]`` as ``encoder_memory`` (for training-only heads).
    ``config`` and ``preprocess`` travel with the model so checkpoints and exporters can read them.
    """

    def __init__(self, config: PoetConfig, preprocess: PreprocessConfig | None = None) -> None:
        super().__init__()
        self.config = config
        self.preprocess = preprocess or PreprocessConfig()
        self.transformer = Transformer(config)
        self.class_embed = nn.Linear(config.hidden_dim, NUM_CLASSES + 1)
        self.kpt_embed = KeypointHead(config.hidden_dim, KEYPOINT_OUTPUTS)
        self.query_embed = nn.Embedding(config.num_queries, config.hidden_dim)
        self.input_proj = nn.Conv2d(config.backbone_channels, config.hidden_dim, kernel_size=1)
        self.backbone = BackboneWithPosition(config)
        # One refiner per finer map, coarse to fine (empty: the authors' POET).
        self.refiners = nn.ModuleDict(
            {
                stage: KeypointRefiner(config.stage_channels(stage), config.hidden_dim)
                for stage in (REFINEMENT_STAGES if config.keypoint_refinement else ())
            }
        )

    def forward(
        self, images: torch.Tensor, mask: torch.Tensor | None = None, return_memory: bool = False
    ) -> dict[str, object]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"POET expects images of shape [B,3,H,W], got {list(images.shape)}")
        features, feature_mask, pos, fine_maps = self.backbone(images, mask)
        states, memory = self.transformer(self.input_proj(features), feature_mask, self.query_embed.weight, pos)
        logits = self.class_embed(states)
        keypoints = self.kpt_embed(states).sigmoid()
        final_keypoints = keypoints[-1]
        if len(self.refiners):
            extent = _image_extent(images, mask)
            for stage, refiner in self.refiners.items():
                final_keypoints = refiner(final_keypoints, states[-1], fine_maps[stage], extent)
        outputs: dict[str, object] = {"pred_logits": logits[-1], "pred_kpts": final_keypoints}
        if self.config.aux_loss:
            outputs["aux_outputs"] = [
                {"pred_logits": layer_logits, "pred_kpts": layer_kpts}
                for layer_logits, layer_kpts in zip(logits[:-1], keypoints[:-1], strict=True)
            ]
        if return_memory:
            outputs["encoder_memory"] = memory
        return outputs


def build_model(config: PoetConfig | None = None, preprocess: PreprocessConfig | None = None) -> POET:
    """A freshly initialised POET (random weights; see ``load_backbone_weights`` for ImageNet ResNets)."""
    return POET(config or PoetConfig(), preprocess)
