"""Training options: one dataclass, read from YAML or TOML, every option also a command-line flag.

Precedence: built-in defaults < config file < flags. Defaults are the authors' ``main.py`` ones except
where a field says otherwise. ``--config`` takes a file or the name of a recipe shipped in the package
(``train/recipes/NAME.yaml``, read through importlib.resources so it works from any install).

Every value is checked before anything runs, whichever way it came: its type (a string, list, null or
boolean where a number is meant), its range (``epochs`` and ``batch_size`` at least 1, ``lr`` above 0,
probabilities within 0..1...), and the architecture it adds up to (``nheads`` dividing ``hidden_dim``,
a known backbone). A bad value is one :class:`PoetError` line naming the file (or the flag), the option
and what was expected; an unknown option names the closest known one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from poet.checks import check_value, describe, did_you_mean
from poet.errors import PoetError
from poet.model.config import POSITION_EMBEDDINGS, RESNET_NAMES, PoetConfig
from poet.processing import PreprocessConfig
from poet.train.precision import AMP_DTYPES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


_MODEL_DEFAULTS = PoetConfig()


@dataclass
class TrainConfig:
    # Data: a COCO-layout root, or explicit annotation files and image folders.
    data: str | None = None
    train_split: str = "train2017"
    val_split: str = "val2017"
    train_annotations: str | None = None
    train_images: str | None = None
    val_annotations: str | None = None
    val_images: str | None = None
    input_size: list[int] = field(default_factory=lambda: list(PreprocessConfig().input_size))
    # Model: the PoetConfig fields, with its defaults (one source, so the two cannot drift apart).
    backbone: str = _MODEL_DEFAULTS.backbone
    backbone_width: int = _MODEL_DEFAULTS.backbone_width
    frozen_batchnorm: bool = _MODEL_DEFAULTS.frozen_batchnorm
    padding_invariant: bool = _MODEL_DEFAULTS.padding_invariant
    dilation4: bool = _MODEL_DEFAULTS.dilation4
    dilation5: bool = _MODEL_DEFAULTS.dilation5
    position_embedding: str = _MODEL_DEFAULTS.position_embedding
    hidden_dim: int = _MODEL_DEFAULTS.hidden_dim
    nheads: int = _MODEL_DEFAULTS.nheads
    enc_layers: int = _MODEL_DEFAULTS.enc_layers
    dec_layers: int = _MODEL_DEFAULTS.dec_layers
    dim_feedforward: int = _MODEL_DEFAULTS.dim_feedforward
    dropout: float = _MODEL_DEFAULTS.dropout
    pre_norm: bool = _MODEL_DEFAULTS.pre_norm
    num_queries: int = _MODEL_DEFAULTS.num_queries
    aux_loss: bool = _MODEL_DEFAULTS.aux_loss
    keypoint_refinement: bool = _MODEL_DEFAULTS.keypoint_refinement
    backbone_weights: str | None = None
    finetune: str | None = None
    resume: str | None = None
    # Optimisation.
    epochs: int = 300
    batch_size: int = 2
    lr: float = 1e-4
    lr_backbone: float = 1e-5
    weight_decay: float = 1e-4
    lr_drops: list[int] = field(default_factory=lambda: [200])
    lr_gamma: float = 0.1
    clip_max_norm: float = 0.1
    amp: bool | None = None
    amp_dtype: str = "auto"
    channels_last: bool = False
    # Matching costs and loss weights.
    set_cost_class: float = 1.0
    set_cost_kpts: float = 5.0
    set_cost_ctrs: float = 1.0
    set_cost_deltas: float = 1.0
    set_cost_kpts_class: float = 2.0
    kpts_loss_coef: float = 5.0
    ctrs_loss_coef: float = 1.0
    deltas_loss_coef: float = 1.0
    kpts_class_loss_coef: float = 2.0
    eos_coef: float = 0.1
    encoder_aux_coef: float = 0.0
    # Augmentation.
    flip_prob: float = 0.5
    crop_prob: float = 0.5
    min_scale: float = 0.6
    # Running.
    output_dir: str = "runs/poet"
    eval_every: int = 1
    eval_limit: int | None = None
    num_workers: int = 2
    seed: int = 42
    device: str = "auto"
    threads: int | None = None
    max_steps_per_epoch: int | None = None
    tensorboard: bool = True
    progress: bool = True

    def model_config(self) -> PoetConfig:
        names = {f.name for f in dataclasses.fields(PoetConfig)}
        values = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        return PoetConfig(**values, train_backbone=self.lr_backbone > 0)

    def preprocess(self) -> PreprocessConfig:
        if len(self.input_size) != 2:
            raise PoetError(f"input_size needs two numbers (height width), got {self.input_size}")
        return PreprocessConfig(input_size=(int(self.input_size[0]), int(self.input_size[1])))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


HELP = {
    "data": "COCO-layout root holding annotations/ and the split image folders",
    "train_split": "training split name under --data",
    "val_split": "validation split name under --data",
    "train_annotations": "training person_keypoints JSON (overrides --data)",
    "train_images": "training image folder (overrides --data)",
    "val_annotations": "validation person_keypoints JSON (overrides --data)",
    "val_images": "validation image folder (overrides --data)",
    "input_size": "letterbox height and width the model is trained and exported at",
    "backbone": "resnet18, resnet34, resnet50, resnet101 or resnet152",
    "backbone_width": "channels of the ResNet stem; 64 is torchvision's (ImageNet weights), 32 or 16 train "
    "from scratch faster on a CPU",
    "frozen_batchnorm": "the authors' frozen batch norm; --no-frozen-batchnorm trains BN (from scratch)",
    "padding_invariant": "zero the letterbox padding inside the ResNet (poses independent of padding); "
    "--no-padding-invariant is the authors' model exactly",
    "dilation4": "dilate layer3 (and layer4): output stride 8",
    "dilation5": "dilate layer4 (DC5): output stride 16",
    "position_embedding": "sine or learned",
    "num_queries": "person slots per image (the released POET-R50 uses 25)",
    "aux_loss": "losses on every decoder layer",
    "keypoint_refinement": "correct the final keypoints from patches of the stride-8 and stride-4 maps "
    "(poet/model/refine.py; not in the authors' model, so not for their checkpoint)",
    "backbone_weights": "local torchvision ImageNet ResNet weights (.pth); nothing is downloaded",
    "finetune": "start from this checkpoint's weights and architecture (ours or the authors')",
    "resume": "continue this run's checkpoint.pth exactly (weights, optimizer, schedule, RNG)",
    "lr": "learning rate of the transformer and heads",
    "lr_backbone": "learning rate of the backbone; 0 freezes it",
    "lr_drops": "epochs after which the learning rate is multiplied by --lr-gamma",
    "clip_max_norm": "gradient-norm clipping (0 disables)",
    "amp": "mixed precision: float16 with a grad scaler on CUDA, bfloat16 on a CPU with AVX-512 BF16 or AMX "
    "(float32 with a warning on one without); unset: on for CUDA, off for a CPU",
    "amp_dtype": "auto (float16 on CUDA, bfloat16 on a CPU), float16 or bfloat16",
    "channels_last": "model and images in channels-last memory layout (faster convolutions with --amp)",
    "eos_coef": "class weight of 'no object' in the cross-entropy",
    "encoder_aux_coef": "weight of the training-only dense keypoint loss on the encoder tokens "
    "(train/encoder_aux.py; not in checkpoints' model or exports); 0 trains as the authors do",
    "flip_prob": "probability of a horizontal flip",
    "crop_prob": "probability of a random crop",
    "min_scale": "smallest multi-scale letterbox, as a fraction of --input-size",
    "output_dir": "checkpoint.pth, best.pth, metrics.csv and tensorboard/ go here",
    "eval_every": "epochs between OKS AP evaluations (0: never)",
    "eval_limit": "evaluate on the first N validation images only",
    "device": "auto, cpu, cuda or cuda:N (torchrun sets the rank's GPU)",
    "threads": "torch CPU threads",
    "max_steps_per_epoch": "cut epochs short (smoke tests, benchmarks)",
}


# Options whose flags are the shared vocabulary of every tool (poet/console.py), with the metavar they show there;
# the field's own flag still works.
FLAGS = {
    "batch_size": (("--batch", "--batch-size"), "N"),
    "output_dir": (("-o", "--output", "--output-dir"), "PATH"),
}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(element type, is_list) with ``X | None`` unwrapped."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = args[0]
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def bundled_recipes() -> list[str]:
    """Names of the recipes that ship with poet-edge (``--config NAME``)."""
    folder = resources.files("poet.train.recipes")
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def _config_source(path: str | Path) -> tuple[str, str, str]:
    """(text, suffix, how messages name it) of a config file, or of the bundled recipe of that name."""
    file = Path(path)
    if file.is_file():
        return file.read_text(), file.suffix, str(file)
    recipe = resources.files("poet.train.recipes") / f"{path}.yaml"
    if not file.suffix and recipe.is_file():
        return recipe.read_text(), ".yaml", f"recipe {path}"
    raise PoetError(f"config file {path} not found (or give a bundled recipe: {', '.join(bundled_recipes())})")


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that also refuses a key given twice in one mapping (PyYAML keeps the last silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: construct_mapping below says so
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return yaml.load(text, Loader=Loader)  # a SafeLoader subclass: Python tags stay refused


def _parse_error(error: Exception) -> str:
    """A YAML or TOML parser's error in one line, with the line and column where it has them."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a YAML (.yaml/.yml) or TOML (.toml) file or a bundled recipe, checked against the known names.

    Values are returned as written; :func:`check_options` checks them.
    """
    return _read_config(path)[0]


def _read_config(path: str | Path) -> tuple[dict[str, Any], str]:
    """:func:`read_config_file` and how messages name the file (as given, or ``recipe NAME``)."""
    if Path(path).is_dir():
        raise PoetError(f"config file {path} is a folder; expected a YAML or TOML file")
    try:
        text, suffix, path = _config_source(path)
    except UnicodeDecodeError as error:
        raise PoetError(f"config file {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    kind = "TOML" if suffix == ".toml" else "YAML"
    try:
        data = tomllib.loads(text) if suffix == ".toml" else (_load_yaml(text) or {})
    except ImportError:
        raise
    except Exception as error:  # yaml.YAMLError, tomllib.TOMLDecodeError
        raise PoetError(f"{path} is not valid {kind}: {_parse_error(error)}") from None
    if not isinstance(data, dict):
        raise PoetError(f"{path}: expected a mapping of option names to values, got {describe(data)}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    known = list(_field_types())
    unknown = [key for key in data if key not in known]
    if unknown:
        names = "; ".join(
            f"{key!r} (did you mean {_ALIASES[key]!r}?)" if key in _ALIASES else f"{key!r}{did_you_mean(key, known)}"
            for key in unknown
        )
        plural = "s" if len(unknown) > 1 else ""
        raise PoetError(f"{path}: unknown option{plural} {names} (poet-train --help lists them)")
    return data, path


# Names a config file may use for an option under another name (the authors' main.py flags, plain English).
_ALIASES = {"learning_rate": "lr", "fp16": "amp", "coco_path": "data", "no_aux_loss": "aux_loss", "batch": "batch_size"}

# Ranges, by option. Counts are at least 1 (None, where allowed, means unset).
_AT_LEAST_1 = (
    "epochs",
    "batch_size",
    "hidden_dim",
    "nheads",
    "enc_layers",
    "dec_layers",
    "dim_feedforward",
    "num_queries",
    "backbone_width",
    "eval_limit",
    "threads",
    "max_steps_per_epoch",
)
_AT_LEAST_0 = (
    "eval_every",
    "num_workers",
    "seed",
    "lr_backbone",
    "weight_decay",
    "clip_max_norm",
    "set_cost_class",
    "set_cost_kpts",
    "set_cost_ctrs",
    "set_cost_deltas",
    "set_cost_kpts_class",
    "kpts_loss_coef",
    "ctrs_loss_coef",
    "deltas_loss_coef",
    "kpts_class_loss_coef",
    "eos_coef",
    "encoder_aux_coef",
)
_ABOVE_0 = ("lr", "lr_gamma")
_PROBABILITIES = ("flip_prob", "crop_prob")
_CHOICES: dict[str, tuple[str, ...]] = {
    "backbone": RESNET_NAMES,
    "position_embedding": POSITION_EMBEDDINGS,
    "amp_dtype": AMP_DTYPES,
}
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# YAML 1.1 (PyYAML) reads 1e-4, without a dot, as a string: such text is taken as the number it spells.
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_MIN_INPUT = 32  # PreprocessConfig's smallest side: one stride-32 feature


def _typed(label: str, value: Any, annotation: Any) -> Any:
    """``value`` as the option's type, or ValueError naming ``label``: no string for a number, no list for a scalar."""
    optional = type(None) in typing.get_args(annotation)
    kind, is_list = _base_type(annotation)
    if value is None:
        if optional:
            return None
        wanted = f"a list of {_kind_name(kind)}s" if is_list else _kind_name(kind, article=True)
        raise ValueError(f"{label} must be {wanted}, got null")
    if is_list:
        if not isinstance(value, list):
            single = isinstance(value, (int, float)) and not isinstance(value, bool)
            example = f" (write [{value}, {value}] for a square)" if "input_size" in label else f" (write [{value}])"
            raise ValueError(
                f"{label} must be a list of {_kind_name(kind)}s, got {describe(value)}{example if single else ''}"
            )
        return [_scalar(f"{label}[{index}]", item, kind) for index, item in enumerate(value)]
    return _scalar(label, value, kind)


