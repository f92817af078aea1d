"""The POET network: the authors' exact parameter layout, training on CPU, full-size inference."""

from __future__ import annotations

import ast

import pytest
import torch

from poet.model import PoetConfig, build_model


def test_default_model_has_the_authors_state_dict_layout(state_dict_listing):
    model = build_model(PoetConfig())
    state = model.state_dict()
    parameters = dict(model.named_parameters())
    expected = []
    for line in state_dict_listing.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, kind, requires_grad = line.split("\t")
        expected.append(key)
        assert tuple(state[key].shape) == tuple(ast.literal_eval(shape)), key
        assert (key in parameters) == (kind == "param"), key
        if key in parameters:
            assert parameters[key].requires_grad == (requires_grad == "True"), key
    assert list(state) == expected
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 41_279_288
    assert sum(t.numel() for t in state.values()) == 41_607_928


@pytest.mark.parametrize(("backbone", "width"), [("resnet18", 16), ("resnet50", 8)])
def test_narrow_backbone_scales_every_stage_and_keeps_torchvisions_names(backbone, width):
    import torchvision

    config = PoetConfig(backbone=backbone, backbone_width=width, frozen_batchnorm=False)
    body = build_model(config).backbone.body.body
    standard = getattr(torchvision.models, backbone)(weights=None).state_dict()
    narrow = body.state_dict()
    assert set(narrow) == {k for k in standard if not k.startswith("fc.")}
    for key, tensor in narrow.items():
        if tensor.ndim:
            # Every channel count is the standard one scaled by width/64 (the RGB input stays 3).
            expected = [
                n if (key.endswith("conv1.weight") and i == 1 and n == 3) else n * width // 64
                for i, n in enumerate(standard[key].shape[:2])
            ]
            assert list(tensor.shape[:2]) == expected, key
    features = body(torch.randn(1, 3, 64, 96))["0"]
    assert features.shape == (1, config.backbone_channels, 2, 3)


def test_tiny_model_trains_forward_and_backward_on_cpu(tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config).train()
    images = torch.randn(2, 3, 96, 128)
    mask = torch.zeros(2, 96, 128, dtype=torch.bool)
    mask[1, 64:, :] = True
    outputs = model(images, mask)
    assert outputs["pred_logits"].shape == (2, 6, 3) and outputs["pred_kpts"].shape == (2, 6, 53)
    assert len(outputs["aux_outputs"]) == tiny_config.dec_layers - 1
    assert ((outputs["pred_kpts"] >= 0) & (outputs["pred_kpts"] <= 1)).all()
    loss = outputs["pred_logits"].logsumexp(-1).mean() + outputs["pred_kpts"].mean()
    loss = loss + sum(aux["pred_kpts"].mean() for aux in outputs["aux_outputs"])
    loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all("layer1" in n or "conv1" in n or ".bn1" in n or "body.bn1" in n for n in frozen)


@pytest.mark.parametrize(("backbone", "width"), [("resnet18", 83), ("resnet50", 128 - 40), ("resnet18", 128)])
def test_letterboxed_image_gives_the_unpadded_images_outputs(tiny_config, backbone, width):
    """Export and runtime letterbox every photograph: with the mask, padding must not change a thing."""
    torch.manual_seed(0)
    image = torch.randn(1, 3, 96, width)
    letterboxed = torch.zeros(1, 3, 96, 160)
    letterboxed[..., :width] = image
    mask = torch.ones(1, 96, 160, dtype=torch.bool)
    mask[..., :width] = False
    for invariant in (True, False):
        model = build_model(tiny_config.replace(backbone=backbone, padding_invariant=invariant)).eval()
        with torch.inference_mode():
            alone, padded = model(image), model(letterboxed, mask)
        difference = max((alone[k] - padded[k]).abs().max().item() for k in ("pred_logits", "pred_kpts"))
        if invariant:
            assert difference < 1e-5
        else:  # the authors' model: padding leaks through the ResNet's 3x3 convolutions
            assert difference > 1e-3


def test_frozen_backbone_when_not_training_it(tiny_config):
    model = build_model(tiny_config.replace(train_backbone=False))
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.transformer.parameters())


def test_resnet50_poet_at_512_runs_forward_on_cpu():
    torch.manual_seed(0)
    model = build_model(PoetConfig(num_queries=25)).eval()
    with torch.inference_mode():
        outputs = model(torch.randn(1, 3, 512, 512))
    assert outputs["pred_logits"].shape == (1, 25, 3) and outputs["pred_kpts"].shape == (1, 25, 53)
    assert torch.isfinite(outputs["pred_logits"]).all() and torch.isfinite(outputs["pred_kpts"]).all()
    assert len(outputs["aux_outputs"]) == 5
