"""Reading and writing POET checkpoints: ours and the authors'.

Ours is a plain dict of tensors and primitives (loads with ``torch.load(weights_only=True)``)::

    {"format": "poet-edge", "format_version": 1, "config": {...}, "preprocess": {...},
     "model": state_dict, ...training state...}

The authors' files hold ``model`` (state dict) and ``args`` (an ``argparse.Namespace``). They are
read with the weights-only unpickler, allowing ``argparse.Namespace`` and nothing else, and the
architecture is taken from the tensors' shapes (``args`` can disagree: the released POET-R50 was
built with 25 queries while ``main.py`` defaults to 50).

Everything read is checked before a model is built, and every problem is one :class:`CheckpointError`
line naming the file, the record (``config``, ``args``, ``model``) and the field or tensor: a file that
is not a checkpoint at all (an ONNX model, a text file, a truncated download), a value of the wrong type,
an architecture that cannot exist, and tensors of other names or shapes than that architecture has.
"""

from __future__ import annotations

import argparse
import math
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from poet.checks import describe, did_you_mean
from poet.errors import CheckpointError
from poet.fileio import atomic_path, write_failed
from poet.model.config import POSITION_EMBEDDINGS, RESNET_NAMES, PoetConfig
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


# How a file that is not a checkpoint begins: torch.save writes a zip archive (or, before PyTorch 1.6, a
# pickle, which starts with the PROTO opcode 0x80).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"
# Tags that can follow ``ir_version`` (field 1) at the start of an ONNX ModelProto: fields 2-8, 14, 20, 25, 26.
_ONNX_NEXT_TAGS = (b"\x12", b"\x1a", b"\x22", b"\x28", b"\x32", b"\x3a", b"\x42", b"\x72")
_ONNX_NEXT_WIDE_TAGS = (b"\xa2\x01", b"\xca\x01", b"\xd2\x01")
_EXPECTED = "expected a torch.save file holding a 'model' state dict, in poet-edge's or the authors' format"


def _looks_like_onnx(head: bytes) -> bool:
    """Whether ``head`` starts like a serialized ONNX ModelProto: ``ir_version`` as a small varint, then a field."""
    if len(head) < 3 or head[0] != 0x08 or not 1 <= head[1] <= 30:
        return False
    return head[2:3] in _ONNX_NEXT_TAGS or head[2:4] in _ONNX_NEXT_WIDE_TAGS


def _not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be a torch.save file, told from its first bytes and its zip directory; None if it may be."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head:
        return f"{path} is not a readable POET checkpoint: the file is empty; {_EXPECTED}"
    if head.startswith(_ZIP_MAGIC):
        if zipfile.is_zipfile(path):
            return None
        return (
            f"{path} is not a readable POET checkpoint: the torch.save archive is truncated or damaged "
            "(its zip directory is missing: copy or download the file again)"
        )
    if head.startswith(_PICKLE_MAGIC):
        return None
    if _looks_like_onnx(head):
        return f"{path} is an ONNX model, not a PyTorch checkpoint; give it to poet-run --model"
    if path.suffix.lower() in (".engine", ".plan"):
        return f"{path} is a TensorRT engine, not a PyTorch checkpoint; give it to poet-run --model"
    if head.startswith(b"version https://git-lfs"):
        return f"{path} is a Git LFS pointer, not the checkpoint it stands for: fetch it with git lfs pull"
    return f"{path} is not a readable POET checkpoint: it is neither a torch.save archive nor a pickle; {_EXPECTED}"


def _torch_failure(path: Path, error: Exception) -> str:
    """torch.load's error as one line: the weights-only loader's refusal by what it refused, else the first line."""
    text = str(error).strip()
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if refused:
        return (
            f"{path} is not a readable POET checkpoint: it holds a pickled {refused.group(1)}, which the weights-only "
            "loader refuses (a checkpoint may hold tensors, numbers, strings and argparse.Namespace; code is never run)"
        )
    detail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else text
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return f"{path} is not a readable POET checkpoint ({reason}); {_EXPECTED}"


def _read(path: Path) -> Any:
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; expected a .pth file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    problem = _not_a_checkpoint(path)
    if problem:
        raise CheckpointError(problem)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        if error.filename is not None:  # the file itself could not be read (permissions, I/O): say so plainly
            raise
        raise CheckpointError(_torch_failure(path, error)) from error
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError... for damaged files
        raise CheckpointError(_torch_failure(path, error)) from error


