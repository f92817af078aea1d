"""Training options: one dataclass, read from YAML or TOML, every option also a command-line flag.

Precedence: built-in defaults < config file < flags. Defaults are the authors' ``main.py`` ones except
where a field says otherwise. ``--config`` takes a file or the name of a recipe shipped in the package
(``train/recipes/NAME.yaml``, read through importlib.resources so it works from any install).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from poet.errors import PoetError
from poet.model.config import PoetConfig
from poet.processing import PreprocessConfig

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
    amp: bool = True
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
    "amp": "mixed precision on CUDA (ignored on CPU)",
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


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a YAML (.yaml/.yml) or TOML (.toml) file or a bundled recipe, checked against the known names."""
    text, suffix, path = _config_source(path)
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except ImportError:
        raise
    except Exception as error:
        raise PoetError(f"{path} is not valid {'TOML' if suffix == '.toml' else 'YAML'}: {error}") from error
    if not isinstance(data, dict):
        raise PoetError(f"{path}: expected a mapping of option names to values")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(_field_types()))
    if unknown:
        raise PoetError(f"{path}: unknown options {', '.join(unknown)} (see poet-train --help)")
    return data


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
    """Defaults, then the ``--config`` file, then flags."""
    args = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    config_file = args.pop("config", None)
    if config_file:
        values.update(read_config_file(config_file))
    values.update(args)
    try:
        config = TrainConfig(**json.loads(json.dumps(values)))
        config.model_config()  # the architecture is checked now, not after the data has been indexed
        if config.encoder_aux_coef < 0:
            raise ValueError(f"encoder_aux_coef must be 0 (off) or positive, got {config.encoder_aux_coef}")
    except (TypeError, ValueError) as error:
        raise PoetError(f"bad training options: {error}") from error
    return config
