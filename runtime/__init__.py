"""Torch-free runtime (``poet.runtime``): numpy, OpenCV and ONNX Runtime, OpenVINO or TensorRT only."""

from poet.runtime.estimator import PoseEstimator
from poet.runtime.tracking import PoseTracker

__all__ = ["PoseEstimator", "PoseTracker"]