def _what(value: Any) -> str:
    """A value as messages show it; tensors by shape, not by their numbers."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}"
    return describe(value)


def _state_dict(value: Any, path: Path, record: str) -> dict[str, torch.Tensor]:
    """``value`` checked to be a state dict: tensor names to tensors."""
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{path}: {record!r} is {_what(value)}, expected a state dict of tensors")
    for key, tensor in value.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path}: {record!r} has the key {describe(key)}; expected tensor names")
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: {record!r} entry {key!r} is {_what(tensor)}, expected a tensor")
    return dict(value)


def _strip_prefix(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {key.removeprefix("module."): value for key, value in state.items()}


def _count_layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in state if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


# The tensors the architecture is read from, with the dimensions each must have.
_SHAPE_SOURCES = {
    "query_embed.weight": (2, "(num_queries, hidden_dim)"),
    "transformer.encoder.layers.0.linear1.weight": (2, "(dim_feedforward, hidden_dim)"),
    "backbone.0.body.conv1.weight": (4, "(width, 3, 7, 7)"),
}


def config_from_state_dict(
    state: dict[str, torch.Tensor], hints: dict[str, Any] | None = None, source: str | Path = "checkpoint"
) -> PoetConfig:
    """Recover the architecture from tensor shapes; ``hints`` (e.g. the authors' args) fill in the rest.

    ``source`` names the file in errors (CheckpointError) and warnings.
    """
    hints = dict(hints or {})
    for key, (rank, meaning) in _SHAPE_SOURCES.items():
        if key not in state:
            raise CheckpointError(f"{source}: its state dict has no {key!r} tensor: not a POET model")
        if state[key].dim() != rank:
            raise CheckpointError(
                f"{source}: tensor {key!r} has shape {list(state[key].shape)}, expected {rank} dimensions {meaning}"
            )
    num_queries, hidden_dim = state["query_embed.weight"].shape
    dim_feedforward = state["transformer.encoder.layers.0.linear1.weight"].shape[0]
    stem_width = state["backbone.0.body.conv1.weight"].shape[0]
    blocks = tuple(_count_layers(state, f"backbone.0.body.layer{stage}.") for stage in range(1, 5))
    backbone = _RESNETS.get((blocks, "backbone.0.body.layer1.0.conv3.weight" in state))
    if backbone is None:
        raise CheckpointError(
            f"{source}: unrecognised ResNet backbone with {blocks} blocks per stage "
            f"(POET takes {', '.join(RESNET_NAMES)})"
        )
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
                f"{source}: checkpoint args say {key}={hints[key]!r} but its weights have {value!r}; using the weights",
                stacklevel=3,
            )
        hints[key] = value
    try:
        return PoetConfig.from_dict(hints)
    except ValueError as error:
        raise CheckpointError(f"{source}: its args and weights describe no valid POET: {error}") from None


# The authors' options poet-edge reads, and what each must be.
_AUTHORS_OPTIONS = (
    "backbone",
    "dilation4",
    "dilation5",
    "nheads",
    "dropout",
    "num_queries",
    "hidden_dim",
    "enc_layers",
    "dec_layers",
    "dim_feedforward",
    "pre_norm",
    "position_embedding",
    "aux_loss",
)


def _authors_hints(args: Any, source: str | Path = "checkpoint") -> dict[str, Any]:
    """The architecture options of the authors' ``args``, each checked for its type; CheckpointError names the field.

    Values that are valid but disagree with the weights are settled later (the weights win, with a warning).
    """
    if args is None:
        return {}
    if isinstance(args, argparse.Namespace):
        values = vars(args)
    elif isinstance(args, Mapping):
        values = dict(args)
    else:
        raise CheckpointError(f"{source}: 'args' is {_what(args)}, expected the authors' argparse.Namespace")
    hints = {k: values[k] for k in _AUTHORS_OPTIONS if k in values}
    try:
        hints = PoetConfig.check_types(hints)
    except ValueError as error:
        raise CheckpointError(f"{source}: args: {error}") from None
    for name, choices in (("backbone", RESNET_NAMES), ("position_embedding", POSITION_EMBEDDINGS)):
        if name in hints and hints[name] not in choices:
            raise CheckpointError(
                f"{source}: args: {name} must be one of {', '.join(choices)}, got {hints[name]!r}"
                + did_you_mean(hints[name], choices)
            )
    if "lr_backbone" in values:
        rate = values["lr_backbone"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or math.isnan(rate):
            raise CheckpointError(f"{source}: args: lr_backbone must be a number, got {describe(rate)}")
        hints["train_backbone"] = rate > 0
    return hints


def _expected_shapes(config: PoetConfig, preprocess: PreprocessConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the state dict of the POET ``config`` describes, without allocating it."""
    try:
        with torch.device("meta"):
            model = POET(config, preprocess)
    except (RuntimeError, NotImplementedError):  # pragma: no cover - an op without a meta kernel: build it for real
        model = POET(config, preprocess)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _dropped_on_load(key: str, expected: Mapping[str, Any]) -> bool:
    """A ``num_batches_tracked`` of a frozen batch norm: torchvision's FrozenBatchNorm2d drops it when loading."""
    module, _, name = key.rpartition(".")
    return name == "num_batches_tracked" and f"{module}.running_mean" in expected and key not in expected


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")


def check_state_dict(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    source: str | Path = "checkpoint",
    described_by: str = "it describes",
) -> None:
    """CheckpointError, one line naming ``source``, unless ``state`` has exactly the tensors and shapes of ``expected``.

    Missing and unexpected tensors are counted with the first few names; otherwise the first tensor of another
    shape is named with its shape, the shape the architecture needs and how many more differ.
    """
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected and not _dropped_on_load(key, expected)]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match the POET architecture {described_by}: "
            f"{len(missing)} missing tensor{'' if len(missing) == 1 else 's'}"
            f"{f' (first: {_names(missing)})' if missing else ''}, "
            f"{len(unexpected)} unexpected{f' (first: {_names(unexpected)})' if unexpected else ''}"
        )
    wrong = [key for key, shape in expected.items() if tuple(state[key].shape) != tuple(shape)]
    if wrong:
        key = wrong[0]
        more = f" (and {len(wrong) - 1} more tensors of other shapes)" if len(wrong) > 1 else ""
        raise CheckpointError(
            f"{source} does not match the POET architecture {described_by}: tensor {key!r} has shape "
            f"{list(state[key].shape)} but that architecture needs {list(expected[key])}{more}"
        )


