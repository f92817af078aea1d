"""poet-edge: POET (POse Estimation Transformer) from training to fast engines.

Heavy parts (torch models, the matcher and loss) load on first use, so ``import poet.runtime``
and the other torch-free modules never pull in PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "poet.checkpoint",
    "save_checkpoint": "poet.checkpoint",
    "read_checkpoint": "poet.checkpoint",
    "POET": "poet.model",
    "PoetConfig": "poet.model",
    "build_model": "poet.model",
    "Predictor": "poet.predictor",
    "HungarianMatcher": "poet.matcher",
    "SetCriterion": "poet.criterion",
    "PreprocessConfig": "poet.processing",
    "Pose": "poet.processing",
}

if TYPE_CHECKING:
    from poet.checkpoint import load_model, read_checkpoint, save_checkpoint
    from poet.criterion import SetCriterion
    from poet.matcher import HungarianMatcher
    from poet.model import POET, PoetConfig, build_model
    from poet.predictor import Predictor
    from poet.processing import Pose, PreprocessConfig

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
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'poet' has no attribute {name!r}")
