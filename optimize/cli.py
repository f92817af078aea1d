"""``poet-export``: checkpoint -> verified ONNX, optionally its FP16 or INT8 variant with an accuracy report."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from poet.console import run_cli
from poet.errors import PoetError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poet-export",
        description=(
            "Export a POET checkpoint (poet-edge's or the authors') to ONNX, check it against PyTorch, and "
            "optionally write an FP16 or INT8 variant beside it with its OKS AP against FP32."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="POET checkpoint (.pth)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="FP32 ONNX to write (e.g. model.onnx)")
    parser.add_argument(
        "--input-size", type=int, nargs=2, metavar=("H", "W"), help="letterbox size (default: from the checkpoint)"
    )
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, help="fixed batch size (default: 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="dynamic batch dimension named 'batch'")
    parser.add_argument("--max-batch", type=int, default=8, help="largest dynamic batch (default: 8)")
    parser.add_argument(
        "--uint8-input", action="store_true", help="graph takes uint8 BGR [B,H,W,3] letterboxed pixels and normalises"
    )
    parser.add_argument(
        "--decode", action="store_true", help="graph outputs person scores and keypoints in input pixels"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default: 17)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32", help="variant to make")
    parser.add_argument(
        "--target",
        choices=("tensorrt", "cpu"),
        default="tensorrt",
        help="INT8 layout: symmetric Q/DQ for TensorRT (ModelOpt) or ONNX Runtime's CPU QDQ (default: tensorrt)",
    )
    parser.add_argument("--calib-images", type=Path, help="folder of calibration images (INT8)")
    parser.add_argument("--calib-annotations", type=Path, help="COCO annotation file choosing the calibration images")
    parser.add_argument("--calib-count", type=int, default=512, help="calibration images to use (default: 512)")
    parser.add_argument(
        "--calib-method", choices=("entropy", "max", "percentile"), default="entropy", help="(default: entropy)"
    )
    parser.add_argument(
        "--exclude",
        nargs="+",
        default=(),
        metavar="OP",
        help="keep more in float: op types (Gemm) or node-name regular expressions (/layer4/)",
    )
    parser.add_argument("--cache-dir", type=Path, help="calibration cache (default: ~/.cache/poet-edge)")
    parser.add_argument("--eval-annotations", type=Path, help="COCO keypoint file to measure the variant's OKS AP on")
    parser.add_argument("--eval-images", type=Path, help="image folder of --eval-annotations")
    parser.add_argument("--eval-limit", type=int, help="evaluate only the first N images")
    return parser


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if (args.eval_annotations is None) != (args.eval_images is None):
        raise PoetError("give both --eval-annotations and --eval-images, or neither")
    if args.precision == "int8" and args.calib_images is None:
        raise PoetError(
            "--precision int8 needs calibration images: --calib-images DIR (and optionally --calib-annotations)"
        )
    if args.calib_annotations is not None and args.calib_images is None:
        raise PoetError("--calib-annotations needs --calib-images, the folder its images are in")

    from poet.optimize.export import export_onnx
    from poet.optimize.precision import CalibrationSet, make_variant
    from poet.optimize.report import evaluate_onnx, variant_report

    exported = export_onnx(
        args.checkpoint,
        args.output,
        input_size=tuple(args.input_size) if args.input_size else None,
        batch=None if args.dynamic_batch else args.batch,
        max_batch=args.max_batch,
        uint8_input=args.uint8_input,
        decode=args.decode,
        opset=args.opset,
    )
    height, width = exported.info.preprocess.input_size
    print(
        f"wrote {exported.path}: {height}x{width}, batch {exported.info.batch or f'1..{exported.info.max_batch}'}, "
        f"outputs {', '.join(exported.info.output_names)}; ONNX Runtime vs PyTorch max |diff| "
        f"{exported.max_abs_diff:.2e}"
    )
    if args.precision == "fp32":
        return 0
    suffix = f"int8-{args.target}" if args.precision == "int8" else args.precision
    calibration = CalibrationSet(args.calib_images, args.calib_annotations) if args.calib_images else None
    variant = make_variant(
        exported.path,
        exported.path.with_suffix(f".{suffix}.onnx"),
        args.precision,
        target=args.target,
        calibration=calibration,
        num_calib=args.calib_count,
        calib_method=args.calib_method,
        exclude=args.exclude,
        cache_dir=args.cache_dir,
    )
    reference_ap = variant_ap = None
    if args.eval_annotations is not None:
        evaluate = {"annotations": args.eval_annotations, "images_dir": args.eval_images, "limit": args.eval_limit}
        reference_ap = evaluate_onnx(exported.path, **evaluate)["AP"]
        variant_ap = evaluate_onnx(variant.path, **evaluate)["AP"]
    print(variant_report(variant, reference_ap, variant_ap))
    return 0
