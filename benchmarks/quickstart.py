"""``poet quickstart``: the whole pipeline on embedded synthetic people, no download and no GPU needed.

Stages: generate synthetic people (COCO format), train the small recipe, evaluate OKS AP on the
held-out split, draw the poses found in a few held-out images, then export to ONNX, make the FP16 and
INT8 variants (INT8 calibrated on the training images) and benchmark every variant with ``poet-bench``
(latency per stage beside OKS AP; TensorRT variants are listed as skipped where TensorRT is missing).
Everything lands in one output folder with a ``report.md`` and, for tools such as
``benchmarks/scripts/readme_results.py``, the same figures in ``summary.json``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from poet.benchmarks.bench import BenchSettings, run_benchmark
from poet.checkpoint import load_model
from poet.console import add_output, positive_int, run_cli
from poet.drawing import draw_poses, save_image
from poet.evaluation import coco_split_paths, format_table
from poet.fileio import atomic_path, write_json
from poet.images import list_images, read_image
from poet.predictor import Predictor
from poet.processing import Pose
from poet.runner import evaluate_model
from poet.synthetic import generate_splits
from poet.train.config import parse_config
from poet.train.loop import Trainer

logger = logging.getLogger("poet")
RECIPE = "synthetic-small"  # the bundled recipe (train/recipes/synthetic-small.yaml)
# The synthetic people the small recipe is tuned for: at most two per image, each at least half the image tall.
RECIPE_MAX_PEOPLE = 2
RECIPE_MIN_HEIGHT = 0.5
# Every backend and precision the report compares; those that cannot run on this machine are listed as skipped.
# The OpenVINO rows are skipped with the reason where it is not installed, like TensorRT's.
BENCH_VARIANTS = (
    "torch",
    "onnx-fp32",
    "onnx-fp16",
    "onnx-int8-cpu",
    "openvino-fp32",
    "openvino-bf16",
    "openvino-int8",
    "openvino-int8-bf16",
    "trt-fp16",
    "trt-int8",
)
BENCH_ITERATIONS = 20
# INT8 calibration on this many training images: the 128x128 synthetic people need no more.
BENCH_CALIBRATION_IMAGES = 64
# Drawings of the 128x128 synthetic images are enlarged to this side so the skeletons can be read.
DRAWING_SIDE = 384


def synthesise_for_recipe(data: Path, train_images: int, val_images: int, input_size: list[int]) -> None:
    """Training and held-out splits at the recipe's input size (different random streams, no overlap)."""
    generate_splits(
        data,
        train_images,
        val_images,
        image_size=(input_size[0], input_size[1]),
        max_people=RECIPE_MAX_PEOPLE,
        min_height=RECIPE_MIN_HEIGHT,
        seed=0,
    )