def load_weights(model: POET, state: Mapping[str, torch.Tensor], source: str | Path = "checkpoint") -> None:
    """Load ``state`` into ``model`` after :func:`check_state_dict` (names and shapes), so a mismatch is one line."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    check_state_dict(state, expected, source, "of the model it is loaded into")
    model.load_state_dict(dict(state))


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read either format into a :class:`Checkpoint` (no model is built)."""
    path = Path(path)
    raw = _read(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds {_what(raw)}, expected a dict with a 'model' state dict")
    if raw.get("format") == FORMAT_NAME:
        version = raw.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise CheckpointError(
                f"{path}: format_version must be a whole number of at least 1, got {describe(version)}"
            )
        if version > FORMAT_VERSION:
            raise CheckpointError(f"{path} was written by a newer poet-edge (format {version})")
        missing = [key for key in ("config", "preprocess", "model") if key not in raw]
        if missing:
            raise CheckpointError(f"{path} is a damaged poet-edge checkpoint: it has no {missing[0]!r} entry")
        try:
            config = PoetConfig.from_dict(raw["config"])
        except ValueError as error:
            raise CheckpointError(f"{path}: config: {error}") from None
        try:
            preprocess = PreprocessConfig.from_dict(raw["preprocess"], "preprocess")
        except ValueError as error:
            raise CheckpointError(f"{path}: {error}") from None
        state = _state_dict(raw["model"], path, "model")
        check_state_dict(state, _expected_shapes(config, preprocess), path, "its config describes")
        extra = {k: v for k, v in raw.items() if k not in ("format", "format_version", "config", "preprocess", "model")}
        return Checkpoint(config, preprocess, state, FORMAT_NAME, extra)
    if "model" not in raw or not isinstance(raw["model"], Mapping):
        keys = ", ".join(sorted(map(str, raw))[:8]) or "none"
        raise CheckpointError(f"{path} has no 'model' state dict (keys found: {keys})")
    state = _strip_prefix(_state_dict(raw["model"], path, "model"))
    config = config_from_state_dict(state, _authors_hints(raw.get("args"), path), path)
    check_state_dict(state, _expected_shapes(config, AUTHORS_PREPROCESS), path, "its weights and args describe")
    extra = {k: v for k, v in raw.items() if k != "model"}
    return Checkpoint(config, AUTHORS_PREPROCESS, state, "authors", extra)


def model_from_checkpoint(checkpoint: Checkpoint, source: str | Path = "checkpoint") -> POET:
    """The POET ``checkpoint`` describes, with its weights (checked by name and shape: one CheckpointError line)."""
    model = POET(checkpoint.config, checkpoint.preprocess)
    load_weights(model, checkpoint.state_dict, source)
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu", input_size: tuple[int, int] | None = None) -> POET:
    """Load a POET checkpoint (ours or the authors') in eval mode; ``input_size`` overrides the letterbox size."""
    checkpoint = read_checkpoint(path)
    if input_size is not None:
        checkpoint.preprocess = PreprocessConfig(input_size, checkpoint.preprocess.mean, checkpoint.preprocess.std)
    return model_from_checkpoint(checkpoint, path).to(device).eval()


# torch.save writes through its C++ stream writer, whose failures (a full disk, an I/O error) are RuntimeErrors,
# not OSErrors: "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534", "PytorchStreamWriter
# failed writing file data/0: file write failed", and from the C++ stream itself "basic_ios::clear: iostream error".
_WRITER_FAILURES = ("inline_container", "PytorchStreamWriter", "basic_ios::clear")


def save_checkpoint(path: str | Path, model: POET, **extra: Any) -> None:
    """Write our format atomically; ``extra`` carries training state (optimizer, epoch, RNG states...).

    A failed write is an :class:`OutputError` naming ``path`` and the cause; an earlier file there is kept.
    """
    payload: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "preprocess": model.preprocess.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as error:
            if not any(mark in str(error) for mark in _WRITER_FAILURES):
                raise  # not a failed write: a bug, which keeps its traceback
            raise write_failed(Path(path), tmp.parent, f"torch.save failed ({error})") from None
