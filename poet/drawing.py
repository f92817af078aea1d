"""Drawing poses on images with the COCO-17 skeleton from :mod:`poet.skeleton` (torch-free)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from poet.errors import ImageError
from poet.fileio import atomic_path
from poet.processing import Pose
from poet.skeleton import KEYPOINT_SIDES, SIDE_COLOURS_BGR, SKELETON, limb_side

# Hue step between consecutive track ids, as a fraction of the colour circle: the golden ratio's, so any few ids
# in view at once get far-apart hues.
_TRACK_HUE_STEP = 0.6180339887


@functools.lru_cache(maxsize=1024)
def track_colour(track_id: int) -> tuple[int, int, int]:
    """The BGR colour of one identity, the same in every frame; nearby ids get distant hues."""
    hue = round((track_id * _TRACK_HUE_STEP) % 1.0 * 180) % 180
    blue, green, red = cv2.cvtColor(np.array([[[hue, 220, 255]]], np.uint8), cv2.COLOR_HSV2BGR)[0, 0]
    return int(blue), int(green), int(red)


def draw_poses(image: np.ndarray, poses: Sequence[Pose], keypoint_threshold: float = 0.3) -> np.ndarray:
    """Return a copy of a BGR image with each pose's limbs, joints and score drawn on it.

    Left limbs are orange, right limbs blue, so a left/right swap is visible at a glance. A tracked pose
    (``track_id`` set) has its limbs and its ``#id score`` label in its identity's :func:`track_colour`
    instead, so one person keeps one colour from frame to frame; its joints keep the side colours.
    """
    canvas = image.copy()
    thickness = max(1, round(min(image.shape[:2]) / 200))
    for pose in poses:
        points = np.round(pose.keypoints[:, :2]).astype(np.int32)
        shown = pose.keypoints[:, 2] >= keypoint_threshold
        identity = None if pose.track_id is None else track_colour(pose.track_id)
        for limb in SKELETON:
            if shown[limb[0]] and shown[limb[1]]:
                start, end = (tuple(int(v) for v in points[i]) for i in limb)
                colour = identity or SIDE_COLOURS_BGR[limb_side(limb)]
                cv2.line(canvas, start, end, colour, thickness + 1, cv2.LINE_AA)
        for index in np.flatnonzero(shown):
            centre = (int(points[index][0]), int(points[index][1]))
            cv2.circle(canvas, centre, thickness + 2, SIDE_COLOURS_BGR[KEYPOINT_SIDES[index]], -1, cv2.LINE_AA)
        x0, y0 = (int(v) for v in pose.box[:2])
        cv2.putText(
            canvas,
            f"{pose.score:.2f}" if pose.track_id is None else f"#{pose.track_id} {pose.score:.2f}",
            (x0, max(12, y0 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thickness,
            identity or (255, 255, 255),
            max(1, thickness // 2),
            cv2.LINE_AA,
        )
    return canvas


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Write an image atomically; the format follows the suffix (.png, .jpg...)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        ok, encoded = cv2.imencode(path.suffix or ".png", image)
        if not ok:
            raise ImageError(f"cannot encode an image as {path.suffix!r} for {path}")
        tmp.write_bytes(encoded.tobytes())
