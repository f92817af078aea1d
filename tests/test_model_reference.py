"""Our POET forward pass against an independent re-implementation written from the authors' description.

The reference below is derived only from a written description of the authors' model (backbone, position
encoding, transformer, heads and their documented quirks), not from our code. It reads the model's ``state_dict()``
as plain tensors and never calls a forward method of ``poet.model``:

* the ResNet is torchvision's own, built with the *standard* ``nn.BatchNorm2d`` in eval mode and
  loaded from the FrozenBN buffers, so the FrozenBN arithmetic is checked rather than reused;
* the feature mask is downsampled with the nearest-neighbour index rule written out by hand;
* the sine position encoding is computed in numpy with loops, straight from the formulas;
* attention, LayerNorm, the post-norm encoder/decoder and both heads are explicit matmuls.

Our model's intermediate results are captured with forward hooks on modules named by the
official state-dict keys (``backbone.0``, ``backbone.1``, ``input_proj``, ``transformer.*``), so a
mismatch is reported at the first pipeline stage where it appears, not only in the final outputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torchvision
from torch import Tensor, nn

from poet.model import PoetConfig, build_model

# Final outputs must agree to this (float32 on CPU). Intermediate stages use the same bound relative
# to their magnitude, because raw backbone features are not bounded by 1.
TOLERANCE = 1e-4

SMALL_CONFIG = PoetConfig(
    backbone="resnet18",
    hidden_dim=64,
    nheads=4,
    enc_layers=2,
    dec_layers=3,
    dim_feedforward=128,
    num_queries=7,
    padding_invariant=False,
)
# The released POET-R50: the authors' defaults with 25 queries. padding_invariant=False is
# the authors' model exactly; tests/test_model.py checks what the default (True) changes: only padded inputs.
R50_CONFIG = PoetConfig(num_queries=25, padding_invariant=False)

BODY_PREFIX = "backbone.0.body."
BN_EPS = 1e-5
LAYER_NORM_EPS = 1e-5


# --------------------------------------------------------------------------------------------------
# Reference implementation. Works on (batch, length, channels) sequences, a
# different layout from the (length, batch, channels) one the authors' code uses internally.
# --------------------------------------------------------------------------------------------------


def reference_backbone(state: dict[str, Tensor], backbone: str, images: Tensor) -> Tensor:
    """Stem + layer1..layer4 of torchvision's ResNet with ordinary BatchNorm loaded from the FrozenBN buffers.

    Eval-mode ``nn.BatchNorm2d`` computes ``(x - mean) / sqrt(var + eps) * weight + bias``, the same
    function FrozenBN folds into one scale and shift, with eps 1e-5.
    """
    resnet = getattr(torchvision.models, backbone)(weights=None).eval()
    body = {name.removeprefix(BODY_PREFIX): t for name, t in state.items() if name.startswith(BODY_PREFIX)}
    missing, unexpected = resnet.load_state_dict(body, strict=False)
    assert not unexpected, f"backbone keys torchvision's {backbone} does not have: {unexpected[:3]}"
    # Only the classifier (dropped by the authors) and BN's step counters may be absent.
    assert all(k in ("fc.weight", "fc.bias") or k.endswith(".num_batches_tracked") for k in missing), missing
    assert all(m.eps == BN_EPS for m in resnet.modules() if isinstance(m, nn.BatchNorm2d))
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(images))))
    for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        x = layer(x)
    return x


def reference_feature_mask(mask: Tensor, height: int, width: int) -> Tensor:
    """Nearest-neighbour downsampling of the pixel mask: feature cell i reads pixel floor(i * in / out)."""
    in_height, in_width = mask.shape[-2:]
    rows = [i * in_height // height for i in range(height)]
    cols = [j * in_width // width for j in range(width)]
    return mask[:, rows][:, :, cols]


def reference_sine_encoding(mask: np.ndarray, hidden_dim: int) -> np.ndarray:
    """The normalised 2-D sine encoding (DETR's, normalised), one channel at a time; [B, hidden_dim, h, w].

    Positions are 1-based cumulative counts of valid cells, divided by the count in the last row
    (or column) plus 1e-6 and scaled to 2*pi; channel j uses frequency 10000^(2*floor(j/2)/F) with
    sin for even and cos for odd j; the F = hidden_dim/2 y channels come before the x channels.
    """
    batch, height, width = mask.shape
    features = hidden_dim // 2
    encoding = np.zeros((batch, hidden_dim, height, width), dtype=np.float64)
    for b in range(batch):
        valid = (~mask[b]).astype(np.float64)
        y_embed = np.cumsum(valid, axis=0)
        x_embed = np.cumsum(valid, axis=1)
        y_embed = y_embed / (y_embed[-1:, :] + 1e-6) * (2 * math.pi)
        x_embed = x_embed / (x_embed[:, -1:] + 1e-6) * (2 * math.pi)
        for j in range(features):
            wavelength = 10000.0 ** (2 * (j // 2) / features)
            wave = np.sin if j % 2 == 0 else np.cos
            encoding[b, j] = wave(y_embed / wavelength)
            encoding[b, features + j] = wave(x_embed / wavelength)
    return encoding


def linear(x: Tensor, state: dict[str, Tensor], prefix: str) -> Tensor:
    return x @ state[prefix + "weight"].T + state[prefix + "bias"]


def layer_norm(x: Tensor, state: dict[str, Tensor], prefix: str) -> Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    normalised = (x - mean) / torch.sqrt(variance + LAYER_NORM_EPS)
    return normalised * state[prefix + "weight"] + state[prefix + "bias"]


def attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    state: dict[str, Tensor],
    prefix: str,
    heads: int,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """nn.MultiheadAttention as matmuls: packed [q; k; v] projection, q scaled by 1/sqrt(head_dim).

    query [B, Lq, C], key and value [B, Lk, C]; ``key_padding_mask`` [B, Lk] is True on keys that
    must get zero weight (their score is set to -inf before the softmax).
    """
    batch, query_len, width = query.shape
    head_dim = width // heads
    weight, bias = state[prefix + "in_proj_weight"], state[prefix + "in_proj_bias"]
    q = query @ weight[:width].T + bias[:width]
    k = key @ weight[width : 2 * width].T + bias[width : 2 * width]
    v = value @ weight[2 * width :].T + bias[2 * width :]

    def split_heads(x: Tensor) -> Tensor:
        return x.reshape(batch, -1, heads, head_dim).transpose(1, 2)

    scores = split_heads(q / math.sqrt(head_dim)) @ split_heads(k).transpose(-1, -2)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    scores = scores - scores.amax(dim=-1, keepdim=True)
    weights = scores.exp()
    weights = weights / weights.sum(dim=-1, keepdim=True)
    attended = (weights @ split_heads(v)).transpose(1, 2).reshape(batch, query_len, width)
    return linear(attended, state, prefix + "out_proj.")


def feed_forward(x: Tensor, state: dict[str, Tensor], prefix: str) -> Tensor:
    return linear(torch.relu(linear(x, state, prefix + "linear1.")), state, prefix + "linear2.")


def count_layers(state: dict[str, Tensor], prefix: str) -> int:
    return len({name[len(prefix) :].split(".")[0] for name in state if name.startswith(prefix)})


@torch.no_grad()
def reference_forward(
    state: dict[str, Tensor], backbone: str, heads: int, images: Tensor, mask: Tensor | None = None
) -> dict[str, Tensor]:
    """POET's eval-mode forward from the description; returns every stage, heads for all decoder layers.

    ``logits`` [L, B, Q, 3] and ``kpts`` [L, B, Q, 53] hold decoder layers 1..L in order, so the
    last entry is the model's final output and the others are its ``aux_outputs``.
    """
    if mask is None:
        mask = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool)
    features = reference_backbone(state, backbone, images)
    batch, _, height, width = features.shape
    feature_mask = reference_feature_mask(mask, height, width)
    hidden_dim = state["query_embed.weight"].shape[1]
    pos = torch.from_numpy(reference_sine_encoding(feature_mask.numpy(), hidden_dim)).to(torch.float32)

    projection = state["input_proj.weight"][:, :, 0, 0]
    projected = torch.einsum("oc,bchw->bohw", projection, features) + state["input_proj.bias"][:, None, None]
    # Row-major flattening: sequence index = row * width + column.
    src = projected.flatten(2).transpose(1, 2)
    pos_seq = pos.flatten(2).transpose(1, 2)
    padding = feature_mask.flatten(1)

    memory = src
    for i in range(count_layers(state, "transformer.encoder.layers.")):
        prefix = f"transformer.encoder.layers.{i}."
        with_pos = memory + pos_seq
        attended = attention(with_pos, with_pos, memory, state, prefix + "self_attn.", heads, padding)
        memory = layer_norm(memory + attended, state, prefix + "norm1.")
        memory = layer_norm(memory + feed_forward(memory, state, prefix), state, prefix + "norm2.")

    query_pos = state["query_embed.weight"].unsqueeze(0).expand(batch, -1, -1)
    tgt = torch.zeros_like(query_pos)
    states = []
    for i in range(count_layers(state, "transformer.decoder.layers.")):
        prefix = f"transformer.decoder.layers.{i}."
        with_pos = tgt + query_pos
        attended = attention(with_pos, with_pos, tgt, state, prefix + "self_attn.", heads)
        tgt = layer_norm(tgt + attended, state, prefix + "norm1.")
        attended = attention(
            tgt + query_pos, memory + pos_seq, memory, state, prefix + "multihead_attn.", heads, padding
        )
        tgt = layer_norm(tgt + attended, state, prefix + "norm2.")
        tgt = layer_norm(tgt + feed_forward(tgt, state, prefix), state, prefix + "norm3.")
        # The heads see the shared final norm of each layer; the next layer gets the raw output.
        states.append(layer_norm(tgt, state, "transformer.decoder.norm."))
    decoded = torch.stack(states)

    hidden = torch.relu(linear(decoded, state, "kpt_embed.layers.0."))
    hidden = torch.relu(linear(hidden, state, "kpt_embed.layers.1."))
    return {
        "features": features,
        "feature_mask": feature_mask,
        "pos": pos,
        "projected": projected,
        "memory": memory,
        "decoded": decoded,
        "logits": linear(decoded, state, "class_embed."),
        "kpts": linear(hidden, state, "kpt_embed.layers.2.").sigmoid(),
    }


# --------------------------------------------------------------------------------------------------
# The model under test
# --------------------------------------------------------------------------------------------------


def randomised_model(config: PoetConfig, seed: int) -> nn.Module:
    """A model whose every tensor matters: random FrozenBN buffers and non-zero biases everywhere.

    Fresh FrozenBN buffers are the identity (mean 0, var 1, weight 1, bias 0) and attention biases
    start at zero, which would hide a wrong BN formula or a mis-split packed bias. BN weights are
    kept below 1 so even ResNet-50 features stay O(1), the same scale as the position encoding.
    """
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching other tests' RNG
        torch.manual_seed(seed)
        model = build_model(config).eval()
    generator = torch.Generator().manual_seed(seed)

    def uniform(like: Tensor, low: float, high: float) -> Tensor:
        return torch.rand(like.shape, generator=generator) * (high - low) + low

    def normal(like: Tensor, std: float) -> Tensor:
        return torch.randn(like.shape, generator=generator) * std

    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            if name.endswith(".running_var"):
                bn = name.removesuffix("running_var")
                state[bn + "running_var"].copy_(uniform(tensor, 0.5, 2.0))
                state[bn + "running_mean"].copy_(normal(tensor, 0.2))
                state[bn + "weight"].copy_(uniform(tensor, 0.3, 0.9))
                state[bn + "bias"].copy_(normal(tensor, 0.2))
            elif not name.startswith("backbone.") and name.endswith("bias"):
                tensor.copy_(normal(tensor, 0.1))
            elif ".norm" in name and name.endswith(".weight"):
                tensor.copy_(1.0 + normal(tensor, 0.1))
    return model


@contextmanager
def captured_stages(model: nn.Module) -> Iterator[dict[str, object]]:
    """Record our model's intermediate results via forward hooks on the officially named modules."""
    stages: dict[str, object] = {"decoded": []}

    def on_body(module: nn.Module, args: tuple, output: dict[str, Tensor]) -> None:
        stages["features"] = output["0"]

    def on_position(module: nn.Module, args: tuple, output: Tensor) -> None:
        stages["feature_mask"], stages["pos"] = args[0], output

    def on_projection(module: nn.Module, args: tuple, output: Tensor) -> None:
        stages["projected"] = output

    def on_last_encoder_layer(module: nn.Module, args: tuple, output: Tensor) -> None:
        stages["memory"] = output.transpose(0, 1)  # (L, B, C) internally, as DETR's transformer keeps it

    def on_decoder_norm(module: nn.Module, args: tuple, output: Tensor) -> None:
        stages["decoded"].append(output.transpose(0, 1))  # type: ignore[union-attr]

    hooks = [
        model.backbone[0].register_forward_hook(on_body),
        model.backbone[1].register_forward_hook(on_position),
        model.input_proj.register_forward_hook(on_projection),
        model.transformer.encoder.layers[-1].register_forward_hook(on_last_encoder_layer),
        model.transformer.decoder.norm.register_forward_hook(on_decoder_norm),
    ]
    try:
        yield stages
    finally:
        for hook in hooks:
            hook.remove()


def max_difference(ours: Tensor, reference: Tensor, stage: str) -> float:
    assert ours.shape == reference.shape, f"{stage}: shape {list(ours.shape)} vs {list(reference.shape)}"
    return (ours.detach().float() - reference.float()).abs().max().item()


def assert_matches_reference(
    model: nn.Module,
    images: Tensor,
    mask: Tensor | None = None,
) -> dict[str, float]:
    """Compare stage by stage in pipeline order; returns the max abs difference of each stage."""
    config = model.config
    reference = reference_forward(model.state_dict(), config.backbone, config.nheads, images, mask)
    with torch.no_grad(), captured_stages(model) as stages:
        outputs = model(images, mask)
    stages["decoded"] = torch.stack(stages["decoded"])

    assert torch.equal(stages["feature_mask"], reference["feature_mask"]), "feature masks differ"
    differences: dict[str, float] = {}
    for stage in ("features", "pos", "projected", "memory", "decoded"):
        differences[stage] = max_difference(stages[stage], reference[stage], stage)
        scale = max(1.0, reference[stage].abs().max().item())
        assert differences[stage] < TOLERANCE * scale, f"first disagreement at stage {stage}: {differences}"

    aux = outputs.get("aux_outputs", [])
    assert len(aux) == config.dec_layers - 1
    per_layer = [*aux, outputs]
    for key, reference_key in (("pred_logits", "logits"), ("pred_kpts", "kpts")):
        for layer, layer_outputs in enumerate(per_layer):
            stage = f"{key} (decoder layer {layer + 1})"
            differences[stage] = max_difference(layer_outputs[key], reference[reference_key][layer], stage)
            assert differences[stage] < TOLERANCE, f"{stage} disagrees: {differences}"
    return differences


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model() -> nn.Module:
    return randomised_model(SMALL_CONFIG, seed=0)


def test_small_model_matches_reference_without_mask(small_model: nn.Module) -> None:
    images = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    assert_matches_reference(small_model, images)


def test_small_model_matches_reference_with_padding_mask(small_model: nn.Module) -> None:
    """Image 0 is valid on 64x100 only: key padding masks and padded position encoding both matter."""
    images = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    images[0, :, 64:, :] = 0
    images[0, :, :, 100:] = 0
    mask = torch.zeros(2, 96, 128, dtype=torch.bool)
    mask[0, 64:, :] = True
    mask[0, :, 100:] = True
    assert_matches_reference(small_model, images, mask)


def test_released_r50_architecture_matches_reference() -> None:
    """The full-size POET-R50 (ResNet-50, 256 wide, 6+6 layers, FFN 2048, 25 queries) on one small image."""
    model = randomised_model(R50_CONFIG, seed=3)
    images = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(4))
    assert_matches_reference(model, images)


