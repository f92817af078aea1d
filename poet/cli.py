"""Command-line tools of the model library: ``poet`` (the umbrella), ``poet-eval`` and ``poet-predict``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from poet.console import run_cli
from poet.errors import DatasetError
from poet.evaluation import coco_split_paths


def coco_paths(data: Path | None, split: str, annotations: Path | None, images: Path | None) -> tuple[Path, Path]:
    """Annotation file and image folder from a COCO-layout root (``annotations/``, ``<split>/``) or explicit paths."""
    if annotations is None or images is None:
        if data is None:
            raise DatasetError("give --data COCO_ROOT, or both --annotations FILE and --images DIR")
        default_annotations, default_images = coco_split_paths(data, split)
        annotations = annotations or default_annotations
        images = images or default_images
    if not images.is_dir():
        raise DatasetError(f"image folder {images} not found")
    return annotations, images


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input-size", type=int, nargs=2, metavar=("H", "W"), help="letterbox size (default: from the checkpoint)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default: 4)")


@run_cli
def eval_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="poet-eval", description="Run a POET checkpoint over a COCO-layout dataset and print OKS AP/AR."
    )
    parser.add_argument("checkpoint", type=Path, help="poet-edge or authors' POET checkpoint (.pth)")
    parser.add_argument("--data", type=Path, help="COCO root holding annotations/ and the split's image folder")
    parser.add_argument("--split", default="val2017", help="split name under --data (default: val2017)")
    parser.add_argument("--annotations", type=Path, help="person_keypoints JSON (overrides --data)")
    parser.add_argument("--images", type=Path, help="image folder (overrides --data)")
    parser.add_argument("--results", type=Path, help="also write the COCO results JSON here")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images (quick checks)")
    _add_model_options(parser)
    args = parser.parse_args(argv)

    from poet.runner import evaluate_checkpoint

    annotations, images = coco_paths(args.data, args.split, args.annotations, args.images)
    input_size = tuple(args.input_size) if args.input_size else None
    stats = evaluate_checkpoint(
        args.checkpoint,
        annotations,
        images,
        device=args.device,
        input_size=input_size,
        batch_size=args.batch_size,
        limit=args.limit,
        results_path=args.results,
    )
    from poet.evaluation import format_table

    print(format_table(stats, f"OKS keypoint evaluation of {args.checkpoint} on {annotations}"))
    return 0


@run_cli
def predict_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="poet-predict", description="Draw the poses a POET checkpoint finds in images (PyTorch)."
    )
    parser.add_argument("images", type=Path, nargs="+", help="image files or folders")
    parser.add_argument("--model", type=Path, required=True, help="POET checkpoint (.pth)")
    parser.add_argument("-o", "--output", type=Path, default=Path("poses"), help="output folder (default: poses/)")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="minimum person score (default: 0.5)")
    parser.add_argument("--max-people", type=int, help="keep at most this many people per image")
    _add_model_options(parser)
    args = parser.parse_args(argv)

    from poet.runner import predict_files

    input_size = tuple(args.input_size) if args.input_size else None
    written = predict_files(
        args.model,
        args.images,
        args.output,
        device=args.device,
        input_size=input_size,
        score_threshold=args.score_threshold,
        max_people=args.max_people,
        batch_size=args.batch_size,
    )
    print(f"wrote {len(written)} annotated images and poses.json to {args.output}")
    return 0


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="poet", description="poet-edge: POET from training to fast engines.")
    commands = parser.add_subparsers(dest="command", required=True)
    quick = commands.add_parser(
        "quickstart", help="the whole pipeline on embedded synthetic people (no download, no GPU)"
    )
    quick.add_argument("--output", type=Path, default=Path("runs/quickstart"), help="output folder")
    quick.add_argument("--train-images", type=int, default=6000, help="synthetic training images (default: 6000)")
    quick.add_argument("--val-images", type=int, default=200, help="held-out synthetic images (default: 200)")
    quick.add_argument("--epochs", type=int, help="override the recipe's epochs")
    args = parser.parse_args(argv)

    from poet.benchmarks.quickstart import quickstart

    report = quickstart(args.output, args.train_images, args.val_images, args.epochs)
    print(report.read_text())
    print(f"report written to {report}")
    return 0
