"""poet-edge: POET (POse Estimation Transformer) from training to fast engines.

Heavy parts (torch models, the matcher and loss) load on first use, so ``import poet.runtime``
and the other torch-free modules never pull in PyTorch; on an install without their extra, using
one raises a MissingExtraError (an ImportError) naming the extra to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> (module, the extra it needs; "" for the base install)
_LAZY = {
    "load_model": ("poet.checkpoint", "model"),
    "save_checkpoint": ("poet.checkpoint", "model"),
    "read_checkpoint": ("poet.checkpoint", "model"),
    "POET": ("poet.model", "model"),
    "PoetConfig": ("poet.model", "model"),
    "build_model": ("poet.model", "model"),
    "Predictor": ("poet.predictor", "model"),
    "HungarianMatcher": ("poet.train.matcher", "train"),
    "SetCriterion": ("poet.train.criterion", "train"),
    "PreprocessConfig": ("poet.processing", ""),
    "Pose": ("poet.processing", ""),
}

if TYPE_CHECKING:
    from poet.checkpoint import load_model, read_checkpoint, save_checkpoint
    from poet.model import POET, PoetConfig, build_model
    from poet.predictor import Predictor
    from poet.processing import Pose, PreprocessConfig
    from poet.train.criterion import SetCriterion
    from poet.train.matcher import HungarianMatcher

__all__ = [
    "POET",
    "HungarianMatcher",
    "PoetConfig",
    "Pose",
    "Predictor",
    "PreprocessConfig",
    "SetCriterion",
    "build_model",
    "load_model",
    "read_checkpoint",
    "save_checkpoint",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, extra = _LAZY[name]
        try:
            return getattr(importlib.import_module(module), name)
        except ModuleNotFoundError as error:
            from poet.extras import missing_extra

            line = missing_extra(error, f"poet.{name}", [extra] if extra else [])
            if line is None:
                raise
            raise line from None
    raise AttributeError(f"module 'poet' has no attribute {name!r}")
