"""CPU engines side by side: ONNX Runtime and OpenVINO on the same poet-edge ONNX files, in turns.

Each ``--model NAME=PATH@BACKEND[:PRECISION]`` is loaded through the runtime (``PoseEstimator``), so what is
timed is what ``poet-run`` runs. This machine's speed drifts 2-3x over minutes, so models are timed
round-robin (a few inferences of each per round, many rounds) on one letterboxed photograph and compared as
ratios of medians to the first model. Then every model runs on each ``--images`` photograph and is compared
with the first model of the same file precision: the largest keypoint difference over all queries (in pixels
of the model's input) and the person count at ``--score-threshold``. ``--images`` is a folder of photographs
of people, e.g. COCO val2017:

    python benchmarks/scripts/cpu_engines.py --images coco/val2017 \\
        --model ort-fp32=r50.onnx@onnxruntime --model ort-int8=r50.int8-cpu.onnx@onnxruntime \\
        --model ov-fp32=r50.onnx@openvino:fp32 --model ov-bf16=r50.onnx@openvino:bf16 \\
        --model ov-int8=r50.int8-cpu.onnx@openvino:fp32
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poet.images import list_images, read_image
from poet.modelinfo import RAW_OUTPUTS
from poet.processing import decode_keypoints
from poet.runtime import PoseEstimator


@dataclass
class Entry:
    name: str
    path: Path
    backend: str
    precision: str | None


def parse_entry(text: str) -> Entry:
    """``NAME=PATH@BACKEND[:PRECISION]`` -> an :class:`Entry`."""
    name, _, rest = text.partition("=")
    path, _, engine = rest.rpartition("@")
    backend, _, precision = engine.partition(":")
    if not (name and path and backend):
        raise argparse.ArgumentTypeError(f"expected NAME=PATH@BACKEND[:PRECISION], got {text!r}")
    return Entry(name, Path(path), backend, precision or None)


def keypoints_px(estimator: PoseEstimator, outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Every query's keypoints in pixels of the model's input, from raw or decoded outputs."""
    height, width = estimator.info.preprocess.input_size
    if estimator.info.output_names == RAW_OUTPUTS:
        return decode_keypoints(outputs["pred_kpts"])[..., :2] * np.array([width, height])
    return outputs["keypoints"][..., :2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=parse_entry, action="append", required=True, metavar="NAME=PATH@BACKEND")
    parser.add_argument("--images", type=Path, required=True, help="photographs: the first is timed, all compared")
    parser.add_argument("--limit", type=int, default=20, help="photographs compared (default: 20)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs-per-round", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, help="CPU threads of every engine (default: theirs)")
    parser.add_argument("--score-threshold", type=float, default=0.5)
    args = parser.parse_args()

    estimators = {
        entry.name: PoseEstimator(
            entry.path,
            entry.backend,
            precision=entry.precision,
            threads=args.threads,
            spinning=entry.backend != "onnxruntime",
            score_threshold=args.score_threshold,
        )
        for entry in args.model
    }
    photos = [read_image(path) for path in list_images(args.images)[: args.limit]]
    prepared = {name: estimator.prepare(photos[:1])[0] for name, estimator in estimators.items()}
    for name, estimator in estimators.items():
        for _ in range(args.warmup):
            estimator.infer(prepared[name])
    times: dict[str, list[float]] = {name: [] for name in estimators}
    for _ in range(args.rounds):
        for name, estimator in estimators.items():
            for _ in range(args.runs_per_round):
                start = time.perf_counter()
                estimator.infer(prepared[name])
                times[name].append(time.perf_counter() - start)

    first = args.model[0]
    height, width = estimators[first.name].info.preprocess.input_size
    print(
        f"\nbatch 1, {height}x{width}, {args.rounds} rounds x {args.runs_per_round} runs in turns after "
        f"{args.warmup} warm-up runs, {platform.processor() or platform.machine()}"
    )
    print(f"| model | file | backend | median ms | p10 ms | p90 ms | ratio to {first.name} |")
    print("|---|---|---|---:|---:|---:|---:|")
    base = statistics.median(times[first.name])
    for entry in args.model:
        samples = sorted(1000 * value for value in times[entry.name])
        median = statistics.median(samples)
        p10, p90 = samples[len(samples) // 10], samples[(9 * len(samples)) // 10]
        engine = entry.backend + (f" {entry.precision}" if entry.precision else "")
        print(
            f"| {entry.name} | {entry.path.name} | {engine} | {median:.1f} | {p10:.1f} | {p90:.1f} "
            f"| {median / (1000 * base):.2f}x |"
        )

    # Poses of each model against the first model that reads the same file.
    reference_of: dict[Path, str] = {}
    for entry in args.model:
        reference_of.setdefault(entry.path, entry.name)
    print(f"\nagainst the first model of the same file, on {len(photos)} photographs of {args.images}:")
    print(f"| model | against | max keypoint diff (input px) | mean diff | people at {args.score_threshold} | equal |")
    print("|---|---|---:|---:|---|---|")
    for entry in args.model:
        reference = reference_of[entry.path]
        if reference == entry.name:
            continue
        ours, theirs = estimators[entry.name], estimators[reference]
        diffs, counts, equal = [], [0, 0], 0
        for photo in photos:
            mine = ours.infer(ours.prepare([photo])[0])
            other = theirs.infer(theirs.prepare([photo])[0])
            diffs.append(np.abs(keypoints_px(ours, mine) - keypoints_px(theirs, other)).ravel())
            poses = ours.predict_arrays([photo])[0], theirs.predict_arrays([photo])[0]
            counts[0] += len(poses[0])
            counts[1] += len(poses[1])
            equal += len(poses[0]) == len(poses[1])
        every = np.concatenate(diffs)
        print(
            f"| {entry.name} | {reference} | {every.max():.2f} | {every.mean():.3f} | {counts[0]} vs {counts[1]} "
            f"| {equal}/{len(photos)} images |"
        )


if __name__ == "__main__":
    main()