def _drawn_large(image: np.ndarray, poses: list[Pose]) -> np.ndarray:
    """The poses drawn on the image enlarged to at least DRAWING_SIDE pixels, so small inputs stay legible."""
    scale = max(1, -(-DRAWING_SIDE // max(image.shape[:2])))
    enlarged = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    factors = np.array([scale, scale, 1.0])
    scaled = [replace(pose, keypoints=pose.keypoints * factors, box=pose.box * scale) for pose in poses]
    return draw_poses(enlarged, scaled)


def quickstart(output: Path, train_images: int, val_images: int, epochs: int | None, drawings: int = 4) -> Path:
    """Run every stage into ``output``; returns the report path."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    data = output / "data"
    flags = ["--config", RECIPE, "--data", str(data), "--output-dir", str(output / "train")]
    config = parse_config([*flags, *(["--epochs", str(epochs)] if epochs else [])])
    logger.info("1/5 generating %d + %d synthetic images in %s", train_images, val_images, data)
    synthesise_for_recipe(data, train_images, val_images, config.input_size)
    timings["data"] = time.perf_counter() - started

    logger.info("2/5 training the small recipe (%d epochs) into %s", config.epochs, config.output_dir)
    Trainer(config).fit()
    timings["training"] = time.perf_counter() - started - sum(timings.values())

    logger.info("3/5 evaluating on the held-out split")
    checkpoint = Path(config.output_dir) / "checkpoint.pth"
    model = load_model(checkpoint)
    val_annotations, val_dir = coco_split_paths(data, "val2017")
    stats = evaluate_model(model, val_annotations, val_dir)
    timings["evaluation"] = time.perf_counter() - started - sum(timings.values())

    logger.info("4/5 drawing poses on %d held-out images", drawings)
    predictor = Predictor(model, score_threshold=0.5)
    pictures = []
    for path in list_images(val_dir)[:drawings]:
        image = read_image(path)
        target = output / "poses" / f"{path.stem}.png"
        save_image(target, _drawn_large(image, predictor.predict_arrays([image])[0]))
        pictures.append(target.relative_to(output))
    timings["drawing"] = time.perf_counter() - started - sum(timings.values())

    logger.info("5/5 exporting, making FP16 and INT8 variants and benchmarking them")
    bench_dir = output / "bench"
    run_benchmark(
        BenchSettings(
            checkpoint=checkpoint,
            annotations=val_annotations,
            images=val_dir,
            output=bench_dir,
            work_dir=output / "variants",
            variants=BENCH_VARIANTS,
            iters=BENCH_ITERATIONS,
            limit=None,
            calib_images=coco_split_paths(data, "train2017")[1],
            calib_count=BENCH_CALIBRATION_IMAGES,
        )
    )
    timings["export, variants and benchmark"] = time.perf_counter() - started - sum(timings.values())

    architecture = config.model_config().backbone_description
    lines = [
        "# poet-edge quickstart",
        "",
        f"Checkpoint: `{checkpoint.relative_to(output)}` ({architecture}, {config.hidden_dim}-wide transformer, "
        f"input {config.input_size[0]}x{config.input_size[1]}, {config.epochs} epochs on {train_images} images).",
        "",
        format_table(stats, f"## OKS AP on {val_images} held-out synthetic images"),
        "",
        "## Time per stage",
        "",
        *(f"- {stage}: {seconds:.0f} s" for stage, seconds in timings.items()),
        f"- total: {sum(timings.values()):.0f} s",
        "",
        "## Poses on held-out images",
        "",
        *(f"![poses]({picture})" for picture in pictures),
        "",
        "## Every backend and precision (`poet-bench`)",
        "",
        (bench_dir / "bench.md").read_text().strip(),
        "",
        "![latency against OKS AP](bench/bench.png)",
        "",
    ]
    summary = {
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "train_images": train_images,
        "val_images": val_images,
        "recipe": {
            key: getattr(config, key)
            for key in (
                "backbone",
                "backbone_width",
                "input_size",
                "hidden_dim",
                "enc_layers",
                "dec_layers",
                "num_queries",
                "keypoint_refinement",
                "epochs",
                "batch_size",
                "encoder_aux_coef",
            )
        },
        "accuracy": {key: round(value, 4) for key, value in stats.items()},
        "seconds": {stage: round(seconds, 1) for stage, seconds in timings.items()},
        "bench": "bench/bench.json",
    }
    write_json(output / "summary.json", summary, indent=1)
    report = output / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(lines))
    return report


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    """``poet``: the umbrella command; its one subcommand runs the whole pipeline."""
    parser = argparse.ArgumentParser(prog="poet", description="poet-edge: POET from training to fast engines.")
    commands = parser.add_subparsers(dest="command", required=True)
    quick = commands.add_parser(
        "quickstart", help="the whole pipeline on embedded synthetic people (no download, no GPU)"
    )
    add_output(quick, "output folder", default=Path("runs/quickstart"))
    quick.add_argument(
        "--train-images", type=positive_int, default=6000, help="synthetic training images (default: 6000)"
    )
    quick.add_argument("--val-images", type=positive_int, default=200, help="held-out synthetic images (default: 200)")
    quick.add_argument("--epochs", type=positive_int, help="override the recipe's epochs")
    args = parser.parse_args(argv)
    report = quickstart(args.output, args.train_images, args.val_images, args.epochs)
    print(report.read_text())
    print(f"report written to {report}")
    return 0
