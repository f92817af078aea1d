"""The three stages every pose predictor has, and the one way to time them (torch-free).

``prepare(images) -> (inputs, letterboxes)``, ``infer(inputs) -> outputs``, ``decode(outputs, letterboxes)
-> poses``: the torch :class:`poet.predictor.Predictor` and the runtime's :class:`poet.runtime.PoseEstimator`
both follow it, so ``poet-bench`` and ``poet-run`` time PyTorch, ONNX Runtime and TensorRT the same way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from poet.processing import Letterbox, Pose

STAGES = ("preprocess", "inference", "postprocess")


class PosePipeline(Protocol):
    """Images to poses in three stages that can be timed apart."""

    def prepare(self, images: Sequence[np.ndarray]) -> tuple[Any, list[Letterbox]]:
        """BGR uint8 images -> the model's inputs and where each image sits in them."""
        ...

    def infer(self, inputs: Any) -> Any:
        """The model on prepared inputs; returns once its outputs are on the host."""
        ...

    def decode(self, outputs: Any, letterboxes: Sequence[Letterbox]) -> list[list[Pose]]:
        """Outputs -> poses in original-image pixels, one list per image."""
        ...

    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[list[Pose]]:
        """All three stages on any number of images, batched as the model allows."""
        ...


@dataclass(frozen=True)
class StageTimes:
    """Seconds spent in each stage of one batch."""

    preprocess: float
    inference: float
    postprocess: float

    @property
    def total(self) -> float:
        return self.preprocess + self.inference + self.postprocess


def timed_predict(pipeline: PosePipeline, images: Sequence[np.ndarray]) -> tuple[list[list[Pose]], StageTimes]:
    """One batch through the three stages, with the seconds each took."""
    start = time.perf_counter()
    inputs, letterboxes = pipeline.prepare(images)
    prepared = time.perf_counter()
    outputs = pipeline.infer(inputs)
    inferred = time.perf_counter()
    poses = pipeline.decode(outputs, letterboxes)
    return poses, StageTimes(prepared - start, inferred - prepared, time.perf_counter() - inferred)
