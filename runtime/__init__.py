"""Torch-free runtime (``poet.runtime``): numpy, OpenCV and ONNX Runtime or TensorRT only."""

from poet.runtime.estimator import PoseEstimator

__all__ = ["PoseEstimator"]
