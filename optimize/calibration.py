"""INT8 calibration and quantization of a POET ONNX: which nodes stay in float, and the three Q/DQ layouts.

Torch-free on purpose: :func:`quantize_int8` runs in a fresh process (ModelOpt patches ONNX Runtime's
quantization modules process-wide), which then starts in a second instead of importing PyTorch.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from poet.images import read_image
from poet.modelinfo import IMAGES, MASK, UINT8_NHWC, ModelInfo
from poet.processing import letterbox_batch, preprocess

# Nodes of the heads (class and keypoint MLPs), the in-graph normalisation and decoding stay in float
# for every reduced precision; export names them after the modules that make them.
HEAD_NODE_PATTERNS = (r"/class_embed/", r"/kpt_embed/", r"^/normalize/", r"^/decode/")
# Op types kept in FP32 wherever the rest goes FP16 (the FP16 variant, and INT8 for TensorRT with FP16 as its
# float type): normalisation, attention weights, reductions and the keypoint head's sigmoid overflow or lose
# too much in half precision.
FP16_FLOAT_OP_TYPES = (
    "LayerNormalization",
    "Softmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "CumSum",
    "Sigmoid",
    "Pow",
    "Sqrt",
)
# What the CPU INT8 variant quantizes: convolutions and weight matmuls, which ONNX Runtime fuses into
# integer kernels. Not Add: ONNX Runtime calibrates every tensor of a listed op type, excluded nodes
# too, and the attention-mask Add carries -inf.
CPU_INT8_OP_TYPES = ("Conv", "MatMul", "Gemm", "MaxPool", "Relu")


class CalibrationReader:
    """Feeds calibration batches to ONNX Runtime's and ModelOpt's calibrators (``get_next``/``rewind``).

    Each batch is made by the runtime's own letterbox (:func:`poet.processing.preprocess`, or
    :func:`~poet.processing.letterbox_batch` for uint8-input models), mask included; images are read
    lazily so 512 calibration photographs never sit in memory at once.
    """

    def __init__(self, paths: Sequence[Path], info: ModelInfo, progress: bool) -> None:
        self.paths = list(paths)
        self.info = info
        self.batch_size = info.batch or 1
        self.progress = progress
        self._batches: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    def __len__(self) -> int:
        return len(self.paths) // self.batch_size

    def _batch(self, start: int) -> dict[str, np.ndarray]:
        images = [read_image(p) for p in self.paths[start : start + self.batch_size]]
        if self.info.input_format == UINT8_NHWC:
            pixels, mask, _ = letterbox_batch(images, self.info.preprocess.input_size)
        else:
            pixels, mask, _ = preprocess(images, self.info.preprocess)
        return {IMAGES: pixels, MASK: mask}

    def _generate(self, first: int = 0, end: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        end = len(self) if end is None else end
        with tqdm(
            total=len(self) * self.batch_size,
            initial=first * self.batch_size,
            desc="calibrating",
            unit="img",
            disable=not self.progress,
            leave=False,
        ) as bar:
            for index in range(first, end):
                yield self._batch(index * self.batch_size)
                bar.update(self.batch_size)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Every batch from the first (NNCF's dataset iterates the reader)."""
        return self._generate()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Serve only batches ``start_index:end_index`` (ONNX Runtime's strided calibration)."""
        self._batches = self._generate(start_index, end_index)

    def get_first(self) -> dict[str, np.ndarray]:
        """The first batch without advancing (ModelOpt probes the graph with it)."""
        return self._batch(0)

    def rewind(self) -> None:
        self._batches = self._generate()


def names_matching(model: onnx.ModelProto, patterns: Sequence[str]) -> list[str]:
    compiled = [re.compile(p) for p in patterns]
    return [node.name for node in model.graph.node if any(c.search(node.name) for c in compiled)]


def mask_only_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes computed from the mask and constants alone (position encoding, attention masks): kept in FP32.

    Their values are exact functions of the padding, and the sine encoding's normalised cumulative sums
    lose the last positions' resolution in half precision.
    """
    constants = {init.name for init in model.graph.initializer} | {""}
    derived = {MASK}
    names = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants.update(node.output)
            continue
        inputs = set(node.input)
        if inputs & derived and inputs <= derived | constants:
            derived.update(node.output)
            names.append(node.name)
    return names


def _activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMuls of two activations: attention scores (Q·Kᵀ) and their product with V, fed by the softmax."""
    constants = {init.name for init in model.graph.initializer}
    constants.update(out for node in model.graph.node if node.op_type == "Constant" for out in node.output)
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and not any(name in constants for name in node.input)
    ]


def _residual_adds(model: onnx.ModelProto) -> list[str]:
    """Transformer Adds (residuals, position and bias adds): DETR's accuracy breaks when they are quantized."""
    return [node.name for node in model.graph.node if node.op_type == "Add" and "/transformer/" in node.name]


def split_exclusions(model: onnx.ModelProto, exclude: Sequence[str]) -> tuple[list[str], list[str]]:
    """User ``exclude`` entries split into op types (capitalised names present in the graph) and name patterns."""
    op_types = {node.op_type for node in model.graph.node}
    return [e for e in exclude if e in op_types], [e for e in exclude if e not in op_types]


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name: exclusion lists and the report address nodes by name."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op_type}_{index}"
        seen.add(node.name)


