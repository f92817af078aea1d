"""Per-frame cost of the runtime around the model: letterbox plus decoding of a 640x480 frame on one core.

Target: under 3 ms, and under 5% of ONNX Runtime INT8 inference, which is why exported models take
uint8 BGR pixels and normalise in the graph. Measures both input layouts of POET-R50 at 512x512
(random weights: speed does not depend on them) or of ``--checkpoint``, and the CPU INT8 variant of
the uint8 model. Variants are timed in turns, as this machine's CPU speed drifts.
Run: ``python benchmarks/scripts/runtime_speed.py [--checkpoint CKPT] [--work-dir DIR]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from poet.images import list_images, read_image
from poet.runtime import PoseEstimator

FRAME_SIZE = (640, 480)


@dataclass
class Timings:
    """Per-call seconds of one variant, one list entry per round."""

    prepare: list[float] = field(default_factory=list)
    inference: list[float] = field(default_factory=list)
    decode: list[float] = field(default_factory=list)
    people: int = 0


def export_models(work_dir: Path, checkpoint: Path | None, calibration: Path | None) -> dict[str, Path]:
    """FP32 ONNX with uint8 and float input and, when calibration images are given, the CPU INT8 variant.

    Exported once into ``work_dir`` and reused by later runs.
    """
    import torch

    from poet.model import PoetConfig, build_model
    from poet.optimize.export import export_onnx
    from poet.processing import PreprocessConfig

    work_dir.mkdir(parents=True, exist_ok=True)
    stem = checkpoint.stem if checkpoint is not None else "poet-r50-512"
    paths = {
        "fp32 uint8": work_dir / f"{stem}-uint8.onnx",
        "fp32 float": work_dir / f"{stem}-float.onnx",
    }
    torch.manual_seed(0)
    source = checkpoint or build_model(PoetConfig(), PreprocessConfig(input_size=(512, 512)))
    for name, path in paths.items():
        if not path.is_file():
            export_onnx(source, path, uint8_input=name.endswith("uint8"), progress=False)
    if calibration is not None:
        from poet.optimize.precision import make_variant

        paths["int8 uint8"] = work_dir / f"{stem}-uint8-int8cpu.onnx"
        if not paths["int8 uint8"].is_file():
            make_variant(
                paths["fp32 uint8"], paths["int8 uint8"], "int8", target="cpu", calibration=calibration, num_calib=32
            )
    return paths


def camera_frames(photos: Path, count: int = 16) -> list[np.ndarray]:
    """Real photographs (a folder of them, e.g. COCO val2017) resized to 640x480, as a camera would deliver them.

    Several distinct frames (14 MiB together), so each letterbox reads memory that is not in cache, like a new frame.
    """
    return [cv2.resize(read_image(path), FRAME_SIZE) for path in list_images(photos)[:count]]


def per_call(calls: int, function: Callable[..., object], *arguments: Sequence[object]) -> float:
    """Mean seconds per call of ``function``; call ``i`` gets element ``i`` (cyclically) of each argument list."""
    started = time.perf_counter()
    for index in range(calls):
        function(*(values[index % len(values)] for values in arguments))
    return (time.perf_counter() - started) / calls


def measure(models: dict[str, Path], photos: Path, rounds: int, calls: int, inference_calls: int) -> dict[str, Timings]:
    """Time prepare (letterbox), inference and decode of every model, one round of each in turn."""
    frames = camera_frames(photos)
    # Threshold 0 decodes every query labelled person: the worst case of decoding cost.
    estimators = {name: PoseEstimator(path, score_threshold=0.0) for name, path in models.items()}
    timings = {name: Timings() for name in models}
    for _ in range(rounds):
        for name, estimator in estimators.items():
            (images, mask), letterboxes = estimator.prepare(frames[:1])
            outputs = estimator.backend.infer(images, mask)
            timings[name].prepare.append(per_call(calls, estimator.prepare, [[frame] for frame in frames]))
            timings[name].inference.append(per_call(inference_calls, estimator.backend.infer, [images], [mask]))
            timings[name].decode.append(per_call(calls, estimator.decode, [outputs], [letterboxes]))
            timings[name].people = len(estimator.decode(outputs, letterboxes)[0])
    return timings


def report(timings: dict[str, Timings]) -> str:
    int8 = timings.get("int8 uint8")
    reference = statistics.median(int8.inference) if int8 else None
    lines = [
        f"{'model':<12} {'letterbox ms':>12} {'decode ms':>10} {'pre+post ms':>12} {'inference ms':>13} "
        f"{'of inference':>13} {'of INT8 inf.':>13} {'people':>7}"
    ]
    for name, t in timings.items():
        prepare, decode, inference = (1000 * statistics.median(v) for v in (t.prepare, t.decode, t.inference))
        around = prepare + decode
        of_int8 = f"{100 * around / (1000 * reference):12.2f}%" if reference else f"{'n/a':>13}"
        lines.append(
            f"{name:<12} {prepare:12.3f} {decode:10.3f} {around:12.3f} {inference:13.1f} "
            f"{100 * around / inference:12.2f}% {of_int8} {t.people:7d}"
        )
    return "\n".join(lines)


def add_model_options(parser: argparse.ArgumentParser, photos: str) -> None:
    """The model to export, where exports are kept, the photographs and the INT8 calibration folder."""
    parser.add_argument("--checkpoint", type=Path, help="POET checkpoint to export (default: POET-R50 512x512, random)")
    parser.add_argument("--work-dir", type=Path, help="where exported models are kept between runs (default: temp)")
    parser.add_argument("--photos", type=Path, required=True, help=photos)
    parser.add_argument("--calib-images", type=Path, help="INT8 calibration folder (no INT8 models without it)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, "folder of photographs to use as camera frames")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of all models in turn (default: 5)")
    parser.add_argument("--calls", type=int, default=50, help="letterbox/decode calls per round (default: 50)")
    parser.add_argument("--inference-calls", type=int, default=3, help="inferences per round (default: 3)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    calibration = args.calib_images
    with tempfile.TemporaryDirectory() as temp:
        models = export_models(args.work_dir or Path(temp), args.checkpoint, calibration)
        timings = measure(models, args.photos, args.rounds, args.calls, args.inference_calls)
    what = args.checkpoint or "POET-R50 512x512 (random weights)"
    print(f"{what}: {FRAME_SIZE[0]}x{FRAME_SIZE[1]} frames, letterbox and decode on one core (cv2 threads 1),")
    print(f"ONNX Runtime inference with its default threads; medians of {args.rounds} rounds; people: poses decoded")
    print("at score threshold 0 (every query labelled person, the most decoding work)")
    if "int8 uint8" not in timings:
        print("no INT8 variant (no calibration images): shares are of FP32 inference only")
    print(report(timings))


if __name__ == "__main__":
    main()
