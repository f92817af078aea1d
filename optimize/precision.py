"""FP16 and INT8 variants of an exported POET ONNX, with the precision written into the graph itself.

TensorRT 11 has no FP16/INT8 builder flags and JetPack 6 ships TensorRT 10.3, so the precision must
live in the ONNX and the engine is built strongly typed. FP16 is mixed precision (ModelOpt AutoCast)
that keeps the numerically sensitive ops in FP32; INT8 is explicit Q/DQ from calibration on images
preprocessed exactly as the runtime does, in the layout of the target: ModelOpt's symmetric TensorRT
placement, ONNX Runtime's static QDQ quantizer (u8 activations, per-channel s8 weights) for its CPU kernels, or
NNCF's placement for OpenVINO.
DETR-style accuracy breaks when attention softmax, LayerNorm, residual adds or the heads are
quantized, so those stay in float.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from poet.console import CALIBRATION_METHODS, DEFAULT_CALIBRATION_COUNT, DEFAULT_INT8_FLOAT, INT8_FLOAT_TYPES
from poet.errors import ImageError, OutputError, PoetError
from poet.evaluation import listed_images, load_coco_keypoints
from poet.fileio import atomic_path, check_not_input, check_writable, sha256_file, write_json
from poet.images import list_images, read_or_skip
from poet.modelinfo import IMAGES, INT8_TARGETS, MASK, PRECISIONS, ModelInfo, load_onnx, write_model_info
from poet.optimize.calibration import (
    FP16_FLOAT_OP_TYPES,
    HEAD_NODE_PATTERNS,
    QuantizeJob,
    mask_only_nodes,
    name_nodes,
    names_matching,
    quantize_int8_isolated,
    split_exclusions,
)
from poet.optimize.export import export_onnx, verification_batch
from poet.optimize.tensorrt_check import default_opset, tensorrt_verdict
from poet.optimize.variants import onnx_variant

logger = logging.getLogger("poet")

# Op types whose precision the report lists; layout ops (Reshape, Transpose, ...) carry no arithmetic.
COMPUTE_OP_TYPES = frozenset(
    {
        "Conv",
        "MatMul",
        "Gemm",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Relu",
        "MaxPool",
        "Resize",
        "Sigmoid",
        "Softmax",
        "LayerNormalization",
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "CumSum",
        "Sin",
        "Cos",
        "Pow",
        "Sqrt",
        "Exp",
        "Erf",
    }
)
# Ops counted as INT8 when their inputs are dequantized (elementwise ops after them still compute in float).
INT8_KERNEL_OP_TYPES = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


class PrecisionError(PoetError):
    """A precision variant that cannot be made: wrong model, bad settings, or no usable calibration images."""


@dataclass(frozen=True)
class CalibrationSet:
    """Calibration images: every image in ``images``, or those listed in a COCO ``annotations`` file."""

    images: Path
    annotations: Path | None = None


@dataclass(frozen=True)
class VariantResult:
    """A written precision variant: its path and ModelInfo, the ops kept in float, the calibration summary."""

    path: Path
    info: ModelInfo
    float_ops: tuple[str, ...]
    calibration: dict[str, Any] = field(default_factory=dict)


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "poet-edge"


def calibration_paths(calibration: CalibrationSet, count: int) -> list[Path]:
    """The first ``count`` calibration images (sorted by name, or by image id for a COCO file)."""
    if calibration.annotations is not None:
        coco = load_coco_keypoints(calibration.annotations)
        _, paths = listed_images(coco, calibration.annotations, calibration.images)
    else:
        try:
            paths = list_images(calibration.images)
        except ImageError as error:
            raise PrecisionError(f"calibration {error}") from error
    if not paths:
        raise PrecisionError(
            f"calibration folder {calibration.images} has no images (expected .jpg, .png, ... files; "
            "give --calib-images a folder of photographs like those the model will see)"
        )
    return paths[:count]


def _usable_images(paths: Sequence[Path], progress: bool) -> tuple[list[Path], list[str], str]:
    """Decodable images, the unreadable ones skipped (named in the summary), and a hash of all their bytes."""
    usable: list[Path] = []
    skipped: list[Path] = []
    digest = hashlib.sha256()
    for path in tqdm(paths, desc="checking calibration images", unit="img", disable=not progress, leave=False):
        digest.update(path.read_bytes())
        if read_or_skip(path, skipped) is not None:
            usable.append(path)
    if not usable:
        raise PrecisionError(f"none of the {len(paths)} calibration images could be read (first: {paths[0]})")
    return usable, [str(path) for path in skipped], digest.hexdigest()


def op_precision(model: onnx.ModelProto) -> dict[str, dict[str, int]]:
    """Per compute op type, how many nodes run in float32 and how many in reduced precision (FP16 or INT8).

    A node counts as INT8 when it is an op with integer kernels and every activation input comes from a
    DequantizeLinear (a LayerNorm fed by one still computes in float), as FP16 when its output is float16.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    constants = {init.name for init in model.graph.initializer} | {""}
    counts: dict[str, dict[str, int]] = {}
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OP_TYPES:
            continue
        activations = [name for name in node.input if name not in constants and producers.get(name) != "Constant"]
        int8 = node.op_type in INT8_KERNEL_OP_TYPES and all(
            producers.get(name) == "DequantizeLinear" for name in activations
        )
        reduced = int8 or types.get(node.output[0]) == onnx.TensorProto.FLOAT16
        entry = counts.setdefault(node.op_type, {"float": 0, "reduced": 0})
        entry["reduced" if reduced else "float"] += 1
    return dict(sorted(counts.items()))


