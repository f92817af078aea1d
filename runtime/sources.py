"""Frames from an image, a folder, a video file, a camera or a stream, decoded ahead on a reader thread.

The reader thread decodes the next frame while the model runs on the current one, through a bounded
queue so memory stays flat. Every wait has a timeout: a camera or stream that stops delivering, or a
video that ends early, ends the iteration with a warning instead of hanging the app.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from poet.errors import ImageError, PoetError
from poet.images import IMAGE_SUFFIXES, list_images, read_image, to_bgr_uint8

logger = logging.getLogger("poet")

DEFAULT_READ_TIMEOUT = 10.0


class SourceError(PoetError):
    """A source that cannot be opened or delivers no frame at all."""


@dataclass(frozen=True)
class Frame:
    """One decoded BGR uint8 frame; ``name`` is the image file's stem or ``<video>_<index>``."""

    index: int
    name: str
    image: np.ndarray


class _End:
    """Queue item after the last frame; ``reason`` is a warning when the source stopped early."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason


class FrameSource:
    """Iterate over the frames of ``source``: an image, a folder of images, a video file, a camera index or a URL.

    ``total`` is the frame count when known (files), ``fps`` the video's frame rate when it has one.
    Close it (or use ``with``) to stop the reader thread.
    """

    def __init__(self, source: str | Path, *, queue_size: int = 4, read_timeout: float = DEFAULT_READ_TIMEOUT):
        self.source = str(source)
        self.read_timeout = read_timeout
        self.fps: float | None = None
        self.total: int | None = None
        self.stopped_early: str | None = None
        self._images: list[Path] = []
        self._capture: cv2.VideoCapture | None = None
        path = Path(self.source)
        if self.source.isdigit() and not path.exists():
            self.kind = "camera"
            self._capture = self._open_capture(int(self.source))
        elif "://" in self.source:
            self.kind = "stream"
            self._capture = self._open_capture(self.source)
        elif path.is_dir():
            self.kind = "folder"
            self._images = list_images(path)
            if not self._images:
                raise SourceError(f"folder {path} holds no images (expected {', '.join(IMAGE_SUFFIXES)} files)")
        elif not path.exists():
            raise SourceError(
                f"source {path} not found (expected an image, a folder, a video, a camera index or a URL)"
            )
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            self.kind = "image"
            self._images = [path]
        else:
            self.kind = "video"
            self._capture = self._open_capture(str(path))
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
            try:
                image = read_image(path)
            except ImageError as error:
                if self.kind == "image":
                    raise
                logger.warning("skipping %s", error)
                continue
            if not self._put(Frame(index, path.stem, image)):
                break
        return _End()

    def _read_capture(self) -> _End:
        assert self._capture is not None
        stem = Path(self.source).stem if self.kind == "video" else f"{self.kind}{self.source}".replace("/", "_")
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
        self._thread.join(timeout=1.0)

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
