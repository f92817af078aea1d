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
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops.misc import FrozenBatchNorm2d

from poet.errors import CheckpointError
from poet.model.config import PoetConfig
from poet.model.refine import REFINEMENT_STAGES

TRAINABLE_STAGES = ("layer2", "layer3", "layer4")
# Block type and blocks per stage of each torchvision ResNet.
RESNET_LAYOUTS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
    "resnet152": (Bottleneck, [3, 8, 36, 3]),
}


class NarrowResNet(ResNet):
    """A torchvision ResNet whose stem has ``width`` channels instead of 64 (every stage scaled alike).

    Parameter names stay torchvision's. A quarter of the width is a thirteenth of the compute (ResNet-18 at
    128x128: 0.09 GFLOPs against 1.18), which is what lets a model learn from scratch on a laptop CPU; no
    ImageNet weights exist for such widths.
    """

    def __init__(self, config: PoetConfig, norm_layer: type[nn.Module]) -> None:
        block, layers = RESNET_LAYOUTS[config.backbone]
        width = config.backbone_width
        super().__init__(block, layers, norm_layer=norm_layer)
        self.inplanes, self.dilation = width, 1
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(width)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2, dilate=config.dilation4)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2, dilate=config.dilation5)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def build_resnet(config: PoetConfig) -> ResNet:
    """The configured ResNet, untrained: torchvision's own at width 64, else the narrow variant."""
    norm_layer = FrozenBatchNorm2d if config.frozen_batchnorm else nn.BatchNorm2d
    if config.backbone_width != 64:
        return NarrowResNet(config, norm_layer)
    resnet: ResNet = getattr(torchvision.models, config.backbone)(
        weights=None,
        replace_stride_with_dilation=[False, config.dilation4, config.dilation5],
        norm_layer=norm_layer,
    )
    return resnet


class ResNetBody(nn.Module):
    """The stem and the four residual stages of a torchvision ResNet; returns the stride-32 (or 16) map."""

    def __init__(self, config: PoetConfig) -> None:
        super().__init__()
        fine = REFINEMENT_STAGES if config.keypoint_refinement else ()
        layers = {"layer4": "0", **{stage: stage for stage in fine}}
        self.body = IntermediateLayerGetter(build_resnet(config), return_layers=layers)
        for name, parameter in self.body.named_parameters():
            # With pretrained (frozen-BN) weights the stem and layer1 stay frozen (authors' rule).
            in_trained_stage = not config.frozen_batchnorm or any(stage in name for stage in TRAINABLE_STAGES)
            parameter.requires_grad_(config.train_backbone and in_trained_stage)

        self.padding_invariant = config.padding_invariant
        self._valid: dict[tuple[int, int], torch.Tensor] = {}  # bool, True on image, per feature-map size
        if config.padding_invariant:
            for module in self.body.modules():
                spatial = isinstance(module, nn.MaxPool2d) or (
                    isinstance(module, nn.Conv2d) and max(module.kernel_size) > 1
                )
                if spatial:
                    module.register_forward_pre_hook(self._zero_padding)

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``"0"``: the stride-32 (or 16) map; with ``keypoint_refinement`` also the finer maps it reads, by stage.
        ``mask`` [B,H,W] True on padding; with it and ``padding_invariant`` the padding cannot leak in."""
        if mask is not None and self.padding_invariant:
            self._valid = {(int(mask.shape[-2]), int(mask.shape[-1])): ~mask[:, None]}
        try:
            return dict(self.body(images))
        finally:
            self._valid = {}

    def _zero_padding(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        """Zero what lies on padding in a convolution's or pooling's input, as if the image ended there.

        Post-ReLU inputs are non-negative, so a zero costs max-pooling nothing either. A stride-2 layer
        keeps cell i from pixel 2i, so the valid cells at each resolution are the mask sliced ``[::2]``
        (ceil(h/2) of them, exactly the unpadded map's size).
        """
        if not self._valid:
            return None
        inputs = args[0]
        size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
        if size not in self._valid:
            # Layers run from fine to coarse, so the smallest map cached so far is the one to slice on from.
            valid = min(self._valid.values(), key=lambda tensor: tensor.shape[-1])
            while tuple(valid.shape[-2:]) != size:
                if valid.shape[-2] < size[0] or valid.shape[-1] < size[1]:
                    raise RuntimeError(f"no stride-2 chain leads from the mask to a {size} feature map")
                valid = valid[..., ::2, ::2]
            self._valid[size] = valid
        return (inputs * self._valid[size].to(inputs.dtype), *args[1:])


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