def _float_op_types(counts: dict[str, dict[str, int]]) -> tuple[str, ...]:
    return tuple(op for op, entry in counts.items() if entry["float"])


def _fp16(source: Path, model: onnx.ModelProto, info: ModelInfo, exclude: Sequence[str]) -> onnx.ModelProto:
    from modelopt.onnx.autocast import convert_to_mixed_precision
    from modelopt.onnx.logging_config import configure_logging

    # ModelOpt logs every conversion step at INFO (about 180 lines for POET); keep its warnings only, printed
    # once by its own handler rather than again by ours through propagation.
    configure_logging(logging.WARNING)
    logging.getLogger("modelopt.onnx").propagate = False
    op_types, patterns = split_exclusions(model, exclude)
    keep_nodes = [*mask_only_nodes(model), *names_matching(model, (*HEAD_NODE_PATTERNS, *patterns))]
    # AutoCast runs the model to find values FP16 cannot hold; left to itself it feeds random numbers in (-1, 1),
    # which a uint8 input cannot take and a random mask turns into meaningless attention. Give it real people.
    images, mask = verification_batch(info, info.batch or 1)
    reference_inputs = source.with_name("reference_inputs.npz")
    np.savez(reference_inputs, **{IMAGES: images, MASK: mask})
    return convert_to_mixed_precision(
        onnx_path=str(source),
        low_precision_type="fp16",
        nodes_to_exclude=[f"^{re.escape(name)}$" for name in keep_nodes],
        op_types_to_exclude=[*FP16_FLOAT_OP_TYPES, *op_types],
        keep_io_types=True,
        calibration_data=str(reference_inputs),
    )


