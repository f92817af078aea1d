"""``poet-export``: checkpoint -> verified ONNX, optionally its FP16 or INT8 variant with an accuracy report."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from poet import console
from poet.errors import PoetError
from poet.modelinfo import INT8_TARGETS, PRECISIONS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poet-export",
        description=(
            "Export a POET checkpoint (poet-edge's or the authors') to ONNX, check it against PyTorch, and "
            "optionally write an FP16 or INT8 variant beside it with its OKS AP against FP32."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="POET checkpoint (.pth)")
    console.add_output(parser, "FP32 ONNX to write (e.g. model.onnx); variants are written beside it")
    console.add_input_size(parser)
    console.add_batch(parser, dynamic=True)
    parser.add_argument(
        "--uint8-input", action="store_true", help="graph takes uint8 BGR [B,H,W,3] letterboxed pixels and normalises"
    )
    parser.add_argument(
        "--decode", action="store_true", help="graph outputs person scores and keypoints in input pixels"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default: 17)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="variant to make (default: fp32)")
    parser.add_argument(
        "--target",
        choices=INT8_TARGETS,
        default="tensorrt",
        help="INT8 layout: symmetric Q/DQ for TensorRT (ModelOpt), ONNX Runtime's CPU QDQ, or NNCF's for OpenVINO "
        "(default: tensorrt)",
    )
    console.add_precision_options(parser)
    parser.add_argument("--cache-dir", type=Path, help="calibration cache (default: ~/.cache/poet-edge)")
    parser.add_argument("--eval-annotations", type=Path, help="COCO keypoint file to measure the variant's OKS AP on")
    parser.add_argument("--eval-images", type=Path, help="image folder of --eval-annotations")
    parser.add_argument("--eval-limit", type=int, help="evaluate only the first N images")
    console.add_progress(parser)
    return parser


@console.run_cli
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

    from poet.evaluation import load_coco_keypoints
    from poet.optimize.export import export_onnx
    from poet.optimize.precision import CalibrationSet, calibration_paths, make_variant
    from poet.optimize.report import evaluate_onnx, variant_report
    from poet.optimize.variants import onnx_variant

    progress = not args.no_progress
    # Calibration and evaluation data are checked before the export, so a bad file or an empty folder wastes no
    # minutes and leaves no half-made set of files behind.
    if args.precision == "int8":
        calibration_paths(CalibrationSet(args.calib_images, args.calib_annotations), args.calib_count)
    if args.eval_annotations is not None:
        load_coco_keypoints(args.eval_annotations)
    exported = export_onnx(
        args.checkpoint,
        args.output,
        input_size=console.input_size(args),
        batch=None if args.max_batch else (args.batch or 1),
        max_batch=args.max_batch or args.batch or 1,
        uint8_input=args.uint8_input,
        decode=args.decode,
        opset=args.opset,
        progress=progress,
    )
    height, width = exported.info.preprocess.input_size
    print(
        f"wrote {exported.path}: {height}x{width}, batch {exported.info.batch or f'1..{exported.info.max_batch}'}, "
        f"outputs {', '.join(exported.info.output_names)}; ONNX Runtime vs PyTorch max |diff| "
        f"{exported.max_abs_diff:.2e}"
    )
    if args.precision == "fp32":
        return 0
    row = onnx_variant(args.precision, args.target)
    calibration = CalibrationSet(args.calib_images, args.calib_annotations) if args.calib_images else None
    variant = make_variant(
        exported.path,
        row.path(exported.path),
        args.precision,
        target=args.target,
        calibration=calibration,
        num_calib=args.calib_count,
        calib_method=args.calib_method,
        exclude=args.exclude,
        int8_float=args.int8_float,
        cache_dir=args.cache_dir,
        progress=progress,
    )
    reference_ap = variant_ap = None
    if args.eval_annotations is not None:
        evaluate = {
            "annotations": args.eval_annotations,
            "images_dir": args.eval_images,
            "limit": args.eval_limit,
            "progress": progress,
        }
        reference_ap = evaluate_onnx(exported.path, **evaluate)["AP"]
        variant_ap = evaluate_onnx(variant.path, **evaluate)["AP"]
    print(variant_report(variant, reference_ap, variant_ap))
    return 0
