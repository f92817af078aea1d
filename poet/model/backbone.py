"""ResNet feature extractor with frozen batch norm, laid out so the authors' keys load unchanged.

State-dict keys are ``backbone.0.body.<torchvision resnet name>``: ``backbone`` is a two-slot
container (feature body, position encoding), as in the authors' model.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

from poet.errors import CheckpointError
from poet.model.config import PoetConfig

TRAINABLE_STAGES = ("layer2", "layer3", "layer4")


class ResNetBody(nn.Module):
    """The stem and the four residual stages of a torchvision ResNet; returns the stride-32 (or 16) map."""

    def __init__(self, config: PoetConfig) -> None:
        super().__init__()
        resnet = getattr(torchvision.models, config.backbone)(
            weights=None,
            replace_stride_with_dilation=[False, config.dilation4, config.dilation5],
            norm_layer=FrozenBatchNorm2d if config.frozen_batchnorm else nn.BatchNorm2d,
        )
        self.body = IntermediateLayerGetter(resnet, return_layers={"layer4": "0"})
        for name, parameter in self.body.named_parameters():
            # With pretrained (frozen-BN) weights the stem and layer1 stay frozen (authors' rule).
            in_trained_stage = not config.frozen_batchnorm or any(stage in name for stage in TRAINABLE_STAGES)
            parameter.requires_grad_(config.train_backbone and in_trained_stage)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)["0"]


def load_backbone_weights(body: ResNetBody, path: str | Path) -> None:
    """Load torchvision ImageNet ResNet weights from a local file (nothing is downloaded at run time)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"backbone weights {path} not found. poet-edge never downloads weights: get the torchvision "
            "ImageNet file (e.g. resnet50-0676ba61.pth) on a machine with internet access and pass its local path."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path} is not a readable torchvision ResNet state dict: {error}") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, expected a ResNet state dict")
    wanted = body.body.state_dict()
    usable = {k: v for k, v in state.items() if k in wanted}
    missing = sorted(set(wanted) - set(usable))
    # The classifier (fc) is the only part of an ImageNet ResNet the POET body does not use.
    unexpected = sorted(k for k in state if k not in wanted and not k.startswith("fc.") and "num_batches" not in k)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the configured backbone: {len(missing)} tensors missing (first: {missing[:3]}), "
            f"{len(unexpected)} unexpected (first: {unexpected[:3]})"
        )
    mismatched = [k for k, v in usable.items() if tuple(v.shape) != tuple(wanted[k].shape)]
    if mismatched:
        raise CheckpointError(f"{path} has tensors of the wrong shape for this backbone: {mismatched[:3]}")
    body.body.load_state_dict(usable)
