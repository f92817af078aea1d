"""``poet-run``: poses on images, folders, videos, cameras and streams with an exported model, no PyTorch."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

import cv2
import numpy as np
from tqdm import tqdm

from poet.console import add_progress, positive_float, positive_int, run_cli
from poet.drawing import draw_poses, save_image
from poet.errors import OutputError, PoetError, ServerError
from poet.fileio import atomic_path, check_writable, unique_names
from poet.pipeline import StageTimes, timed_predict
from poet.processing import Pose
from poet.runtime.backends import BACKENDS, INFERENCE_PRECISIONS, is_model_url
from poet.runtime.estimator import PoseEstimator
from poet.runtime.preview import DEFAULT_PREVIEW_FPS, Preview, parse_address
from poet.runtime.sources import DEFAULT_READ_TIMEOUT, Frame, FrameSource, SourceError, live_kind
from poet.runtime.tracking import LOW_THRESHOLD, PoseTracker
from poet.video import VIDEO_HINT, VideoFile, can_write_video, open_video

logger = logging.getLogger("poet")

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
    tracking: float = 0.0
    stopped_early: str | None = None
    failed: str | None = None  # why a stream of several failed while the others went on
    interrupted: bool = False
    skipped: int = 0  # unreadable images of a folder
    written: dict[str, int] = field(default_factory=dict)  # "images", "jsonl", "video": how many were written

    def summary(self, source: str) -> str:
        skipped = f"; {_count(self.skipped, 'unreadable image')} skipped" if self.skipped else ""
        if self.frames == 0:
            return f"no frames processed from {source}{skipped}"
        per_frame = 1000.0 / self.frames
        tracking = f", {self.tracking * per_frame:.2f} ms tracking" if self.tracking else ""
        return (
            f"{_count(self.frames, 'frame')} from {source} in {self.elapsed:.1f} s: "
            f"{self.frames / self.elapsed:.1f} FPS end to end; per frame {self.preprocess * per_frame:.2f} ms "
            f"preprocessing, {self.inference * per_frame:.1f} ms inference, {self.postprocess * per_frame:.2f} ms "
            f"decoding{tracking}; {self.people} people{skipped}"
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
    if not can_write_video(path):
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
    return plan_streams([source], save_images=save_images, jsonl=jsonl, save_video=save_video)[0]


def check_distinct(sources: Sequence[str]) -> None:
    """Refuse a source given twice (the same file or folder by any path, the same camera or URL), before any work."""
    seen: dict[str, str] = {}
    for source in sources:
        kind = live_kind(source)
        key = f"camera {int(source)}" if kind == "camera" else source if kind else os.path.realpath(source)
        if key in seen:
            also = "" if seen[key] == source else f" (as {seen[key]} and as {source})"
            raise SourceError(f"source {source} is given twice{also}; give each source once")
        seen[key] = source


def stream_names(sources: Sequence[FrameSource]) -> list[str]:
    """Names for the outputs of several sources, distinct ignoring case: a video's or image's stem, a folder's
    name, ``camera0``, a URL's host and path; anything but ASCII letters, digits, ``-`` and ``_`` becomes ``_``,
    and a name met before gets ``-2`` (``-3``...)."""
    names = []
    for source in sources:
        if source.kind == "camera":
            name = f"camera{source.source}"
        elif source.kind == "stream":
            name = source.source.split("://", 1)[1]
        else:
            path = Path(os.path.abspath(source.source))
            name = path.name if source.kind == "folder" else path.stem
        names.append(re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or source.kind)
    return unique_names(names)


def _per_stream(path: Path | None, name: str | None, folder: bool = False) -> Path | None:
    """One stream's output of several: ``out.jsonl`` -> ``out.NAME.jsonl``; a folder -> ``DIR/NAME``."""
    if path is None or name is None:
        return path
    return path / name if folder else path.with_name(f"{path.stem}.{name}{path.suffix}")


