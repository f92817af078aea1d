"""POET's architecture settings, saved with every checkpoint so a model rebuilds from the file alone."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

RESNET_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


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
            raise ValueError(f"backbone must be one of {', '.join(RESNET_NAMES)}, got {self.backbone!r}")
        if self.position_embedding not in ("sine", "learned"):
            raise ValueError(f"position_embedding must be 'sine' or 'learned', got {self.position_embedding!r}")
        if self.hidden_dim % self.nheads or self.hidden_dim % 2:
            raise ValueError(f"hidden_dim {self.hidden_dim} must be even and divisible by nheads {self.nheads}")
        if min(self.enc_layers, self.dec_layers, self.num_queries, self.dim_feedforward) < 1:
            raise ValueError("enc_layers, dec_layers, num_queries and dim_feedforward must be positive")
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
    def from_dict(cls, data: dict[str, Any]) -> PoetConfig:
        """Build from a dict, ignoring keys this version does not know (e.g. the authors' training options)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes: Any) -> PoetConfig:
        return dataclasses.replace(self, **changes)
