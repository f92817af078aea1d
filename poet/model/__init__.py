"""The POET network, one file per concept: config, backbone, position encoding, transformer, heads."""

from poet.model.backbone import load_backbone_weights
from poet.model.config import PoetConfig
from poet.model.poet import POET, build_model

__all__ = ["POET", "PoetConfig", "build_model", "load_backbone_weights"]
