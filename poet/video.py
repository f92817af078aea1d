"""Writing videos: a temporary file beside the target, read back and checked, and only then renamed over it.

OpenCV's video writers report no failure: on a full disk FFmpeg only logs ``Failed to write frame`` and
``VideoWriter.write`` returns as if the frame were kept, and ``release`` closes a file that holds part of the
video or none. So a finished video is opened again before it replaces anything: it must hold exactly the
frames written, and its last frame must decode. Every tool that writes a video does so through
:func:`open_video`, so none can report a truncated one as written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from poet.errors import OutputError
from poet.fileio import atomic_path, write_failed

# What open_video writes: MJPG in .avi, MPEG-4 part 2 in the others (file types FFmpeg takes it in).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")
VIDEO_HINT = "use a .mp4 or .avi file name"


def video_fourcc(path: Path) -> int:
    return cv2.VideoWriter.fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))


def can_write_video(path: Path) -> bool:
    """Whether this OpenCV writes videos of ``path``'s type, tried on a scratch file elsewhere."""
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        return False
    with tempfile.TemporaryDirectory(prefix="poet-video-") as scratch:
        writer = cv2.VideoWriter(os.path.join(scratch, f"probe{path.suffix}"), video_fourcc(path), 10.0, (64, 48))
        opened = writer.isOpened()
        writer.release()
    return opened


class VideoFile:
    """The frames of one video, at the first frame's size (later frames of other sizes are resized to it)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self.frames = 0
        self.size: tuple[int, int] = (0, 0)
        self._writer: cv2.VideoWriter | None = None

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            self.size = (image.shape[1], image.shape[0])
            self._writer = cv2.VideoWriter(str(self.path), video_fourcc(self.path), self.fps, self.size)
            if not self._writer.isOpened():
                raise OutputError(f"cannot write a video to {self.path} ({VIDEO_HINT})")
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def release(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def problem(self) -> str | None:
        """Why the released file is not the video written (frames missing, the end unreadable), or None."""
        capture = cv2.VideoCapture(str(self.path))
        try:
            if not capture.isOpened():
                return f"the finished file is no readable video (0 of the {self.frames} frames written)"
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            if count != self.frames:
                return f"the finished file holds {max(count, 0)} of the {self.frames} frames written"
            capture.set(cv2.CAP_PROP_POS_FRAMES, self.frames - 1)
            if not capture.read()[0]:
                return f"frame {self.frames} of {self.frames} does not decode"
            return None
        finally:
            capture.release()


@contextlib.contextmanager
def open_video(path: str | Path, fps: float) -> Iterator[VideoFile]:
    """A :class:`VideoFile` for ``path``, renamed onto it when the block ends only if it reads back complete.

    A short or unreadable result (a full disk, an I/O error) is an :class:`OutputError` naming ``path`` and
    the cause; the temporary file is removed and an earlier file at ``path`` stays as it was. A video that
    got no frame replaces nothing.
    """
    target = Path(path)
    with atomic_path(target, keep_empty=False) as tmp:
        video = VideoFile(tmp, fps)
        try:
            yield video
        finally:
            video.release()
        if video.frames:
            problem = video.problem()
            if problem is not None:
                raise write_failed(target, tmp.parent, problem)
