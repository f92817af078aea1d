"""``poet-run``: poses on images, folders, videos, cameras and streams with an exported model, no PyTorch."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import cv2
import numpy as np
from tqdm import tqdm

from poet.console import add_progress, positive_int, run_cli
from poet.drawing import draw_poses, save_image
from poet.errors import PoetError
from poet.fileio import atomic_path
from poet.pipeline import timed_predict
from poet.runtime.backends import BACKENDS
from poet.runtime.estimator import PoseEstimator
from poet.runtime.sources import DEFAULT_READ_TIMEOUT, FrameSource

WINDOW = "poet-run"
# Frame rate of videos saved from sources that have none (image folders).
DEFAULT_VIDEO_FPS = 10.0
QUIT_KEYS = (ord("q"), 27)
# Command-line options passed on by name: to the estimator, and to run() (what to write and when to stop).
ESTIMATOR_OPTIONS = ("score_threshold", "max_people", "threads", "device", "cuda_graph")
RUN_OPTIONS = ("show", "save_video", "save_images", "jsonl", "max_frames")


@dataclass
class RunStats:
    """What one run did; times are seconds summed over frames."""

    frames: int = 0
    people: int = 0
    elapsed: float = 0.0
    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0
    stopped_early: str | None = None
    interrupted: bool = False

    def summary(self, source: str) -> str:
        if self.frames == 0:
            return f"no frames processed from {source}"
        per_frame = 1000.0 / self.frames
        return (
            f"{self.frames} frames from {source} in {self.elapsed:.1f} s: {self.frames / self.elapsed:.1f} FPS end to "
            f"end; per frame {self.preprocess * per_frame:.2f} ms preprocessing, {self.inference * per_frame:.1f} ms "
            f"inference, {self.postprocess * per_frame:.2f} ms decoding; {self.people} people"
        )


def draw_fps(image: np.ndarray, fps: float) -> None:
    """Write the running frame rate into the top-left corner, readable on any background."""
    text = f"{fps:.1f} FPS"
    scale = max(0.5, image.shape[0] / 720)
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(image, (0, 0), (width + 8, height + baseline + 8), (0, 0, 0), -1)
    cv2.putText(image, text, (4, height + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


class VideoSink:
    """An annotated video, opened at the first frame's size; later frames of other sizes are resized to it."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] = (0, 0)

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            self.size = (image.shape[1], image.shape[0])
            fourcc = cv2.VideoWriter.fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise PoetError(f"cannot write a video to {self.path} (use a .mp4 or .avi file name)")
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def open_window() -> None:
    """Fail before the first frame when this OpenCV cannot show windows (the headless wheel)."""
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise PoetError(
            "--show needs OpenCV with GUI support; this one is headless (pip install opencv-python "
            "instead of opencv-python-headless), or save the result with --save-video"
        ) from None


