"""End-to-end frames per second of ``poet-run`` on a video of coco-mini photographs, and its memory over 1,000 frames.

Makes a 640x480 video from the coco-mini val photographs, runs the real ``poet-run`` command on it
(with JSON lines only, and with an annotated video as well) and prints its FPS; then a process that
imports only the runtime loads the model, warms up, runs 1,000 more frames and reports its resident
memory (RSS) after the warm-up and at the end, which must not grow. The model is INT8 for CPU when
the optimize stage can make it, else FP32 (said in the output).
Run: ``python benchmarks/scripts/runtime_video.py [--checkpoint CKPT] [--work-dir DIR] [--frames 1000]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
from runtime_speed import FRAME_SIZE, add_model_options, export_models

from poet.images import list_images, read_image

WARM_UP_FRAMES = 50
# Runs in a fresh interpreter so the RSS is that of an app embedding the runtime: no torch, no exporter.
MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys
    from poet.runtime import PoseEstimator
    from poet.runtime.cli import run
    from poet.runtime.sources import FrameSource

    def rss_mib(field="VmRSS"):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

    model, video, warm_up, frames, jsonl = sys.argv[1:6]
    estimator = PoseEstimator(model)
    loaded = rss_mib()
    run(estimator, FrameSource(video), max_frames=int(warm_up), progress=False)
    warm = rss_mib()
    stats = run(estimator, FrameSource(video), jsonl=jsonl, max_frames=int(frames), progress=False)
    print(json.dumps({"loaded": loaded, "warm": warm, "end": rss_mib(), "peak": rss_mib("VmHWM"),
                      "frames": stats.frames, "fps": stats.frames / stats.elapsed,
                      "torch_imported": "torch" in sys.modules}))
    """
)


def make_video(path: Path, folder: Path, frames: int) -> Path:
    """The photographs of ``folder`` resized to 640x480, cycled to ``frames`` frames (MJPEG, fast to decode)."""
    photos = [cv2.resize(read_image(p), FRAME_SIZE) for p in list_images(folder)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, FRAME_SIZE)
    for index in range(frames):
        writer.write(photos[index % len(photos)])
    writer.release()
    return path


def poet_run_fps(model: Path, video: Path, frames: int, work_dir: Path, save_video: bool) -> tuple[str, float]:
    """``poet-run``'s own summary line, and frames per second including its start-up."""
    command = [sys.executable, "-m", "poet.runtime.cli", str(video), "--model", str(model), "--no-progress"]
    command += ["--max-frames", str(frames), "--jsonl", str(work_dir / "poses.jsonl")]
    if save_video:
        command += ["--save-video", str(work_dir / "annotated.avi")]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1], frames / (time.perf_counter() - started)


def memory(model: Path, video: Path, frames: int, work_dir: Path) -> dict[str, float]:
    command = [sys.executable, "-c", MEMORY_PROBE, str(model), str(video), str(WARM_UP_FRAMES), str(frames)]
    result = subprocess.run([*command, str(work_dir / "probe.jsonl")], capture_output=True, text=True, check=True)
    data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, "folder of photographs to make the video from")
    parser.add_argument(
        "--fps-frames", type=int, default=100, help="frames for each poet-run FPS figure (default: 100)"
    )
    parser.add_argument("--frames", type=int, default=1000, help="frames after warm-up for the memory figure")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temp:
        work_dir = args.work_dir or Path(temp)
        models = export_models(work_dir, args.checkpoint, args.calib_images)
        name = "int8 uint8" if "int8 uint8" in models else "fp32 uint8"
        model = models[name]
        video = make_video(Path(temp) / "people.avi", args.photos, max(args.frames, args.fps_frames))
        what = args.checkpoint or "POET-R50 512x512 (random weights)"
        print(f"{what}, {name} ONNX on ONNX Runtime CPU; video of {FRAME_SIZE[0]}x{FRAME_SIZE[1]} coco-mini photos")
        for save_video in (False, True):
            summary, with_start = poet_run_fps(model, video, args.fps_frames, Path(temp), save_video)
            outputs = "--jsonl --save-video" if save_video else "--jsonl"
            print(f"poet-run {outputs}: {summary}; {with_start:.2f} FPS including start-up")
        rss = memory(model, video, args.frames, Path(temp))
        growth = rss["end"] - rss["warm"]
        print(
            f"memory: {rss['loaded']:.0f} MiB after loading, {rss['warm']:.0f} MiB after {WARM_UP_FRAMES} warm-up "
            f"frames, {rss['end']:.0f} MiB after {rss['frames']:.0f} more frames ({growth:+.1f} MiB), "
            f"peak {rss['peak']:.0f} MiB; {rss['fps']:.2f} FPS; torch imported: {bool(rss['torch_imported'])}"
        )


if __name__ == "__main__":
    main()
