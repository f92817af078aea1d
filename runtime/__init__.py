"""Torch-free runtime (``poet.runtime``): numpy, OpenCV and ONNX Runtime or TensorRT only."""