def run(
    estimator: PoseEstimator,
    source: FrameSource,
    *,
    show: bool = False,
    save_video: Path | None = None,
    save_images: Path | None = None,
    jsonl: Path | None = None,
    max_frames: int | None = None,
    progress: bool = True,
) -> RunStats:
    """Poses for every frame of ``source``, written to the chosen outputs.

    Outputs appear only complete: the end of the source, a failing camera, ``q`` in the window or
    Ctrl-C finish them with the frames processed so far; an error leaves none behind.
    """
    stats = RunStats()
    draw = show or save_video is not None or save_images is not None
    with contextlib.ExitStack() as stack:
        stack.callback(source.close)
        if show:
            open_window()
            stack.callback(cv2.destroyWindow, WINDOW)
        records: IO[str] | None = None
        video: VideoSink | None = None
        if save_video is not None:
            video = VideoSink(stack.enter_context(atomic_path(save_video)), source.fps or DEFAULT_VIDEO_FPS)
            stack.callback(video.close)
        if jsonl is not None:
            records = stack.enter_context(stack.enter_context(atomic_path(jsonl)).open("w"))
        if save_images is not None:
            save_images.mkdir(parents=True, exist_ok=True)
        bar = stack.enter_context(tqdm(total=source.total, unit="frame", desc=source.source, disable=not progress))
        fps = 0.0
        start = last = time.perf_counter()
        try:
            for frame in source:
                batch_poses, times = timed_predict(estimator, [frame.image])
                poses = batch_poses[0]
                now = time.perf_counter()
                stats.preprocess += times.preprocess
                stats.inference += times.inference
                stats.postprocess += times.postprocess
                stats.frames += 1
                stats.people += len(poses)
                if records is not None:
                    record = {"frame": frame.index, "name": frame.name, "poses": [p.to_dict() for p in poses]}
                    records.write(json.dumps(record) + "\n")
                interval, last = now - last, now
                fps = 1.0 / interval if fps == 0.0 else 0.9 * fps + 0.1 / max(interval, 1e-6)
                if draw:
                    canvas = draw_poses(frame.image, poses)
                    draw_fps(canvas, fps)
                    if video is not None:
                        video.write(canvas)
                    if save_images is not None:
                        save_image(save_images / f"{frame.name}.jpg", canvas)
                    if show:
                        cv2.imshow(WINDOW, canvas)
                        if cv2.waitKey(1) & 0xFF in QUIT_KEYS:
                            break
                bar.update()
                if max_frames is not None and stats.frames >= max_frames:
                    break
        except KeyboardInterrupt:
            stats.interrupted = True
        stats.elapsed = time.perf_counter() - start
        stats.stopped_early = source.stopped_early
    return stats


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="poet-run",
        description="Run an exported POET model (ONNX, or a TensorRT engine with its sidecar) on images, a folder, "
        "a video, a camera or a stream, without PyTorch. Draws skeletons and FPS; Ctrl-C (or q in the window) "
        "stops and keeps what was written.",
    )
    parser.add_argument("source", help="image, folder of images, video file, camera index (0) or stream URL")
    parser.add_argument("--model", type=Path, required=True, help="poet-edge model: .onnx, or .engine/.plan")
    parser.add_argument(
        "--backend", default="auto", choices=("auto", *BACKENDS), help="default: by suffix (.onnx: onnxruntime)"
    )
    parser.add_argument(
        "--score-threshold", type=float, metavar="S", default=0.5, help="minimum person score (default: 0.5)"
    )
    parser.add_argument("--max-people", type=positive_int, metavar="N", help="keep at most this many people per frame")
    parser.add_argument(
        "--threads", type=positive_int, metavar="N", help="ONNX Runtime CPU threads (default: all cores)"
    )
    parser.add_argument(
        "--device", type=int, metavar="N", default=0, help="CUDA device of a TensorRT engine (default: 0)"
    )
    parser.add_argument("--cuda-graph", action="store_true", help="replay TensorRT inference as a CUDA graph")
    parser.add_argument("--show", action="store_true", help="show annotated frames in a window (q or Esc quits)")
    parser.add_argument("--save-video", type=Path, metavar="FILE", help="write annotated frames as .mp4 or .avi")
    parser.add_argument("--save-images", type=Path, metavar="DIR", help="write annotated frames as JPEG files")
    parser.add_argument("--jsonl", type=Path, metavar="FILE", help="write one JSON line of poses per frame")
    parser.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after this many frames")
    parser.add_argument(
        "--read-timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_READ_TIMEOUT,
        help=f"seconds without a frame before a camera or stream counts as stopped (default: {DEFAULT_READ_TIMEOUT:g})",
    )
    add_progress(parser)
    args = parser.parse_args(argv)

    options = vars(args)
    estimator = PoseEstimator(args.model, args.backend, **{name: options[name] for name in ESTIMATOR_OPTIONS})
    source = FrameSource(args.source, read_timeout=args.read_timeout)
    stats = run(estimator, source, progress=not args.no_progress, **{name: options[name] for name in RUN_OPTIONS})
    print(stats.summary(args.source))
    if stats.interrupted:
        print("interrupted: outputs hold the frames processed so far")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main(None))