def _kind_name(kind: Any, article: bool = False) -> str:
    name = {bool: "true or false", int: "whole number", float: "number", str: "string"}.get(kind, str(kind))
    return f"a {name}" if article and kind is not bool else name


def _scalar(label: str, value: Any, kind: Any) -> Any:
    if isinstance(value, (list, dict)):
        raise ValueError(
            f"{label} must be {_kind_name(kind, article=True)}, not a list or table, got {describe(value)}"
        )
    if kind is float and isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        value = float(value)
    if kind is str and not isinstance(value, str):
        raise ValueError(f"{label} must be a string, got {describe(value)} (quote it in the file)")
    return check_value(label, value, kind) if kind in (bool, int, float, str) else value


def _in_range(label: str, name: str, value: Any) -> None:
    """ValueError naming ``label`` if the (typed) value of option ``name`` is outside its range."""
    if value is None:
        return
    if name in _AT_LEAST_1 and value < 1:
        raise ValueError(f"{label} must be at least 1, got {value}")
    if name in _AT_LEAST_0 and value < 0:
        raise ValueError(f"{label} must be 0 or more, got {value}")
    if name in _ABOVE_0 and value <= 0:
        raise ValueError(f"{label} must be above 0, got {value}")
    if name in _PROBABILITIES and not 0 <= value <= 1:
        raise ValueError(f"{label} must be a probability from 0 to 1, got {value}")
    if name == "dropout" and not 0 <= value < 1:
        raise ValueError(f"{label} must be at least 0 and below 1, got {value}")
    if name == "min_scale" and not 0 < value <= 1:
        raise ValueError(f"{label} must be above 0 and at most 1 (a fraction of input_size), got {value}")
    if name == "lr_drops" and any(epoch < 1 for epoch in value):
        raise ValueError(f"{label} must be epochs of at least 1, got {value}")
    if name == "input_size" and (len(value) != 2 or min(value) < _MIN_INPUT):
        raise ValueError(f"{label} must be two whole numbers of at least {_MIN_INPUT} (height width), got {value}")
    if name == "device" and not _DEVICE.fullmatch(value):
        raise ValueError(f"{label} must be auto, cpu, cuda or cuda:N, got {value!r}")
    if name in _CHOICES and value not in _CHOICES[name]:
        choices = _CHOICES[name]
        raise ValueError(f"{label} must be one of {', '.join(choices)}, got {value!r}{did_you_mean(value, choices)}")