def _int8_cpu(source: Path, output: Path, reader: CalibrationReader, method: str, exclude: Sequence[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(source)
    op_types, patterns = split_exclusions(model, exclude)
    keep = [
        *_activation_matmuls(model),
        *_residual_adds(model),
        *mask_only_nodes(model),
        *names_matching(model, (*HEAD_NODE_PATTERNS, *patterns)),
    ]
    stride = max(d for d in range(1, 9) if len(reader) % d == 0)
    methods = {
        "entropy": CalibrationMethod.Entropy,
        "max": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
    }
    quantize_static(
        source,
        output,
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=[op for op in CPU_INT8_OP_TYPES if op not in op_types],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=keep,
        calibrate_method=methods[method],
        # Merge histograms every few batches: the calibrator otherwise holds every activation of every image.
        extra_options={"CalibStridedMinMax": stride, "ActivationSymmetric": False, "WeightSymmetric": True},
    )


def _int8_tensorrt(
    source: Path, output: Path, reader: CalibrationReader, method: str, exclude: Sequence[str], float_type: str
) -> None:
    """ModelOpt's symmetric Q/DQ; the unquantized ops in ``float_type`` (fp16: FP16_FLOAT_OP_TYPES stay fp32)."""
    from modelopt.onnx.quantization import quantize

    model = onnx.load(source)
    op_types, patterns = split_exclusions(model, exclude)
    keep = [*_residual_adds(model), *mask_only_nodes(model), *names_matching(model, (*HEAD_NODE_PATTERNS, *patterns))]
    quantize(
        onnx_path=str(source),
        quantize_mode="int8",
        calibration_data_reader=reader,
        calibration_method=method,
        calibration_eps=["cpu"],
        op_types_to_exclude=["Softmax", "LayerNormalization", *op_types],
        nodes_to_exclude=[f"^{re.escape(name)}$" for name in keep],
        # Q/DQ stays off the attention matmuls, i.e. off the softmax output (TensorRT's own MHA fusion rule).
        disable_mha_qdq=True,
        high_precision_dtype=float_type,
        op_types_to_exclude_fp16=[*FP16_FLOAT_OP_TYPES, *op_types],
        output_path=str(output),
        log_level="WARNING",
    )


def _int8_openvino(source: Path, output: Path, reader: CalibrationReader, exclude: Sequence[str]) -> None:
    """NNCF's post-training quantization for OpenVINO, written as ONNX Q/DQ (its ONNX backend).

    NNCF places Q/DQ where OpenVINO's CPU plugin fuses them, with its transformer rules (softmax, LayerNorm and
    the residual adds stay in float) and its own activation ranges plus bias correction; the heads, the
    mask-only nodes and ``exclude`` are kept in float as in the other layouts.
    """
    # NNCF imports torch where it is installed, whose C++ extension module warns about CUDA on CPU machines.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf

    model = onnx.load(source)
    op_types, patterns = split_exclusions(model, exclude)
    keep = [*mask_only_nodes(model), *names_matching(model, (*HEAD_NODE_PATTERNS, *patterns))]
    quantized = nncf.quantize(
        model,
        nncf.Dataset(reader),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(reader),  # batches, each of the model's batch size
        ignored_scope=nncf.IgnoredScope(names=keep, types=list(op_types), validate=False),
    )
    onnx.save(quantized, output)


@dataclass(frozen=True)
class QuantizeJob:
    """One INT8 quantization: ``source`` calibrated on ``paths`` into ``output`` in ``target``'s Q/DQ layout."""

    target: str
    source: Path
    output: Path
    paths: tuple[Path, ...]
    info: ModelInfo
    method: str
    exclude: tuple[str, ...]
    progress: bool
    float_type: str = "fp32"  # INT8 for TensorRT: the type of the unquantized ops

    def to_json(self) -> str:
        fields = {**vars(self), "source": str(self.source), "output": str(self.output)}
        fields.update(paths=[str(p) for p in self.paths], info=self.info.to_dict(), exclude=list(self.exclude))
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> QuantizeJob:
        data = json.loads(text)
        data.update(source=Path(data["source"]), output=Path(data["output"]), info=ModelInfo.from_dict(data["info"]))
        return cls(**{**data, "paths": tuple(Path(p) for p in data["paths"]), "exclude": tuple(data["exclude"])})


def quantize_int8(job: QuantizeJob) -> None:
    """Run ``job`` in this process."""
    reader = CalibrationReader(job.paths, job.info, job.progress)
    if job.target == "cpu":
        _int8_cpu(job.source, job.output, reader, job.method, job.exclude)
    elif job.target == "openvino":
        _int8_openvino(job.source, job.output, reader, job.exclude)
    else:
        _int8_tensorrt(job.source, job.output, reader, job.method, job.exclude, job.float_type)


def quantize_int8_isolated(job: QuantizeJob) -> int:
    """:func:`quantize_int8` in a fresh Python process; returns its exit code.

    ModelOpt patches ONNX Runtime's quantization modules for the whole process, so each quantization
    gets its own; calibration memory is returned when it ends, and unlike multiprocessing this never
    re-runs the caller's script.
    """
    spec = job.output.with_suffix(".job.json")
    spec.write_text(job.to_json())
    # The libraries' own progress bars (one per tensor batch) are switched off; ours passes ``disable`` explicitly.
    environment = {**os.environ, "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "poet.optimize.calibration", str(spec)]
    return subprocess.run(command, check=False, env=environment).returncode


class _DropPreprocessingHint(logging.Filter):
    """ONNX Runtime suggests its shape pre-processing on every run; the export has already simplified the graph."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Please consider") and "pre-processing before quantization" in message)


def _main(spec: str) -> None:
    job = QuantizeJob.from_json(Path(spec).read_text())
    logging.getLogger().addFilter(_DropPreprocessingHint())
    # ONNX Runtime's calibrator prints each histogram step to stdout; warnings and errors still reach stderr.
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_int8(job)


if __name__ == "__main__":
    _main(sys.argv[1])