def lone_and_padded(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """A 64x96 image, the same image top-left in a zero 96x128 canvas, and the canvas's padding mask."""
    image = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(seed))
    canvas = torch.zeros(1, 3, 96, 128)
    canvas[:, :, :64, :96] = image
    mask = torch.ones(1, 96, 128, dtype=torch.bool)
    mask[:, :64, :96] = False
    return image, canvas, mask


def test_masking_makes_padding_invisible_after_the_backbone(small_model: nn.Module) -> None:
    """Facts section 14 #25: with the mask, padding changes nothing past the ResNet.

    The canvas run's backbone features are overwritten on the valid 2x3 cells with the lone run's
    features; the padded cells keep their own (non-zero) values. The position encoding, normalised
    by the valid counts, and the key padding masks must then make every output equal to the lone run.
    """
    image, canvas, mask = lone_and_padded(seed=5)
    with torch.no_grad(), captured_stages(small_model) as lone_stages:
        lone = small_model(image)
    lone_features = lone_stages["features"]

    def substitute_valid_features(module: nn.Module, args: tuple, output: dict[str, Tensor]) -> dict[str, Tensor]:
        features = output["0"].clone()
        features[:, :, :2, :3] = lone_features
        return {**output, "0": features}

    hook = small_model.backbone[0].register_forward_hook(substitute_valid_features)
    try:
        with torch.no_grad():
            padded = small_model(canvas, mask)
    finally:
        hook.remove()

    lone_layers, padded_layers = [*lone["aux_outputs"], lone], [*padded["aux_outputs"], padded]
    for lone_layer, padded_layer in zip(lone_layers, padded_layers, strict=True):
        for key in ("pred_logits", "pred_kpts"):
            assert (lone_layer[key] - padded_layer[key]).abs().max().item() < 1e-5


def test_conv_backbone_leaks_padding_into_valid_features(small_model: nn.Module) -> None:
    """End to end, padding is *not* invisible: an exporter may not pad and expect the unpadded poses.

    Nothing in the authors' description promises otherwise (their inference takes unpadded input, no mask). Even with a
    valid size that is a multiple of 32, the first stride-1 3x3 convolution (layer1) reads across the
    valid border: alone it sees its own zero padding, in the canvas it sees the previous layer's
    activations there. The ResNet's receptive field then spreads that into every valid feature cell.
    """
    image, canvas, mask = lone_and_padded(seed=5)
    with torch.no_grad(), captured_stages(small_model) as lone_stages:
        small_model(image)
    with torch.no_grad(), captured_stages(small_model) as padded_stages:
        small_model(canvas, mask)
    assert torch.equal(padded_stages["feature_mask"][:, :2, :3], torch.zeros(1, 2, 3, dtype=torch.bool))
    leak = (padded_stages["features"][:, :, :2, :3] - lone_stages["features"]).abs().amax(dim=1)
    assert (leak > 1e-3).all(), f"valid cells unaffected by padding: {leak}"
