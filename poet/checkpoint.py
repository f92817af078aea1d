"""Reading and writing POET checkpoints: ours and the authors'.

Ours is a plain dict of tensors and primitives (loads with ``torch.load(weights_only=True)``)::

    {"format": "poet-edge", "format_version": 1, "config": {...}, "preprocess": {...},
     "model": state_dict, ...training state...}

The authors' files hold ``model`` (state dict) and ``args`` (an ``argparse.Namespace``). They are
read with the weights-only unpickler, allowing ``argparse.Namespace`` and nothing else, and the
architecture is taken from the tensors' shapes (``args`` can disagree: the released POET-R50 was
built with 25 queries while ``main.py`` defaults to 50).
"""

from __future__ import annotations

import argparse
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from poet.errors import CheckpointError
from poet.fileio import atomic_path
from poet.model.config import PoetConfig
from poet.model.poet import POET
from poet.processing import PreprocessConfig

FORMAT_NAME = "poet-edge"
FORMAT_VERSION = 1
# The authors evaluate at short side 800; a square 800 canvas holds any aspect ratio at that scale or below.
AUTHORS_PREPROCESS = PreprocessConfig(input_size=(800, 800))
# (blocks per stage, bottleneck blocks) -> torchvision ResNet name.
_RESNETS: dict[tuple[tuple[int, ...], bool], str] = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}


@dataclass
class Checkpoint:
    """What a checkpoint file holds, whichever format it came in."""

    config: PoetConfig
    preprocess: PreprocessConfig
    state_dict: dict[str, torch.Tensor]
    source_format: str
    extra: dict[str, Any] = field(default_factory=dict)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(
            f"{path} is not a readable POET checkpoint ({type(error).__name__}: {detail}); expected a torch.save "
            "file holding a 'model' state dict, in poet-edge's or the authors' format"
        ) from error


def _strip_prefix(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {key.removeprefix("module."): value for key, value in state.items()}


def _count_layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in state if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def config_from_state_dict(state: dict[str, torch.Tensor], hints: dict[str, Any] | None = None) -> PoetConfig:
    """Recover the architecture from tensor shapes; ``hints`` (e.g. the authors' args) fill in the rest."""
    hints = dict(hints or {})
    try:
        num_queries, hidden_dim = state["query_embed.weight"].shape
        dim_feedforward = state["transformer.encoder.layers.0.linear1.weight"].shape[0]
        stem_width = state["backbone.0.body.conv1.weight"].shape[0]
    except KeyError as missing:
        raise CheckpointError(f"state dict has no {missing} tensor: not a POET model") from None
    blocks = tuple(_count_layers(state, f"backbone.0.body.layer{stage}.") for stage in range(1, 5))
    backbone = _RESNETS.get((blocks, "backbone.0.body.layer1.0.conv3.weight" in state))
    if backbone is None:
        raise CheckpointError(f"unrecognised ResNet backbone with {blocks} blocks per stage")
    derived = {
        "backbone": backbone,
        "backbone_width": int(stem_width),
        "hidden_dim": int(hidden_dim),
        "num_queries": int(num_queries),
        "dim_feedforward": int(dim_feedforward),
        "enc_layers": _count_layers(state, "transformer.encoder.layers."),
        "dec_layers": _count_layers(state, "transformer.decoder.layers."),
        "pre_norm": "transformer.encoder.norm.weight" in state,
        "position_embedding": "learned" if "backbone.1.row_embed.weight" in state else "sine",
        "frozen_batchnorm": "backbone.0.body.bn1.num_batches_tracked" not in state,
    }
    for key, value in derived.items():
        if key in hints and hints[key] != value:
            warnings.warn(
                f"checkpoint args say {key}={hints[key]!r} but its weights have {value!r}; using the weights",
                stacklevel=3,
            )
        hints[key] = value
    return PoetConfig.from_dict(hints)


def _authors_hints(args: Any) -> dict[str, Any]:
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    known = ("backbone", "dilation4", "dilation5", "nheads", "dropout", "num_queries", "hidden_dim")
    known_more = ("enc_layers", "dec_layers", "dim_feedforward", "pre_norm", "position_embedding")
    hints = {k: values[k] for k in known + known_more if k in values}
    if "aux_loss" in values:
        hints["aux_loss"] = bool(values["aux_loss"])
    if "lr_backbone" in values:
        hints["train_backbone"] = float(values["lr_backbone"]) > 0
    return hints


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read either format into a :class:`Checkpoint` (no model is built)."""
    path = Path(path)
    raw = _read(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, expected a dict with a 'model' state dict")
    if raw.get("format") == FORMAT_NAME:
        if int(raw.get("format_version", 0)) > FORMAT_VERSION:
            raise CheckpointError(f"{path} was written by a newer poet-edge (format {raw['format_version']})")
        try:
            config = PoetConfig.from_dict(raw["config"])
            preprocess = PreprocessConfig.from_dict(raw["preprocess"])
            state = raw["model"]
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path} is a damaged poet-edge checkpoint: {error}") from error
        extra = {k: v for k, v in raw.items() if k not in ("format", "format_version", "config", "preprocess", "model")}
        return Checkpoint(config, preprocess, state, FORMAT_NAME, extra)
    if "model" not in raw or not isinstance(raw["model"], dict):
        keys = ", ".join(sorted(map(str, raw))[:8]) or "none"
        raise CheckpointError(f"{path} has no 'model' state dict (keys found: {keys})")
    state = _strip_prefix(raw["model"])
    config = config_from_state_dict(state, _authors_hints(raw.get("args")))
    extra = {k: v for k, v in raw.items() if k != "model"}
    return Checkpoint(config, AUTHORS_PREPROCESS, state, "authors", extra)


def model_from_checkpoint(checkpoint: Checkpoint, source: str | Path = "checkpoint") -> POET:
    model = POET(checkpoint.config, checkpoint.preprocess)
    result = model.load_state_dict(checkpoint.state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{source} does not match the POET architecture it describes: "
            f"{len(result.missing_keys)} missing tensors (first: {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected (first: {result.unexpected_keys[:3]})"
        )
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu", input_size: tuple[int, int] | None = None) -> POET:
    """Load a POET checkpoint (ours or the authors') in eval mode; ``input_size`` overrides the letterbox size."""
    checkpoint = read_checkpoint(path)
    if input_size is not None:
        checkpoint.preprocess = PreprocessConfig(input_size, checkpoint.preprocess.mean, checkpoint.preprocess.std)
    return model_from_checkpoint(checkpoint, path).to(device).eval()


def save_checkpoint(path: str | Path, model: POET, **extra: Any) -> None:
    """Write our format atomically; ``extra`` carries training state (optimizer, epoch, RNG states...)."""
    payload: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "preprocess": model.preprocess.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