def plan_streams(
    sources: Sequence[FrameSource],
    *,
    save_images: Path | None = None,
    jsonl: Path | None = None,
    save_video: Path | None = None,
) -> list[OutputPlan]:
    """:func:`plan_outputs` of each source, checked against every source's inputs and every other output.

    One source writes where it is told. Several write per-stream outputs named by :func:`stream_names`:
    ``--jsonl out.jsonl`` -> ``out.NAME.jsonl``, ``--save-video out.mp4`` -> ``out.NAME.mp4``, ``--save-images
    DIR`` -> ``DIR/NAME/``.
    """
    names: list[str | None] = list(stream_names(sources)) if len(sources) > 1 else [None]
    plans = []
    for source, name in zip(sources, names, strict=True):
        folder = _per_stream(save_images, name, folder=True)
        images = _image_outputs(source, folder) if folder else {}
        plans.append(OutputPlan(folder, _per_stream(jsonl, name), _per_stream(save_video, name), images))
    inputs: dict[str, tuple[Path, FrameSource]] = {}
    for source in sources:
        for path in source.inputs:
            inputs[_entry(path)] = (path, source)
            inputs.setdefault(os.path.realpath(path), (path, source))
    written: dict[str, str] = {}
    for plan in plans:
        outputs = [(plan.jsonl, f"--jsonl {plan.jsonl}"), (plan.save_video, f"--save-video {plan.save_video}")]
        outputs += [
            (path, f"--save-images {plan.save_images} (the annotated {path.name})") for path in plan.images.values()
        ]
        for path, said in outputs:
            if path is None:
                continue
            entry = _entry(path)
            if entry in inputs:
                raise OutputError(_overwrite_message(said, *inputs[entry], plan.save_images))
            if entry in written:
                raise OutputError(f"{written[entry]} and {said} are the same file; give each output its own path")
            written[entry] = said
    for source, plan in zip(sources, plans, strict=True):
        if plan.save_images is not None and not plan.images:  # frames named <stem>_000000.jpg, one by one
            _check_frame_names(source, plan.save_images, inputs)
        if plan.save_video is not None:
            _checked_file(plan.save_video, "--save-video")
            _check_video(plan.save_video)
        if plan.jsonl is not None:
            _checked_file(plan.jsonl, "--jsonl")
        if plan.save_images is not None:
            first = f"{source.frame_stem}_{0:06d}.jpg"
            _check_folder(plan.save_images, list(plan.images.values()) or [plan.save_images / first])
    return plans


def _check_frame_names(source: FrameSource, folder: Path, inputs: dict[str, tuple[Path, FrameSource]]) -> None:
    """Refuse a ``--save-images`` folder where a video's, camera's or stream's annotated frames would replace an
    input (of another stream) named as one of them."""
    pattern = re.compile(rf"{re.escape(source.frame_stem)}_\d{{6,}}\.jpg")
    real = os.path.realpath(folder)
    for entry, (path, _) in inputs.items():
        if os.path.dirname(entry) == real and pattern.fullmatch(os.path.basename(entry)):
            raise OutputError(
                f"--save-images {folder}: the annotated frames of {source.source} would overwrite the input {path}; "
                "give another folder"
            )


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


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """How a model file runs: the options poet-run and poet-serve share, said once so they read the same."""
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
        "--threads", type=positive_int, metavar="N", help="ONNX Runtime or OpenVINO CPU threads (default: all cores)"
    )
    parser.add_argument(
        "--device", type=int, metavar="N", default=0, help="CUDA device of a TensorRT engine (default: 0)"
    )
    parser.add_argument("--cuda-graph", action="store_true", help="replay TensorRT inference as a CUDA graph")


