"""The one table of model variants: each backend and precision a POET checkpoint can be deployed as.

Like Ultralytics' ``export_formats()``: a row per variant says its file's precision, the INT8 layout it is
quantized for, the file name ending beside the FP32 export, the backend that runs it (and, for OpenVINO,
the precision of its float ops) and what that needs.
``poet-export``, ``poet-build-engine``, ``poet-bench`` and ``poet quickstart`` read it, so a variant has
one name and one file name everywhere. Stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from poet.errors import PoetError
from poet.modelinfo import INT8_TARGETS, PRECISIONS


@dataclass(frozen=True)
class Variant:
    name: str  # as poet-bench and its report name it
    precision: str  # the file's: fp32, fp16 or int8
    int8_target: str | None  # the Q/DQ layout of an INT8 variant: tensorrt, cpu or openvino
    suffix: str  # the file name ending after the FP32 export's stem
    backend: str  # torch, onnxruntime, tensorrt or openvino
    needs: str  # what it needs beyond the base install
    float_precision: str | None = None  # OpenVINO's precision for the float ops: fp32 or bf16

    def path(self, fp32: Path) -> Path:
        """This variant's file beside the FP32 export ``fp32`` (``model.onnx`` -> ``model.fp16.onnx``)."""
        return fp32.with_name(fp32.stem + self.suffix)


_OPTIMIZE = 'pip install "poet-edge[optimize]"'
_TENSORRT = 'pip install "poet-edge[tensorrt]" and an NVIDIA GPU'
_OPENVINO = 'pip install "poet-edge[optimize,openvino]"'

VARIANTS: tuple[Variant, ...] = (
    Variant("torch", "fp32", None, ".pth", "torch", 'pip install "poet-edge[model]"'),
    Variant("torch-fp16", "fp16", None, ".pth", "torch", 'pip install "poet-edge[model]" and a CUDA GPU (autocast)'),
    Variant("onnx-fp32", "fp32", None, ".onnx", "onnxruntime", _OPTIMIZE),
    Variant("onnx-fp16", "fp16", None, ".fp16.onnx", "onnxruntime", f"{_OPTIMIZE} (ModelOpt AutoCast)"),
    Variant("onnx-int8-cpu", "int8", "cpu", ".int8-cpu.onnx", "onnxruntime", f"{_OPTIMIZE}, calibration images"),
    Variant(
        "onnx-int8-tensorrt",
        "int8",
        "tensorrt",
        ".int8-tensorrt.onnx",
        "onnxruntime",
        f"{_OPTIMIZE}, calibration images",
    ),
    Variant("trt-fp32", "fp32", None, ".engine", "tensorrt", _TENSORRT),
    Variant("trt-fp16", "fp16", None, ".fp16.engine", "tensorrt", _TENSORRT),
    Variant("trt-int8", "int8", "tensorrt", ".int8-tensorrt.engine", "tensorrt", f"{_TENSORRT}, calibration images"),
    # OpenVINO reads the FP32 ONNX above (bf16: OpenVINO's float ops in bf16) and its own INT8 layout, NNCF's.
    Variant("openvino-fp32", "fp32", None, ".onnx", "openvino", _OPENVINO, "fp32"),
    Variant("openvino-bf16", "fp32", None, ".onnx", "openvino", f"{_OPENVINO}, a CPU with AVX512_BF16 or AMX", "bf16"),
    Variant(
        "openvino-int8",
        "int8",
        "openvino",
        ".int8-openvino.onnx",
        "openvino",
        f"{_OPENVINO}, calibration images",
        "fp32",
    ),
    Variant(
        "openvino-int8-bf16",
        "int8",
        "openvino",
        ".int8-openvino.onnx",
        "openvino",
        f"{_OPENVINO}, calibration images, a CPU with AVX512_BF16 or AMX",
        "bf16",
    ),
)
VARIANT_NAMES = tuple(variant.name for variant in VARIANTS)


def variant(name: str) -> Variant:
    """The row called ``name``; a one-line error listing the valid names otherwise."""
    for row in VARIANTS:
        if row.name == name:
            return row
    raise PoetError(f"unknown variant {name!r}; valid variants: {', '.join(VARIANT_NAMES)}")


def find_variant(backend: str, precision: str, int8_target: str | None = None) -> Variant:
    """The row of ``backend`` in ``precision`` (and, for INT8, the layout ``int8_target``)."""
    if precision not in PRECISIONS:
        raise PoetError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and int8_target not in INT8_TARGETS:
        raise PoetError(f"an INT8 variant needs a target, one of {', '.join(INT8_TARGETS)}, got {int8_target!r}")
    target = int8_target if precision == "int8" else None
    for row in VARIANTS:
        if (row.backend, row.precision, row.int8_target) == (backend, precision, target):
            return row
    raise PoetError(f"no {backend} variant in {precision}" + (f" for {target}" if target else ""))


def onnx_variant(precision: str, int8_target: str | None = None) -> Variant:
    """The row of the ONNX file that ``poet-export`` writes for ``precision`` (INT8: in ``int8_target``'s layout):
    ONNX Runtime's, but OpenVINO's for its own INT8 layout, which no other row reads."""
    backend = "openvino" if precision == "int8" and int8_target == "openvino" else "onnxruntime"
    return find_variant(backend, precision, int8_target)


def table() -> str:
    """The table as Markdown, for ``poet-bench --help`` and the docs."""
    lines = ["| variant | precision | INT8 layout | file | backend | needs |", "|---|---|---|---|---|---|"]
    for row in VARIANTS:
        backend = f"{row.backend} ({row.float_precision} float ops)" if row.float_precision else row.backend
        cells = (row.name, row.precision, row.int8_target or "-", f"model{row.suffix}", backend, row.needs)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
