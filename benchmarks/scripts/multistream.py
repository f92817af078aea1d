"""Several video streams through one ``poet-run`` (frames batched into shared inferences) against one process each.

Makes ``--streams`` synthetic videos of people walking (``poet-synth --videos``, encoded as MPEG-4), then, in turns
for ``--rounds`` rounds (this machine's speed drifts over minutes): one ``poet-run`` on all of them; the same with
``--track``; and as many ``poet-run`` processes at once, one video each, with their default threads and with
``--threads 1``. Per stream it reports the FPS that ``poet-run`` prints (end to end, after the model is loaded) and
the wall time of the whole run, model loading and start-up included. Give a model whose batch holds the streams
(``poet-export ... --max-batch 4``); with batch 1 the one process runs its streams one inference after another.

    poet-export runs/quickstart/train/checkpoint.pth -o /tmp/ms/model.onnx --max-batch 4 --uint8-input \\
        --precision int8 --target cpu --calib-images runs/quickstart/data/train2017
    python benchmarks/scripts/multistream.py --model /tmp/ms/model.int8-cpu.onnx
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2

from poet.images import read_image
from poet.runtime import PoseEstimator
from poet.synthetic import generate_videos

# What poet-run prints per stream: "300 frames from clip.mp4 in 4.1 s: 73.2 FPS end to end; ..."
SUMMARY = re.compile(r"^(\d+) frames from (\S+) in [\d.]+ s: ([\d.]+) FPS end to end", re.MULTILINE)


def encode_videos(folder: Path, count: int, frames: int, size: int) -> list[Path]:
    """``count`` synthetic videos of people walking, as .mp4 files in ``folder``."""
    videos = []
    for sequence in generate_videos(folder / "frames", count, frames, image_size=(size, size), progress=False):
        path = folder / f"{sequence.name}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, (size, size))
        for image in sorted((sequence / "img1").glob("*.jpg")):
            writer.write(read_image(image))
        writer.release()
        videos.append(path)
    return videos


def poet_run(sources: Sequence[Path], model: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "poet.runtime.cli", *map(str, sources), "--model", str(model)]
    command += ["--jsonl", str(out), "--no-progress", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(processes: Sequence[subprocess.Popen[str]]) -> list[float]:
    """Wait for every process; the per-stream FPS they printed."""
    rates = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"poet-run failed ({process.returncode}): {err.strip().splitlines()[-1:]}")
        rates += [float(match[2]) for match in SUMMARY.findall(out)]
    return rates


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="poet-edge ONNX whose batch holds the streams")
    parser.add_argument("--streams", type=int, default=4, help="videos at once (default: 4)")
    parser.add_argument("--frames", type=int, default=300, help="frames per video (default: 300)")
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels (default: 128)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every setting in turns (default: 3)")
    args = parser.parse_args(argv)
    batch = PoseEstimator(args.model).backend.max_batch
    with tempfile.TemporaryDirectory(prefix="poet-multistream-") as temp:
        folder = Path(temp)
        videos = encode_videos(folder, args.streams, args.frames, args.size)
        settings = {
            f"one poet-run, {args.streams} sources": lambda: [poet_run(videos, args.model, folder / "one.jsonl")],
            f"one poet-run, {args.streams} sources, --track": lambda: [
                poet_run(videos, args.model, folder / "track.jsonl", "--track")
            ],
            f"{args.streams} poet-run processes": lambda: [
                poet_run([video], args.model, folder / f"{video.stem}.jsonl") for video in videos
            ],
            f"{args.streams} poet-run processes, --threads 1": lambda: [
                poet_run([video], args.model, folder / f"{video.stem}.t1.jsonl", "--threads", "1") for video in videos
            ],
        }
        rates: dict[str, list[float]] = {name: [] for name in settings}
        walls: dict[str, list[float]] = {name: [] for name in settings}
        for _ in range(args.rounds):
            for name, start in settings.items():
                began = time.perf_counter()
                rates[name] += finish(start())
                walls[name].append(time.perf_counter() - began)
    print(
        f"{args.streams} synthetic videos of {args.frames} frames at {args.size}x{args.size}; {args.model} "
        f"(batch up to {batch}); {args.rounds} rounds in turns, medians\n"
    )
    print("| setting | FPS per stream | all streams, FPS | wall s (start-up included) |\n|---|---:|---:|---:|")
    for name in settings:
        per_stream = statistics.median(rates[name])
        wall = statistics.median(walls[name])
        print(f"| {name} | {per_stream:.1f} | {per_stream * args.streams:.1f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
