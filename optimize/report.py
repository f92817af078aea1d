"""Accuracy of exported models through ONNX Runtime, so a user knows what FP16 or INT8 cost before deploying.

Poses come from the torch-free runtime (:class:`poet.runtime.PoseEstimator`) and are scored by the same
COCO OKS evaluation as PyTorch models; Q/DQ semantics in ONNX Runtime are what TensorRT executes.
"""

from __future__ import annotations

from pathlib import Path

from poet.evaluation import evaluate_predictions
from poet.optimize.precision import VariantResult


def evaluate_onnx(
    model: str | Path,
    annotations: str | Path,
    images_dir: str | Path,
    *,
    limit: int | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, float]:
    """OKS AP/AR of a poet-edge ONNX on a COCO keypoint set, every person query submitted (no threshold)."""
    from poet.runtime import PoseEstimator

    estimator = PoseEstimator(model, backend="onnxruntime", providers=["CPUExecutionProvider"], score_threshold=0.0)
    return evaluate_predictions(
        estimator.predict_arrays,
        annotations,
        images_dir,
        batch_size=batch_size,
        limit=limit,
        progress=progress,
        desc=f"evaluating {Path(model).name}",
    )


def variant_report(variant: VariantResult, reference_ap: float | None, variant_ap: float | None) -> str:
    """What a variant kept in float, its calibration, and its OKS AP against FP32 when measured."""
    lines = [
        f"{variant.path}: {variant.info.precision}" + (f" for {variant.info.target}" if variant.info.target else "")
    ]
    counts = variant.info.extra.get("op_precision", {})
    if variant.info.precision != "fp32":
        kept = ", ".join(f"{op} {c['float']}/{c['float'] + c['reduced']}" for op, c in counts.items() if c["float"])
        lines.append(f"  kept in float (nodes/total): {kept or 'none'}")
    if variant.calibration:
        summary = variant.calibration
        lines.append(
            f"  calibration: {summary['images']} images from {summary['source']}, {summary['method']}, "
            f"{len(summary['skipped'])} unreadable skipped, cache {summary['cache']}"
        )
    if reference_ap is not None and variant_ap is not None:
        lines.append(
            f"  OKS AP: fp32 {reference_ap:.4f}, {variant.info.precision} {variant_ap:.4f} "
            f"({100 * (variant_ap - reference_ap):+.2f} points)"
        )
    return "\n".join(lines)