def _cache_key(model_bytes: bytes, data_hash: str, settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(model_bytes)
    digest.update(data_hash.encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def make_variant(
    onnx_path: str | Path,
    output: str | Path,
    precision: str,
    *,
    target: str = "tensorrt",
    calibration: CalibrationSet | str | Path | None = None,
    num_calib: int = DEFAULT_CALIBRATION_COUNT,
    calib_method: str = "entropy",
    exclude: Sequence[str] = (),
    int8_float: str = DEFAULT_INT8_FLOAT,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> VariantResult:
    """Write the ``precision`` variant (fp32, fp16, int8) of an FP32 poet-edge ONNX to ``output``.

    ``exclude`` keeps more in float: op types (``Gemm``) or node-name regular expressions
    (``/layer4/``). ``int8_float`` is the type INT8 for TensorRT runs its unquantized ops in.
    INT8 needs ``calibration`` (a folder, or a :class:`CalibrationSet`); unreadable
    images are skipped with a warning and listed in the summary. The quantized model is cached under
    ``cache_dir`` by the hash of the ONNX bytes, the images' bytes and the settings, so the same
    calibration is never run twice.
    """
    onnx_path, output = Path(onnx_path), Path(output)
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and target not in INT8_TARGETS:
        raise PrecisionError(f"target must be one of {', '.join(INT8_TARGETS)}, got {target!r}")
    if calib_method not in CALIBRATION_METHODS:
        raise PrecisionError(
            f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {calib_method!r}"
        )
    if int8_float not in INT8_FLOAT_TYPES:
        raise PrecisionError(f"int8_float must be one of {', '.join(INT8_FLOAT_TYPES)}, got {int8_float!r}")
    if precision == "int8" and target == "tensorrt" and calib_method == "percentile":
        raise PrecisionError("ModelOpt's TensorRT INT8 calibration offers entropy or max, not percentile")
    model, info = load_onnx(onnx_path)
    if info.precision != "fp32":
        raise PrecisionError(f"{onnx_path} is already a {info.precision} model; make variants from the FP32 export")
    check_writable(output)
    check_not_input(output, onnx_path)
    name_nodes(model)
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="poet-variant-") as work:
        named = Path(work) / "named.onnx"
        onnx.save(model, named)
        if precision == "fp32":
            variant = model
        elif precision == "fp16":
            variant = _fp16(named, model, info, exclude)
        else:
            summary = _int8(
                named,
                Path(work) / "int8.onnx",
                info,
                target,
                calibration,
                num_calib,
                calib_method,
                exclude,
                int8_float,
                cache_dir,
                progress,
            )
            variant = onnx.load(Path(work) / "int8.onnx")
        counts = op_precision(variant)
        if precision == "int8" and target != "tensorrt":
            verdict = f"not a TensorRT graph (INT8 for {target})"
        else:
            verdict = tensorrt_verdict(variant, output)
        float_ops = _float_op_types(counts) if precision != "fp32" else ()
        variant_info = info.replace(
            precision=precision,
            target=target if precision == "int8" else None,
            float_ops=float_ops,
            extra={
                **info.extra,
                **({"calibration": summary} if summary else {}),
                "op_precision": counts,
                "tensorrt_check": verdict,
                # ModelOpt raises the opset (19 for Q/DQ with its scale types); record what the file has.
                "opset": default_opset(variant),
            },
        )
        write_model_info(variant, variant_info)
        with atomic_path(output) as tmp:
            onnx.save(variant, tmp)
    return VariantResult(path=output, info=variant_info, float_ops=float_ops, calibration=summary)


def _int8(
    source: Path,
    output: Path,
    info: ModelInfo,
    target: str,
    calibration: CalibrationSet | str | Path | None,
    num_calib: int,
    method: str,
    exclude: Sequence[str],
    float_type: str,
    cache_dir: str | Path | None,
    progress: bool,
) -> dict[str, Any]:
    """Calibrate and quantize ``source`` into ``output`` (or copy it from the cache); returns the summary."""
    if calibration is None:
        raise PrecisionError("INT8 needs calibration images: give a folder (--calib-images) or a COCO file and folder")
    if not isinstance(calibration, CalibrationSet):
        calibration = CalibrationSet(Path(calibration))
    paths, skipped, data_hash = _usable_images(calibration_paths(calibration, num_calib), progress)
    batch_size = info.batch or 1
    if len(paths) < batch_size:
        raise PrecisionError(f"{len(paths)} usable calibration images cannot fill one batch of {batch_size}")
    float_type = float_type if target == "tensorrt" else "fp32"
    method = method if target != "openvino" else "nncf"  # NNCF estimates its ranges its own way
    settings = {
        "target": target,
        "method": method,
        "exclude": sorted(exclude),
        "images": len(paths),
        "float_type": float_type,
    }
    key = _cache_key(source.read_bytes(), data_hash, settings)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = cache / f"int8-{key[:32]}.onnx"
    summary: dict[str, Any] = {
        "method": method,
        "float_type": float_type,
        "images": len(paths) - len(paths) % batch_size,
        "skipped": skipped,
        "source": str(Path(calibration.annotations or calibration.images).resolve()),
        "data_sha256": data_hash,
        "cache_key": key,
    }
    if _cache_entry_intact(cached):
        shutil.copyfile(cached, output)
        return {**summary, "cache": "hit"}
    job = QuantizeJob(target, source, output, tuple(paths), info, method, tuple(exclude), progress, float_type)
    code = quantize_int8_isolated(job)
    if code != 0 or not output.is_file():
        raise PrecisionError(
            f"INT8 quantization for {target} failed in its worker process (exit code {code}); its messages are above"
        )
    try:
        with atomic_path(cached) as tmp:
            shutil.copyfile(output, tmp)
        write_json(_digest_path(cached), {"sha256": sha256_file(cached)})
    except (OSError, OutputError) as error:
        logger.warning("could not cache the calibration in %s: %s", cache, error)
    return {**summary, "cache": "miss"}


def _digest_path(entry: Path) -> Path:
    return entry.with_name(entry.name + ".sha256.json")


def _cache_entry_intact(entry: Path) -> bool:
    """Whether a cached INT8 model is there and has the bytes it was written with; a damaged one (a full disk,
    a copy cut short, an edit) is removed with a warning, so the calibration runs again instead of failing
    every later run."""
    if not entry.is_file():
        return False
    try:
        recorded = json.loads(_digest_path(entry).read_text())["sha256"]
        intact = recorded == sha256_file(entry)
    except (OSError, ValueError, KeyError, TypeError):
        intact = False
    if not intact:
        logger.warning("calibration cache entry %s is damaged or incomplete: calibrating again", entry)
        for path in (entry, _digest_path(entry)):
            path.unlink(missing_ok=True)
    return intact


def prepare_onnx(
    model_path: str | Path,
    output_dir: str | Path,
    precision: str,
    *,
    target: str = "tensorrt",
    calib_images: str | Path | None = None,
    calib_annotations: str | Path | None = None,
    num_calib: int = DEFAULT_CALIBRATION_COUNT,
    calib_method: str = "entropy",
    exclude: Sequence[str] = (),
    int8_float: str = DEFAULT_INT8_FLOAT,
    input_size: tuple[int, int] | None = None,
    batch: int | None = 1,
    max_batch: int = 1,
    progress: bool = True,
) -> VariantResult:
    """The precision ONNX for a checkpoint or a poet-edge ONNX, written into ``output_dir``.

    A checkpoint is exported first (``<stem>.onnx``); an ONNX must carry poet-edge metadata (an ONNX of
    another model gets a clear error) and is returned as it is when it already has that precision.
    The variant's file name is the one :mod:`poet.optimize.variants` gives it (``<stem>.fp16.onnx``, ...).
    """
    model_path, output_dir = Path(model_path), Path(output_dir)
    if model_path.suffix.lower() == ".onnx":
        _, info = load_onnx(model_path)
        if info.precision == precision and (precision != "int8" or info.target == target):
            return VariantResult(model_path, info, info.float_ops, info.extra.get("calibration", {}))
        fp32 = model_path
    else:
        exported = export_onnx(
            model_path,
            output_dir / f"{model_path.stem}.onnx",
            input_size=input_size,
            batch=batch,
            max_batch=max_batch,
            progress=progress,
        )
        fp32, info = exported.path, exported.info
    if precision == "fp32" and fp32.parent.resolve() == output_dir.resolve():
        return VariantResult(path=fp32, info=info, float_ops=())
    calibration = None
    if calib_images is not None:
        calibration = CalibrationSet(Path(calib_images), Path(calib_annotations) if calib_annotations else None)
    elif calib_annotations is not None:
        raise PrecisionError("a calibration annotation file needs its image folder too (--calib-images)")
    return make_variant(
        fp32,
        onnx_variant(precision, target).path(output_dir / fp32.name),
        precision,
        target=target,
        calibration=calibration,
        num_calib=num_calib,
        calib_method=calib_method,
        exclude=exclude,
        int8_float=int8_float,
        progress=progress,
    )
