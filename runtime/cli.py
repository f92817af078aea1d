"""``poet-run``: poses on images, folders, videos, cameras and streams with an exported model, no PyTorch."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import cv2
import numpy as np
from tqdm import tqdm

from poet.console import add_progress, positive_int, run_cli
from poet.drawing import draw_poses, save_image
from poet.errors import OutputError, PoetError
from poet.fileio import atomic_path, check_writable, unique_names
from poet.pipeline import timed_predict
from poet.runtime.backends import BACKENDS, INFERENCE_PRECISIONS
from poet.runtime.estimator import PoseEstimator
from poet.runtime.sources import DEFAULT_READ_TIMEOUT, Frame, FrameSource

WINDOW = "poet-run"
# Frame rate of videos saved from sources that have none (image folders).
DEFAULT_VIDEO_FPS = 10.0
QUIT_KEYS = (ord("q"), 27)
# Command-line options passed on by name: to the estimator, and to run() (what to write and when to stop).
ESTIMATOR_OPTIONS = ("score_threshold", "max_people", "threads", "device", "cuda_graph", "precision")
RUN_OPTIONS = ("show", "save_video", "save_images", "jsonl", "max_frames")


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'' if number == 1 else 's'}"


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
    skipped: int = 0  # unreadable images of a folder
    written: dict[str, int] = field(default_factory=dict)  # "images", "jsonl", "video": how many were written

    def summary(self, source: str) -> str:
        skipped = f"; {_count(self.skipped, 'unreadable image')} skipped" if self.skipped else ""
        if self.frames == 0:
            return f"no frames processed from {source}{skipped}"
        per_frame = 1000.0 / self.frames
        return (
            f"{_count(self.frames, 'frame')} from {source} in {self.elapsed:.1f} s: "
            f"{self.frames / self.elapsed:.1f} FPS end to end; per frame {self.preprocess * per_frame:.2f} ms "
            f"preprocessing, {self.inference * per_frame:.1f} ms inference, {self.postprocess * per_frame:.2f} ms "
            f"decoding; {self.people} people{skipped}"
        )

    def written_line(self, plan: OutputPlan) -> str | None:
        """What reached the disk, counted as it was written: "wrote 12 images to out/, 12 JSON lines to p.jsonl"."""
        parts = []
        if plan.save_images is not None:
            parts.append(f"{_count(self.written.get('images', 0), 'image')} to {plan.save_images}{os.sep}")
        if plan.jsonl is not None:
            parts.append(f"{_count(self.written.get('jsonl', 0), 'JSON line')} to {plan.jsonl}")
        if plan.save_video is not None:
            parts.append(f"{_count(self.written.get('video', 0), 'video frame')} to {plan.save_video}")
        return "wrote " + ", ".join(parts) if parts else None


# ---------------------------------------------------------------- output preflight

VIDEO_HINT = "use a .mp4 or .avi file name"
# What --save-video writes: MJPG in .avi, MPEG-4 part 2 in the others (file types FFmpeg takes it in).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")


@dataclass(frozen=True)
class OutputPlan:
    """Where a run writes, checked by :func:`plan_outputs` before the model is loaded and any frame is read.

    ``images`` maps an image source's frame index to its annotated copy: the input's path under the source
    folder, name and format kept (``a/x.jpg`` -> ``OUT/a/x.jpg``, ``y.png`` -> ``OUT/y.png``), so no two inputs
    share an output. Video, camera and stream frames are ``OUT/<name>_<index>.jpg``.
    """

    save_images: Path | None = None
    jsonl: Path | None = None
    save_video: Path | None = None
    images: dict[int, Path] = field(default_factory=dict)

    def image_path(self, frame: Frame) -> Path:
        assert self.save_images is not None
        return self.images.get(frame.index) or self.save_images / f"{frame.name}.jpg"


def video_fourcc(path: Path) -> int:
    return cv2.VideoWriter.fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))


def _entry(path: Path) -> str:
    """The directory entry a write to ``path`` replaces: its real folder and its own name.

    Outputs are renamed into place, so an output that is a symlink is replaced, not the file it points to.
    """
    return os.path.join(os.path.realpath(path.parent), path.name)


def _checked_file(path: Path, option: str) -> None:
    """A file where a file is meant, in a folder that exists or can be made, writable."""
    try:
        check_writable(path)
    except OutputError as error:
        raise OutputError(f"{option}: {error}") from None


def _check_video(path: Path) -> None:
    """Whether this OpenCV writes videos of ``path``'s type, tried on a scratch file elsewhere."""
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise OutputError(f"--save-video: cannot write a video to {path} ({VIDEO_HINT})")
    with tempfile.TemporaryDirectory(prefix="poet-run-") as scratch:
        writer = cv2.VideoWriter(os.path.join(scratch, f"probe{path.suffix}"), video_fourcc(path), 10.0, (64, 48))
        opened = writer.isOpened()
        writer.release()
    if not opened:
        raise OutputError(f"--save-video: cannot write a video to {path} ({VIDEO_HINT})")


