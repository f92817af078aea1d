"""Mixed-precision and channels-last training: the choice per device and the losses against float32's."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from poet.errors import PoetError
from poet.model import PoetConfig, build_model
from poet.train import precision
from poet.train.config import parse_config
from poet.train.criterion import SetCriterion
from poet.train.precision import training_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def fast_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    """bfloat16 autocast on any CPU: emulated it is slow but computes the same numbers."""
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda: True)


def test_unset_amp_is_float16_with_a_scaler_on_cuda_and_float32_on_a_cpu():
    assert training_precision(None, "auto", CUDA) == precision.Precision(torch.float16, scaled=True)
    assert training_precision(None, "auto", CPU) == precision.Precision(None, scaled=False)
    assert training_precision(False, "auto", CUDA).dtype is None


def test_amp_on_a_cpu_is_bfloat16_without_a_scaler(fast_bfloat16):
    chosen = training_precision(True, "auto", CPU)
    assert chosen == precision.Precision(torch.bfloat16, scaled=False) and chosen.name == "bfloat16"
    assert training_precision(True, "bfloat16", CPU).dtype == torch.bfloat16


def test_amp_on_a_cpu_without_bfloat16_instructions_trains_in_float32_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="poet"):
        assert training_precision(True, "auto", CPU).dtype is None
    assert "no bfloat16 instructions" in caplog.text and "float32" in caplog.text


def test_float16_on_a_cpu_and_an_unknown_dtype_are_one_line_errors():
    with pytest.raises(PoetError, match="float16 is for CUDA GPUs"):
        training_precision(True, "float16", CPU)
    with pytest.raises(PoetError, match=r"--amp-dtype must be one of auto, float16, bfloat16, got 'half'"):
        training_precision(True, "half", CPU)
    with pytest.raises(PoetError, match="--amp-dtype must be one of"):
        parse_config(["--amp-dtype", "half"])


def test_flags_and_recipe_values():
    assert parse_config([]).amp is None
    assert parse_config(["--amp"]).amp is True and parse_config(["--no-amp"]).amp is False
    config = parse_config(["--amp", "--amp-dtype", "bfloat16", "--channels-last"])
    assert config.amp_dtype == "bfloat16" and config.channels_last
    recipe = parse_config(["--config", "synthetic-small"])
    assert recipe.amp is True and recipe.channels_last


def train_fixed_batch(config: PoetConfig, batch, autocast: bool, channels_last: bool, steps: int = 25) -> list[float]:
    """Loss per step of the same tiny POET on one batch, in float32 or under bfloat16 autocast."""
    torch.manual_seed(0)
    model = build_model(config).train()
    images = batch.images
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    criterion = SetCriterion(num_decoder_layers=2)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            outputs = model(images, batch.mask)
        outputs = {k: v.float() for k, v in outputs.items() if isinstance(v, torch.Tensor)}
        total = criterion.weighted_total(criterion(outputs, batch.targets))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    return losses


def test_bfloat16_and_channels_last_losses_track_float32s_on_a_fixed_batch(tiny_config, coco_batch):
    # Narrow and with trainable batch norm, so that 25 steps learn.
    config = dataclasses.replace(tiny_config, backbone_width=16, frozen_batchnorm=False, num_queries=8, dropout=0.0)
    reference = np.array(train_fixed_batch(config, coco_batch, autocast=False, channels_last=False))
    layout_only = np.array(train_fixed_batch(config, coco_batch, autocast=False, channels_last=True))
    mixed = np.array(train_fixed_batch(config, coco_batch, autocast=True, channels_last=True))
    # A memory layout changes only the order of sums: equal at first, then a few percent apart once the matching
    # of a step flips (measured: 2.6% at step 25). bfloat16 keeps 8 bits of mantissa in the forward pass.
    np.testing.assert_allclose(layout_only[:5], reference[:5], rtol=2e-3)
    np.testing.assert_allclose(layout_only, reference, rtol=0.05)
    assert mixed[0] == pytest.approx(reference[0], rel=0.01)
    np.testing.assert_allclose(mixed, reference, rtol=0.06)
    assert mixed[-5:].mean() == pytest.approx(reference[-5:].mean(), rel=0.04)
    assert mixed[-5:].mean() < 0.7 * mixed[:5].mean()
