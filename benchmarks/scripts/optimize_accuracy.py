"""OKS AP of FP32, FP16, INT8 for CPU and INT8 for TensorRT variants side by side, all through ONNX Runtime.

The target is each reduced precision within 1.0 AP point of FP32. Every variant is made from one FP32
export of the checkpoint, INT8 calibrated on ``--calib-images``, and each is scored on every
``--eval NAME ANNOTATIONS IMAGES`` set. AP alone says little for a weak or random-weight model, so
the drift of every query's raw outputs from FP32 on the first ``--drift-images`` of each set is
printed too (keypoints in input pixels, person score).

    python benchmarks/scripts/optimize_accuracy.py --checkpoint /tmp/recipe6/best.pth \\
        --calib-images /tmp/synth/train2017 \\
        --eval synthetic /tmp/synth/annotations/person_keypoints_val2017.json /tmp/synth/val2017 \\
        --eval coco COCO_ROOT/annotations/person_keypoints_val2017.json \\
            COCO_ROOT/val2017
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from poet.images import read_image
from poet.modelinfo import ModelInfo
from poet.optimize.export import export_onnx
from poet.optimize.precision import VariantResult, make_variant
from poet.optimize.report import evaluate_onnx, variant_report
from poet.processing import decode_keypoints, person_scores, preprocess

VARIANTS = (("fp16", "fp16", "tensorrt"), ("int8-cpu", "int8", "cpu"), ("int8-tensorrt", "int8", "tensorrt"))


def output_drift(models: dict[str, Path], paths: list[Path], info: ModelInfo) -> dict[str, tuple[float, float, float]]:
    """Per reduced-precision model: mean and max keypoint difference (input pixels) and max score difference."""
    sessions = {
        name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) for name, path in models.items()
    }
    scale = np.array(info.preprocess.input_size[::-1], dtype=np.float64)
    diffs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in models if name != "fp32"}
    for path in paths:
        batch, mask, _ = preprocess([read_image(path)], info.preprocess)
        outputs = {name: session.run(None, {"images": batch, "mask": mask}) for name, session in sessions.items()}
        ref_scores = person_scores(outputs["fp32"][0][0])[0]
        ref_kpts = decode_keypoints(outputs["fp32"][1][0])[..., :2] * scale
        for name in diffs:
            kpts = decode_keypoints(outputs[name][1][0])[..., :2] * scale
            diffs[name].append((np.abs(kpts - ref_kpts), np.abs(person_scores(outputs[name][0][0])[0] - ref_scores)))
    return {
        name: (
            float(np.mean([k.mean() for k, _ in pairs])),
            float(max(k.max() for k, _ in pairs)),
            float(max(s.max() for _, s in pairs)),
        )
        for name, pairs in diffs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--input-size", type=int, nargs=2)
    parser.add_argument("--calib-images", type=Path, required=True)
    parser.add_argument("--calib-count", type=int, default=512)
    parser.add_argument("--calib-method", default="entropy")
    parser.add_argument("--eval", nargs=3, action="append", required=True, metavar=("NAME", "ANNOTATIONS", "IMAGES"))
    parser.add_argument("--limit", type=int, help="evaluate the first N images of each set")
    parser.add_argument("--output-dir", type=Path, help="keep the ONNX files here (default: a temporary folder)")
    parser.add_argument("--cache-dir", type=Path, help="calibration cache (default: ~/.cache/poet-edge)")
    parser.add_argument("--drift-images", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        folder = args.output_dir or Path(work)
        exported = export_onnx(
            args.checkpoint,
            folder / "model.onnx",
            input_size=tuple(args.input_size) if args.input_size else None,
        )
        models: dict[str, Path] = {"fp32": exported.path}
        variants: dict[str, VariantResult] = {}
        for name, precision, target in VARIANTS:
            variants[name] = make_variant(
                exported.path,
                folder / f"model.{name}.onnx",
                precision,
                target=target,
                calibration=args.calib_images,
                num_calib=args.calib_count,
                calib_method=args.calib_method,
                cache_dir=args.cache_dir,
            )
            models[name] = variants[name].path
        drift = {
            set_name: output_drift(models, sorted(Path(images).glob("*.jpg"))[: args.drift_images], exported.info)
            for set_name, _, images in args.eval
        }
        table = {
            (model, set_name): evaluate_onnx(path, annotations, images, limit=args.limit)["AP"]
            for model, path in models.items()
            for set_name, annotations, images in args.eval
        }

    print(f"\nOKS AP through ONNX Runtime (CPU) of {args.checkpoint}, {exported.info.preprocess.input_size}")
    print("| set | " + " | ".join(models) + " |")
    print("|---|" + "---:|" * len(models))
    for set_name, _, _ in args.eval:
        cells = []
        for model in models:
            value = table[(model, set_name)]
            delta = "" if model == "fp32" else f" ({100 * (value - table[('fp32', set_name)]):+.2f})"
            cells.append(f"{value:.4f}{delta}")
        print(f"| {set_name} | " + " | ".join(cells) + " |")
    print("\ndrift from FP32 over all queries: keypoints mean / max (input pixels), person score max")
    print("| set | " + " | ".join(variants) + " |")
    print("|---|" + "---:|" * len(variants))
    for set_name, per_model in drift.items():
        print(
            f"| {set_name} | " + " | ".join(f"{k:.2f} / {m:.1f} / {sc:.3f}" for k, m, sc in per_model.values()) + " |"
        )
    for variant in variants.values():
        print(variant_report(variant, None, None))


if __name__ == "__main__":
    main()
