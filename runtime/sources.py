"""Frames from an image, a folder, a video file, a camera or a stream, decoded ahead on a reader thread.

The reader thread decodes the next frame while the model runs on the current one, through a bounded
queue so memory stays flat; it starts at the first frame asked for, so what is opened and listed can be
checked (the outputs' preflight in ``poet-run``) before any frame is read. Every wait has a timeout: a
camera or stream that stops delivering, or a video that ends early, ends the iteration with a warning
instead of hanging the app.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from poet.errors import PoetError
from poet.images import IMAGE_SUFFIXES, no_image_left, read_image, read_or_skip, to_bgr_uint8
from poet.processing import Pose

logger = logging.getLogger("poet")

DEFAULT_READ_TIMEOUT = 10.0


class SourceError(PoetError):
    """A source that cannot be opened or delivers no frame at all."""


@dataclass(frozen=True)
class Frame:
    """One decoded BGR uint8 frame; ``name`` is the image file's stem or ``<video>_<index>``.

    ``file`` is an image's path relative to the source folder (``a/x.jpg``; a single image: its file name),
    unique per input; None for video, camera and stream frames.
    """

    index: int
    name: str
    image: np.ndarray
    file: str | None = None

    def record(self, poses: Sequence[Pose]) -> dict[str, Any]:
        """The frame's poses as ``poet-run`` writes them, one JSON line a frame (and ``--preview`` serves them)."""
        record: dict[str, Any] = {"frame": self.index, "name": self.name}
        if self.file is not None:
            record["file"] = self.file
        record["poses"] = [pose.to_dict() for pose in poses]
        return record


def list_image_tree(folder: Path) -> list[Path]:
    """Image files in ``folder`` and its subfolders, sorted by relative path; hidden files and folders skipped.

    Hidden names (``.thumbnails/``, ``._x.jpg``, the ``.x.jpg.poet-tmp-...`` files of a killed writer) are no
    photographs. Symlinked subfolders are followed, each real folder once, so a link loop ends.
    """
    found: list[tuple[tuple[str, ...], Path]] = []
    seen = {os.path.realpath(folder)}
    for root, subfolders, files in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(subfolders):
            real = os.path.realpath(os.path.join(root, name))
            if not name.startswith(".") and real not in seen:
                seen.add(real)
                kept.append(name)
        subfolders[:] = kept
        base = Path(root)
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                path = base / name
                found.append((path.relative_to(folder).parts, path))
    return [path for _, path in sorted(found)]


def live_kind(source: str) -> str | None:
    """``"camera"`` for a camera index (digits that name no file), ``"stream"`` for a URL; None for a path."""
    if source.isdigit() and not Path(source).exists():
        return "camera"
    return "stream" if "://" in source else None