def _image_outputs(source: FrameSource, folder: Path) -> dict[int, Path]:
    if not source.files:
        return {}
    outputs = {index: folder / name for index, name in enumerate(unique_names(source.files))}
    for suffix in sorted({path.suffix.lower() for path in outputs.values()}):
        if not cv2.imencode(suffix, np.zeros((2, 2, 3), np.uint8))[0]:
            example = next(path for path in source.inputs if path.suffix.lower() == suffix)
            raise OutputError(f"--save-images: this OpenCV cannot write {suffix} images (as for {example})")
    return outputs


def _check_folder(folder: Path, files: Sequence[Path]) -> None:
    """``--save-images``: a folder (or none yet) where every planned file can be written."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--save-images {folder} is a file; expected a folder for the annotated images")
    probed: set[Path] = set()
    for path in files:
        if path.is_dir():
            raise OutputError(f"--save-images: cannot write {path}: it is a folder, where an annotated image goes")
        if path.parent not in probed:
            probed.add(path.parent)
            _checked_file(path, "--save-images")


def plan_outputs(
    source: FrameSource,
    *,
    save_images: Path | None = None,
    jsonl: Path | None = None,
    save_video: Path | None = None,
) -> OutputPlan:
    """Check every output before any work, so no run is wasted and no input is overwritten.

    Each must be distinct from every input and from the others, symlinks resolved (a ``--save-images`` folder
    that is the input folder, or one inside it that would replace an input, is refused); what it is meant to
    be (``--save-images`` a folder, ``--jsonl`` and ``--save-video`` files); writable. Raises
    :class:`OutputError` naming the option and the path.
    """
    plan = OutputPlan(save_images, jsonl, save_video, _image_outputs(source, save_images) if save_images else {})
    inputs: dict[str, Path] = {}
    for path in source.inputs:
        inputs[_entry(path)] = path
        inputs.setdefault(os.path.realpath(path), path)
    outputs = [(path, f"{option} {path}") for path, option in ((jsonl, "--jsonl"), (save_video, "--save-video"))]
    outputs += [(path, f"--save-images {save_images} (the annotated {path.name})") for path in plan.images.values()]
    written: dict[str, str] = {}
    for path, said in outputs:
        if path is None:
            continue
        entry = _entry(path)
        if entry in inputs:
            raise OutputError(_overwrite_message(said, inputs[entry], source, save_images))
        if entry in written:
            raise OutputError(f"{written[entry]} and {said} are the same file; give each output its own path")
        written[entry] = said
    if save_video is not None:
        _checked_file(save_video, "--save-video")
        _check_video(save_video)
    if jsonl is not None:
        _checked_file(jsonl, "--jsonl")
    if save_images is not None:
        first = f"{source.frame_stem}_{0:06d}.jpg"
        _check_folder(save_images, list(plan.images.values()) or [save_images / first])
    return plan


def _overwrite_message(said: str, input_path: Path, source: FrameSource, folder: Path | None) -> str:
    if folder is None or not said.startswith("--save-images"):
        return f"{said} is the input {input_path}: give another file name; inputs are never overwritten"
    if source.kind == "folder" and os.path.realpath(folder) == os.path.realpath(source.source):
        return (
            f"--save-images {folder} is the input folder {source.source}: the annotated images would replace the "
            "photographs; give another folder"
        )
    elsewhere = f"a folder outside {source.source}" if source.kind == "folder" else "another folder"
    return f"--save-images {folder} would overwrite the input {input_path} with its annotated copy; give {elsewhere}"


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
            self.writer = cv2.VideoWriter(str(self.path), video_fourcc(self.path), self.fps, self.size)
            if not self.writer.isOpened():
                raise PoetError(f"cannot write a video to {self.path} ({VIDEO_HINT})")
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
    plan: OutputPlan | None = None,
) -> RunStats:
    """Poses for every frame of ``source``, written to the chosen outputs.

    The outputs are checked first (:func:`plan_outputs`), unless ``plan`` is that check, already made for
    them. They appear only complete: the end of the source, a failing camera, ``q`` in the window or Ctrl-C
    finish them with the frames processed so far; an error leaves none behind.
    """
    stats = RunStats()
    draw = show or save_video is not None or save_images is not None
    with contextlib.ExitStack() as stack:
        stack.callback(source.close)
        if plan is None:
            plan = plan_outputs(source, save_images=save_images, jsonl=jsonl, save_video=save_video)
        if show:
            open_window()
            stack.callback(cv2.destroyWindow, WINDOW)
        records: IO[str] | None = None
        video: VideoSink | None = None
        if save_video is not None:
            video = VideoSink(stack.enter_context(atomic_path(save_video)), source.fps or DEFAULT_VIDEO_FPS)
            stack.callback(video.close)
        if jsonl is not None:
            records = stack.enter_context(stack.enter_context(atomic_path(jsonl)).open("w", encoding="utf-8"))
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
                    record: dict[str, object] = {"frame": frame.index, "name": frame.name}
                    if frame.file is not None:
                        record["file"] = frame.file
                    record["poses"] = [p.to_dict() for p in poses]
                    records.write(json.dumps(record) + "\n")
                    stats.written["jsonl"] = stats.written.get("jsonl", 0) + 1
                interval, last = now - last, now
                fps = 1.0 / interval if fps == 0.0 else 0.9 * fps + 0.1 / max(interval, 1e-6)
                if draw:
                    canvas = draw_poses(frame.image, poses)
                    draw_fps(canvas, fps)
                    if video is not None:
                        video.write(canvas)
                        stats.written["video"] = stats.written.get("video", 0) + 1
                    if save_images is not None:
                        save_image(plan.image_path(frame), canvas)
                        stats.written["images"] = stats.written.get("images", 0) + 1
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
        stats.skipped = source.skipped
    return stats


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="poet-run",
        description="Run an exported POET model (ONNX, or a TensorRT engine with its sidecar) on images, a folder, "
        "a video, a camera or a stream, without PyTorch. Draws skeletons and FPS; Ctrl-C (or q in the window) "
        "stops and keeps what was written.",
    )
    parser.add_argument(
        "source", help="image, folder of images (subfolders too), video file, camera index (0) or stream URL"
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="poet-edge model: .onnx, .engine/.plan or OpenVINO's .xml"
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=("auto", *BACKENDS),
        help="default: by suffix (.onnx: onnxruntime, .engine/.plan: tensorrt, .xml: openvino)",
    )
    parser.add_argument(
        "--precision",
        choices=tuple(INFERENCE_PRECISIONS),
        help="OpenVINO's precision for float ops (default: fp32; bf16 on CPUs with AVX512_BF16 or AMX); ONNX "
        "Runtime and TensorRT run the precision their file holds",
    )
    parser.add_argument(
        "--score-threshold", type=float, metavar="S", default=0.5, help="minimum person score (default: 0.5)"
    )
    parser.add_argument("--max-people", type=positive_int, metavar="N", help="keep at most this many people per frame")
    parser.add_argument(
        "--threads", type=positive_int, metavar="N", help="ONNX Runtime or OpenVINO CPU threads (default: all cores)"
    )
    parser.add_argument(
        "--device", type=int, metavar="N", default=0, help="CUDA device of a TensorRT engine (default: 0)"
    )
    parser.add_argument("--cuda-graph", action="store_true", help="replay TensorRT inference as a CUDA graph")
    parser.add_argument("--show", action="store_true", help="show annotated frames in a window (q or Esc quits)")
    parser.add_argument("--save-video", type=Path, metavar="FILE", help="write annotated frames as .mp4 or .avi")
    parser.add_argument(
        "--save-images",
        type=Path,
        metavar="DIR",
        help="write annotated images into DIR, each under its path in the input folder (a/x.jpg -> DIR/a/x.jpg, "
        "format kept); video frames as NAME_000000.jpg. Never the input folder",
    )
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
    # Opening the source reads no frame; the outputs are checked before the model is loaded (seconds to
    # minutes for a TensorRT provider) and before a camera session that could end with nowhere to write.
    source = FrameSource(args.source, read_timeout=args.read_timeout)
    try:
        plan = plan_outputs(source, save_images=args.save_images, jsonl=args.jsonl, save_video=args.save_video)
        estimator = PoseEstimator(args.model, args.backend, **{name: options[name] for name in ESTIMATOR_OPTIONS})
    except BaseException:
        source.close()
        raise
    run_options = {name: options[name] for name in RUN_OPTIONS}
    stats = run(estimator, source, progress=not args.no_progress, plan=plan, **run_options)
    print(stats.summary(args.source))
    written = stats.written_line(plan)
    if written is not None:
        print(written)
    if stats.interrupted:
        print("interrupted: outputs hold the frames processed so far")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main(None))