def preview_address(text: str) -> tuple[str, int]:
    """The argparse type of ``--preview``."""
    try:
        return parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def draw_fps(image: np.ndarray, fps: float) -> None:
    """Write the running frame rate into the top-left corner, readable on any background."""
    text = f"{fps:.1f} FPS"
    scale = max(0.5, image.shape[0] / 720)
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(image, (0, 0), (width + 8, height + baseline + 8), (0, 0, 0), -1)
    cv2.putText(image, text, (4, height + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def open_window(name: str = WINDOW) -> None:
    """Fail before the first frame when this OpenCV cannot show windows (the headless wheel)."""
    try:
        cv2.namedWindow(name, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise PoetError(
            "--show needs OpenCV with GUI support; this one is headless (pip install opencv-python "
            "instead of opencv-python-headless), or save the result with --save-video"
        ) from None


class _Stream:
    """One source of a run: its frames, its tracker, its outputs (open until it ends) and its statistics."""

    def __init__(
        self,
        source: FrameSource,
        plan: OutputPlan,
        tracker: PoseTracker | None,
        window: str | None,
        preview: tuple[Preview, str] | None = None,
    ):
        self.source, self.plan, self.tracker, self.window, self.preview = source, plan, tracker, window, preview
        self.stats = RunStats()
        self.ended = False
        self.fps = 0.0
        self.last = 0.0
        self._frames: Iterator[Frame] = iter(source)
        self._outputs = contextlib.ExitStack()
        self._records: IO[str] | None = None
        self._video: VideoFile | None = None

    def __enter__(self) -> _Stream:
        """Open the outputs (atomically: they appear when the stream ends, complete and, a video, read back)."""
        outputs = self._outputs
        if self.plan.save_video is not None:
            self._video = outputs.enter_context(open_video(self.plan.save_video, self.source.fps or DEFAULT_VIDEO_FPS))
        if self.plan.jsonl is not None:
            path = outputs.enter_context(atomic_path(self.plan.jsonl))
            self._records = outputs.enter_context(path.open("w", encoding="utf-8"))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        """After an error the outputs are discarded, as unfinished; a stream that ended has kept its own."""
        self._outputs.__exit__(kind, error, trace)

    def next_frame(self, alone: bool) -> Frame | None:
        """The next frame, or None at the end. A source that fails is the run's error when it is ``alone``;
        with others it ends this stream only, the reason kept in ``stats.failed``."""
        try:
            return next(self._frames)
        except StopIteration:
            return None
        except (PoetError, OSError) as error:
            if alone:
                raise
            self.stats.failed = str(error)
            logger.warning("%s failed after %s: %s", self.source.source, _count(self.stats.frames, "frame"), error)
            return None

    def add(self, frame: Frame, poses: list[Pose], times: StageTimes, share: int, now: float) -> bool:
        """Track, count, write and draw one frame's poses (``times`` were those of a batch of ``share`` frames);
        False when the user pressed q in its window."""
        stats = self.stats
        stats.preprocess += times.preprocess / share
        stats.inference += times.inference / share
        stats.postprocess += times.postprocess / share
        stats.frames += 1
        if self.tracker is not None:
            started = time.perf_counter()
            tracked = self.tracker.update(poses, now if self.source.live else None)
            # Poses below the tracker's first stage only kept a track going: the output keeps its threshold.
            poses = [pose for pose in tracked if pose.score >= self.tracker.high_threshold]
            stats.tracking += time.perf_counter() - started
        stats.people += len(poses)
        if self._records is not None:
            self._records.write(json.dumps(frame.record(poses)) + "\n")
            stats.written["jsonl"] = stats.written.get("jsonl", 0) + 1
        interval, self.last = now - self.last, now
        self.fps = 1.0 / interval if self.fps == 0.0 else 0.9 * self.fps + 0.1 / max(interval, 1e-6)
        watched = False
        if self.preview is not None:
            preview, name = self.preview
            preview.show(name, frame, poses, self.fps)
            watched = preview.wants_frame(name, now)
        if self._video is None and self.plan.save_images is None and self.window is None and not watched:
            return True
        canvas = draw_poses(frame.image, poses)
        draw_fps(canvas, self.fps)
        if watched and self.preview is not None:
            self.preview[0].publish(self.preview[1], canvas, now)
        if self._video is not None:
            self._video.write(canvas)
            stats.written["video"] = stats.written.get("video", 0) + 1
        if self.plan.save_images is not None:
            save_image(self.plan.image_path(frame), canvas)
            stats.written["images"] = stats.written.get("images", 0) + 1
        if self.window is not None:
            cv2.imshow(self.window, canvas)
            return cv2.waitKey(1) & 0xFF not in QUIT_KEYS
        return True

    def end(self, elapsed: float, interrupted: bool = False) -> None:
        """Finish this stream: its outputs are complete now, its reader stops, its statistics are final."""
        self.ended = True
        self.stats.elapsed = elapsed
        self.stats.interrupted = interrupted
        self.stats.stopped_early = self.source.stopped_early
        self.stats.skipped = len(self.source.skipped)
        self._outputs.close()
        self.source.close()


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
    tracker: PoseTracker | None = None,
) -> RunStats:
    """Poses for every frame of ``source``, written to the chosen outputs.

    The outputs are checked first (:func:`plan_outputs`), unless ``plan`` is that check, already made for
    them. They appear only complete: the end of the source, a failing camera, ``q`` in the window or Ctrl-C
    finish them with the frames processed so far; an error leaves none behind. ``tracker`` gives each person
    an identity (``Pose.track_id``) and keeps only the poses it tracks.
    """
    (stats,) = run_streams(
        estimator,
        [source],
        show=show,
        save_video=save_video,
        save_images=save_images,
        jsonl=jsonl,
        max_frames=max_frames,
        progress=progress,
        plans=None if plan is None else [plan],
        trackers=None if tracker is None else [tracker],
    )
    return stats


def run_streams(
    estimator: PoseEstimator,
    sources: Sequence[FrameSource],
    *,
    show: bool = False,
    save_video: Path | None = None,
    save_images: Path | None = None,
    jsonl: Path | None = None,
    max_frames: int | None = None,
    progress: bool = True,
    plans: Sequence[OutputPlan] | None = None,
    trackers: Sequence[PoseTracker] | None = None,
    preview: Preview | None = None,
) -> list[RunStats]:
    """:func:`run` on several sources at once, their frames batched into shared inferences.

    Each step takes the next frame of every source still going and runs them through the model together, as
    many per call as its batch allows, so sources advance in step (a slow camera paces the others). Each
    source has its own outputs (:func:`plan_streams`, unless ``plans`` are that check), its own tracker (one
    per source in ``trackers``) and its own statistics, and ``max_frames`` counts per source. A source that
    ends, stops early or fails ends alone: its outputs are finished there and then, and the others go on; a
    failure is kept in its ``RunStats.failed``. With one source, a failure is the run's error, as in :func:`run`.
    ``preview`` (made for :func:`stream_names` of the sources) serves the streams to a browser while they run.
    """
    with contextlib.ExitStack() as stack:
        for source in sources:
            stack.callback(source.close)
        if plans is None:
            plans = plan_streams(sources, save_images=save_images, jsonl=jsonl, save_video=save_video)
        windows: list[str | None] = [None] * len(sources)
        if show:
            windows = [WINDOW] if len(sources) == 1 else [f"{WINDOW} {name}" for name in stream_names(sources)]
            for window in windows:
                assert window is not None
                open_window(window)
                stack.callback(cv2.destroyWindow, window)
        names = stream_names(sources)
        if preview is not None:
            preview.start()
            stack.callback(preview.close)
        streams = [
            stack.enter_context(
                _Stream(
                    source,
                    plan,
                    None if trackers is None else trackers[index],
                    windows[index],
                    None if preview is None else (preview, names[index]),
                )
            )
            for index, (source, plan) in enumerate(zip(sources, plans, strict=True))
        ]
        totals = [source.total for source in sources]
        bar = stack.enter_context(
            tqdm(
                total=None if None in totals else sum(t or 0 for t in totals),
                unit="frame",
                desc=sources[0].source if len(sources) == 1 else f"{len(sources)} sources",
                disable=not progress,
            )
        )
        start = time.perf_counter()
        for stream in streams:
            stream.last = start
        going = list(streams)
        try:
            while going:
                ready = []
                for stream in going:
                    frame = stream.next_frame(alone=len(streams) == 1)
                    if frame is None:
                        stream.end(time.perf_counter() - start)
                    else:
                        ready.append((stream, frame))
                quit_pressed = False
                for offset in range(0, len(ready), estimator.backend.max_batch):
                    chunk = ready[offset : offset + estimator.backend.max_batch]
                    try:
                        batch_poses, times = timed_predict(estimator, [frame.image for _, frame in chunk])
                    except ServerError as error:  # a served model's server gone or failing: every stream ends
                        _server_failed(streams, error, time.perf_counter() - start)
                        quit_pressed = True
                        break
                    now = time.perf_counter()
                    for (stream, frame), poses in zip(chunk, batch_poses, strict=True):
                        quit_pressed = not stream.add(frame, poses, times, len(chunk), now)
                        if quit_pressed:
                            break
                        bar.update()
                        if max_frames is not None and stream.stats.frames >= max_frames:
                            stream.end(now - start)
                    if quit_pressed:
                        break
                going = [] if quit_pressed else [stream for stream in going if not stream.ended]
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
        elapsed = time.perf_counter() - start
        for stream in streams:
            if not stream.ended:
                stream.end(elapsed, interrupted)
    return [stream.stats for stream in streams]


def _server_failed(streams: Sequence[_Stream], error: ServerError, elapsed: float) -> None:
    """End every stream still going with the server's failure as its reason; each keeps the outputs of the
    frames it finished, and the run exits 1."""
    for stream in streams:
        if not stream.ended:
            stream.stats.failed = str(error)
            logger.warning("%s stopped after %s: %s", stream.source.source, _count(stream.stats.frames, "frame"), error)
            stream.end(elapsed)


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="poet-run",
        description="Run an exported POET model (ONNX, or a TensorRT engine with its sidecar) on images, a folder, "
        "a video, a camera or a stream, without PyTorch; on several at once, their frames batched into shared "
        "inferences. Draws skeletons and FPS; --track gives each person an identity. Ctrl-C (or q in the window) "
        "stops and keeps what was written.",
    )
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="image, folder of images (subfolders too), video file, camera index (0) or stream URL; several: each "
        "is a stream with its own outputs, named after it (see --jsonl), that ends on its own (a failing one is "
        "reported, exit 1, while the others go on)",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="poet-edge model: .onnx, .engine/.plan or OpenVINO's .xml; or a served one, grpc://HOST:PORT/NAME or "
        "http://HOST:PORT/NAME (poet-serve, Triton), which needs only the client extra here",
    )
    add_backend_options(parser)
    parser.add_argument(
        "--score-threshold",
        type=float,
        metavar="S",
        default=0.5,
        help="minimum person score in the output (default: 0.5); with --track the model runs down to "
        f"{LOW_THRESHOLD:g}, and poses from there up keep a person's track going while they are seen badly, but "
        "only those from S up are written and drawn",
    )
    parser.add_argument("--max-people", type=positive_int, metavar="N", help="keep at most this many people per frame")
    parser.add_argument(
        "--request-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="with a served --model: seconds one inference request may take (default: no limit but the server's)",
    )
    parser.add_argument("--show", action="store_true", help="show annotated frames in a window (q or Esc quits)")
    parser.add_argument(
        "--track",
        action="store_true",
        help='give each person an identity across frames (ByteTrack-style, on keypoints): "track_id" in the JSON '
        "lines, one colour per person in the drawings; keypoints One-Euro smoothed",
    )
    parser.add_argument("--no-smooth", action="store_true", help="with --track: keep the keypoints as detected")
    parser.add_argument(
        "--save-video",
        type=Path,
        metavar="FILE",
        help="write annotated frames as .mp4 or .avi; of several sources, one video each: FILE's name with the "
        "stream's name before the suffix (out.mp4 -> out.clip.mp4)",
    )
    parser.add_argument(
        "--save-images",
        type=Path,
        metavar="DIR",
        help="write annotated images into DIR, each under its path in the input folder (a/x.jpg -> DIR/a/x.jpg, "
        "format kept); video frames as NAME_000000.jpg; of several sources, into DIR/STREAM/. Never the input folder",
    )
    parser.add_argument(
        "--jsonl",
        type=Path,
        metavar="FILE",
        help="write one JSON line of poses per frame; of several sources, a file each, named by the stream: "
        "out.jsonl -> out.clip.jsonl for clip.mp4 (a video's or image's stem, a folder's name, camera0, a URL's host "
        "and path; -2, -3... where names repeat)",
    )
    parser.add_argument(
        "--preview",
        type=preview_address,
        metavar="[HOST:]PORT",
        help="while running, serve every stream live to a browser at http://HOST:PORT/ (annotated frames as MJPEG "
        "at /streams/NAME.mjpg, the latest JSON line at /streams/NAME.json); a port alone listens on 127.0.0.1 only "
        "(0.0.0.0:PORT for every interface: the preview has no authentication)",
    )
    parser.add_argument(
        "--preview-fps",
        type=positive_float,
        metavar="FPS",
        help=f"most frames a second drawn and sent to the preview, only while someone watches (default: "
        f"{DEFAULT_PREVIEW_FPS:g})",
    )
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
    if args.no_smooth and not args.track:
        parser.error("--no-smooth applies to --track")
    if args.preview_fps is not None and args.preview is None:
        parser.error("--preview-fps applies to --preview")
    if args.track and not 0 <= args.score_threshold <= 1:
        parser.error(f"--track needs a --score-threshold from 0 to 1, got {args.score_threshold:g}")

    options = vars(args)
    estimator_options = {name: options[name] for name in ESTIMATOR_OPTIONS}
    if args.request_timeout is not None:
        if not is_model_url(args.model):
            parser.error("--request-timeout applies to a served --model (grpc://HOST:PORT/NAME or http://...)")
        estimator_options["timeout"] = args.request_timeout
    # The tracker's second stage continues tracks with poses scored down to its low threshold.
    low_threshold = min(args.score_threshold, LOW_THRESHOLD)
    if args.track:
        estimator_options["score_threshold"] = low_threshold
    check_distinct(args.sources)
    # Opening the sources reads no frame; the outputs are checked before the model is loaded (seconds to
    # minutes for a TensorRT provider) and before a camera session that could end with nowhere to write.
    sources: list[FrameSource] = []
    preview = None
    try:
        for name in args.sources:
            sources.append(FrameSource(name, read_timeout=args.read_timeout))
        plans = plan_streams(sources, save_images=args.save_images, jsonl=args.jsonl, save_video=args.save_video)
        if args.preview is not None:  # the port is taken now, so one in use fails before the model loads
            preview = Preview(stream_names(sources), args.preview, args.preview_fps or DEFAULT_PREVIEW_FPS)
        estimator = PoseEstimator(args.model, args.backend, **estimator_options)
    except BaseException:
        for source in sources:
            source.close()
        if preview is not None:
            preview.close()
        raise
    trackers = None
    if args.track:
        trackers = [
            PoseTracker(
                args.score_threshold,
                low_threshold,
                smooth=not args.no_smooth,
                **({"fps": source.fps} if source.fps else {}),
            )
            for source in sources
        ]
    run_options = {name: options[name] for name in RUN_OPTIONS}
    all_stats = run_streams(
        estimator,
        sources,
        progress=not args.no_progress,
        plans=plans,
        trackers=trackers,
        preview=preview,
        **run_options,
    )
    for source, stats, plan in zip(sources, all_stats, plans, strict=True):
        print(stats.summary(source.source))
        written = stats.written_line(plan)
        if written is not None:
            print(written)
        ended = stats.failed or (stats.stopped_early if len(sources) > 1 else None)
        if ended is not None:
            print(f"{source.source} ended early: {ended}")
    if any(stats.interrupted for stats in all_stats):
        print("interrupted: outputs hold the frames processed so far")
        return 130
    return 1 if any(stats.failed for stats in all_stats) else 0


if __name__ == "__main__":
    raise SystemExit(main(None))