class _End:
    """Queue item after the last frame; ``reason`` is a warning when the source stopped early."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason


class FrameSource:
    """Iterate over the frames of ``source``: an image, a folder of images, a video file, a camera index or a URL.

    A folder's images are those of its whole tree (:func:`list_image_tree`). ``total`` is the frame count when
    known (files), ``fps`` the video's frame rate when it has one, ``inputs`` the files it reads (none for a
    camera or stream). The reader thread starts at the first frame asked for; close the source (or use
    ``with``) to stop it.
    """

    def __init__(self, source: str | Path, *, queue_size: int = 4, read_timeout: float = DEFAULT_READ_TIMEOUT):
        self.source = str(source)
        self.read_timeout = read_timeout
        self.fps: float | None = None
        self.total: int | None = None
        self.stopped_early: str | None = None
        self._images: list[Path] = []
        self._files: list[str] = []  # each image's path relative to the folder, as Frame.file
        self.skipped: list[Path] = []  # unreadable images of a folder, skipped with a warning
        self._capture: cv2.VideoCapture | None = None
        path = Path(self.source)
        live = live_kind(self.source)
        if live == "camera":
            self.kind = "camera"
            self._capture = self._open_capture(int(self.source))
        elif live == "stream":
            self.kind = "stream"
            self._capture = self._open_capture(self.source)
        elif path.is_dir():
            self.kind = "folder"
            self._images = list_image_tree(path)
            if not self._images:
                raise SourceError(
                    f"folder {path} holds no images, in it or its subfolders (expected {', '.join(IMAGE_SUFFIXES)} "
                    "files)"
                )
            self._files = [image.relative_to(path).as_posix() for image in self._images]
        elif not path.exists():
            raise SourceError(
                f"source {path} not found (expected an image, a folder, a video, a camera index or a URL)"
            )
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            self.kind = "image"
            self._images = [path]
            self._files = [path.name]
        else:
            self.kind = "video"
            self._capture = self._open_capture(str(path))
        # Video, camera and stream frames are named <frame_stem>_<index>, six digits.
        self.frame_stem = path.stem if self.kind == "video" else f"{self.kind}{self.source}".replace("/", "_")
        if self._images:
            self.total = len(self._images)
        elif self._capture is not None:
            fps = self._capture.get(cv2.CAP_PROP_FPS)
            self.fps = fps if fps > 0 else None
            count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
            self.total = count if self.kind == "video" and count > 0 else None
        self._queue: queue.Queue[Frame | _End | BaseException] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_ahead, name=f"poet-reader {self.source}", daemon=True)
        self._started = False

    @property
    def inputs(self) -> list[Path]:
        """The files this source reads: its images, or its video file; none for a camera or a stream."""
        if self._images:
            return list(self._images)
        return [Path(self.source)] if self.kind == "video" else []

    @property
    def files(self) -> list[str]:
        """Each image's path relative to the source folder (a single image: its name), in reading order."""
        return list(self._files)

    def start(self) -> None:
        """Start the reader thread (iterating does); once only."""
        if not self._started and not self._stop.is_set():
            self._started = True
            self._thread.start()

    @property
    def live(self) -> bool:
        """Cameras and streams: frames keep coming until the user stops or the source fails."""
        return self.kind in ("camera", "stream")

    def _open_capture(self, target: int | str) -> cv2.VideoCapture:
        """Open with OpenCV; streams get FFmpeg's open and read timeouts, which camera backends would reject."""
        if self.kind == "stream":
            timeout_ms = int(self.read_timeout * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
            capture = cv2.VideoCapture(target, cv2.CAP_ANY, params)
        else:
            capture = cv2.VideoCapture(target)
        if not capture.isOpened():
            capture.release()
            what = f"camera {target}" if isinstance(target, int) else target
            raise SourceError(f"cannot open {what} as a video source (not a readable video, camera or stream)")
        return capture

    def _read_ahead(self) -> None:
        """Reader thread: decode frames into the queue until the end, a failure or :meth:`close`."""
        try:
            end = self._read_images() if self._images else self._read_capture()
            self._put(end)
        except BaseException as error:  # handed to the consumer, which raises it in its own thread
            self._put(error)
        finally:
            if self._capture is not None:
                self._capture.release()

    def _read_images(self) -> _End:
        for index, path in enumerate(self._images):
            image = read_image(path) if self.kind == "image" else read_or_skip(path, self.skipped)
            if image is None:
                continue
            if not self._put(Frame(index, path.stem, image, self._files[index])):
                return _End()
        if len(self.skipped) == len(self._images):
            raise no_image_left(self.skipped, f"folder {self.source}")
        return _End()

    def _read_capture(self) -> _End:
        assert self._capture is not None
        stem = self.frame_stem
        index = 0
        while not self._stop.is_set():
            ok, image = self._capture.read()
            if not ok or image is None:
                break
            if not self._put(Frame(index, f"{stem}_{index:06d}", to_bgr_uint8(image, f"{self.source} frame {index}"))):
                break
            index += 1
        if self._stop.is_set():
            return _End()
        if index == 0:
            raise SourceError(f"{self.source} delivered no frames")
        if self.live:
            return _End(f"{self.kind} {self.source} stopped delivering frames after {index} frames")
        if self.total is not None and index < self.total:
            return _End(f"video {self.source} ended after {index} of its {self.total} frames (truncated file?)")
        return _End()

    def _put(self, item: Frame | _End | BaseException) -> bool:
        """Queue an item, waiting while the consumer is busy; False once the source is closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Frame]:
        self.start()
        if not self._started:  # closed before the first frame
            return
        while True:
            try:
                item = self._queue.get(timeout=self.read_timeout)
            except queue.Empty:
                self.stopped_early = f"no frame from {self.source} within {self.read_timeout:g} s; stopping"
                logger.warning("%s", self.stopped_early)
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _End):
                if item.reason is not None:
                    self.stopped_early = item.reason
                    logger.warning("%s", item.reason)
                return
            yield item

    def close(self) -> None:
        """Stop the reader; a read stuck inside OpenCV is left to its daemon thread rather than waited for."""
        self._stop.set()
        if self._started:
            self._thread.join(timeout=1.0)
        elif self._capture is not None:  # never started: the reader thread would have released it
            self._capture.release()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
