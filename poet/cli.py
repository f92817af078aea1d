"""Command-line tools of the model library: ``poet-eval`` and ``poet-predict`` (PyTorch)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from poet.console import add_batch, add_input_size, add_output, add_progress, input_size, run_cli
from poet.evaluation import resolve_coco_paths
from poet.fileio import check_not_input, check_writable


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    add_input_size(parser)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    add_batch(parser, default=4)
    add_progress(parser)


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    """What :func:`_add_model_options` parsed, as the keyword arguments of the runner's functions."""
    return {
        "device": args.device,
        "input_size": input_size(args),
        "batch_size": args.batch,
        "progress": not args.no_progress,
    }


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

    from poet.evaluation import format_table
    from poet.runner import evaluate_checkpoint

    annotations, images = resolve_coco_paths(args.data, args.split, args.annotations, args.images)
    if args.results is not None:  # before minutes of evaluation, not after
        check_writable(args.results)
        check_not_input(args.results, args.checkpoint, annotations)
    stats = evaluate_checkpoint(
        args.checkpoint, annotations, images, limit=args.limit, results_path=args.results, **_model_options(args)
    )
    print(format_table(stats, f"OKS keypoint evaluation of {args.checkpoint} on {annotations}"))
    return 0


@run_cli
def predict_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="poet-predict", description="Draw the poses a POET checkpoint finds in images (PyTorch)."
    )
    parser.add_argument("images", type=Path, nargs="+", help="image files or folders")
    parser.add_argument("--checkpoint", type=Path, required=True, help="POET checkpoint (.pth, ours or the authors')")
    add_output(parser, "folder for the drawn images and poses.json", default=Path("poses"))
    parser.add_argument("--score-threshold", type=float, default=0.5, help="minimum person score (default: 0.5)")
    parser.add_argument("--max-people", type=int, help="keep at most this many people per image")
    _add_model_options(parser)
    args = parser.parse_args(argv)

    from poet.images import skipped_note
    from poet.runner import predict_files

    written, skipped = predict_files(
        args.checkpoint,
        args.images,
        args.output,
        score_threshold=args.score_threshold,
        max_people=args.max_people,
        **_model_options(args),
    )
    print(f"wrote {len(written)} annotated images and poses.json to {args.output}{skipped_note(skipped)}")
    return 0
