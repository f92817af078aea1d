"""POET's architecture settings, saved with every checkpoint so a model rebuilds from the file alone."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from poet.checks import check_value, describe, did_you_mean

RESNET_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
POSITION_EMBEDDINGS = ("sine", "learned")


@dataclass(frozen=True)
class PoetConfig:
    """Defaults are the authors' ``main.py`` defaults; the released POET-R50 uses 25 queries."""

    backbone: str = "resnet50"
    # Channels of the ResNet stem (the stages have 2x, 4x, 8x as many). 64 is torchvision's and the only
    # width with ImageNet weights; 32 or 16 train from scratch 3-5x faster on a CPU (the synthetic recipe).
    backbone_width: int = 64
    dilation4: bool = False
    dilation5: bool = False
    train_backbone: bool = True
    # False swaps the authors' frozen batch norm for trainable BatchNorm and trains the whole backbone:
    # the way to train from scratch when no ImageNet weights are at hand (e.g. the synthetic recipe).
    frozen_batchnorm: bool = True
    # Zero the letterbox padding before every spatial convolution and pooling of the ResNet, so an image's
    # features, and so its poses, are those of the unpadded image whatever the padding (export and runtime
    # letterbox every photograph). False is the authors' model exactly, where padding leaks into the
    # features near the image's right and bottom edges; the weights are the same either way.
    padding_invariant: bool = True
    position_embedding: str = "sine"
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    pre_norm: bool = False
    num_queries: int = 50
    aux_loss: bool = True
    # Not in the authors' model: the final layer's keypoints are corrected from the stride-8 and stride-4
    # feature maps (poet/model/refine.py). False is the authors' POET.
    keypoint_refinement: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in RESNET_NAMES:
            raise ValueError(
                f"backbone must be one of {', '.join(RESNET_NAMES)}, got {self.backbone!r}"
                + did_you_mean(str(self.backbone), RESNET_NAMES)
            )
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(f"position_embedding must be 'sine' or 'learned', got {self.position_embedding!r}")
        for name in ("hidden_dim", "nheads", "enc_layers", "dec_layers", "num_queries", "dim_feedforward"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.hidden_dim % self.nheads:
            raise ValueError(
                f"nheads {self.nheads} does not divide hidden_dim {self.hidden_dim}: "
                "the attention splits hidden_dim evenly among the heads"
            )
        if self.hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (half per axis for the positions), got {self.hidden_dim}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be at least 0 and below 1, got {self.dropout}")
        if (self.dilation4 or self.dilation5) and self.backbone in ("resnet18", "resnet34"):
            raise ValueError(f"{self.backbone} has basic blocks, which cannot be dilated")
        if self.backbone_width < 8 or self.backbone_width % 8:
            raise ValueError(f"backbone_width must be a positive multiple of 8, got {self.backbone_width}")

    @property
    def backbone_channels(self) -> int:
        expansion = 1 if self.backbone in ("resnet18", "resnet34") else 4
        return 8 * self.backbone_width * expansion

    def stage_channels(self, stage: str) -> int:
        """Channels of a ResNet stage's output, ``layer1`` .. ``layer4``."""
        return self.backbone_channels // 2 ** (4 - int(stage.removeprefix("layer")))

    @property
    def backbone_description(self) -> str:
        """E.g. ``resnet18`` or ``resnet18 at width 32`` (for reports)."""
        return self.backbone if self.backbone_width == 64 else f"{self.backbone} at width {self.backbone_width}"

    @property
    def output_stride(self) -> int:
        return 32 // (2 ** (int(self.dilation5) + int(self.dilation4)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def check_types(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """The fields of ``data`` this version knows, each checked to be of its field's type (ValueError naming
        the first that is not); other keys (e.g. the authors' training options) are left out."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping of architecture fields, got {describe(data)}")
        types = typing.get_type_hints(cls)
        return {name: check_value(name, data[name], types[name]) for name in types if name in data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoetConfig:
        """Build from a dict, ignoring keys this version does not know (e.g. the authors' training options).

        Raises ValueError naming the field for a value of the wrong type or out of range.
        """
        return cls(**cls.check_types(data))

    def replace(self, **changes: Any) -> PoetConfig:
        return dataclasses.replace(self, **changes)
