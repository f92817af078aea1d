"""Optimisation stage (``poet.optimize``): ONNX export, FP16/INT8 variants, TensorRT engines."""