def check_options(values: dict[str, Any], origins: dict[str, str]) -> dict[str, Any]:
    """Each option's value checked for its type and range; PoetError names where it came from (file or flag).

    ``origins`` maps an option to the file it was read from; options not in it came from a flag.
    """
    types = _field_types()
    checked = {}
    for name, value in values.items():
        origin = origins.get(name)
        label = name if origin else _flag(name)
        try:
            checked[name] = _typed(label, value, types[name])
            _in_range(label, name, checked[name])
        except ValueError as error:
            raise PoetError(f"{origin}: {error}" if origin else str(error)) from None
    return checked


def _flag(name: str) -> str:
    """The flag a user most likely typed for option ``name`` (the shared vocabulary's first long one)."""
    if name in FLAGS:
        return next(flag for flag in FLAGS[name][0] if flag.startswith("--"))
    return "--" + name.replace("_", "-")


def _check_architecture(config: TrainConfig, where: str) -> None:
    """The options that only together make a model (a PoetConfig, an input size it can take), or PoetError."""
    try:
        model = config.model_config()
    except ValueError as error:
        raise PoetError(f"{where}: {error}") from None
    if model.position_embedding == "learned":
        from poet.model.position_encoding import LearnedPositionEncoding

        positions = LearnedPositionEncoding.max_positions  # per axis, the authors' table
        longest = -(-max(config.input_size) // model.output_stride)
        if longest > positions:
            raise PoetError(
                f"{where}: position_embedding 'learned' has {positions} positions a side, but input_size "
                f"{config.input_size} at output stride {model.output_stride} gives {longest} features; use 'sine' "
                f"or at most {positions * model.output_stride} pixels"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poet-train",
        description="Train or fine-tune POET on COCO-format person keypoints (single process or torchrun/DDP).",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--config",
        help=f"YAML or TOML file with any of the options below, or a bundled recipe ({', '.join(bundled_recipes())})",
    )
    defaults = TrainConfig()
    for name, annotation in _field_types().items():
        kind, is_list = _base_type(annotation)
        flags, metavar = FLAGS.get(name, (("--" + name.replace("_", "-"),), None))
        default = getattr(defaults, name)
        text = f"{HELP[name]} (default: {default})" if name in HELP else f"(default: {default})"
        if kind is bool:
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, help=text)
        elif name == "input_size":
            parser.add_argument(*flags, dest=name, type=kind, nargs=2, metavar=("H", "W"), help=text)
        else:
            nargs = "+" if is_list else None
            parser.add_argument(*flags, dest=name, type=kind, nargs=nargs, metavar=metavar, help=text)
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults, then the ``--config`` file, then flags; every value checked (PoetError naming file or flag)."""
    args = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    config_file = args.pop("config", None)
    if config_file:
        from_file, source = _read_config(config_file)
        values.update(from_file)
        origins.update(dict.fromkeys(from_file, source))
    values.update(args)
    for name in args:
        origins.pop(name, None)
    values = check_options(values, origins)
    sources = [*dict.fromkeys(origins.values()), *(["the command line"] if args else [])]
    config = TrainConfig(**json.loads(json.dumps(values)))
    # The architecture is checked now, not after the data has been indexed.
    _check_architecture(config, " and ".join(sources) or "the defaults")
    return config
