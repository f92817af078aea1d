"""Training targets in the authors' layout, built from keypoints in pixels.

A person is a (17, 3) array of x, y, visibility in absolute pixels of the current (augmented)
image, visibility already mapped to 0/1: COCO's v=2 is visible, v=0 and v=1 (labelled but
occluded) are not, as in the authors' code. The 54-value target per person is
``[cx, cy, cv, dx0, dy0, v0, ..., dx16, dy16, v16]`` with the centre as a fraction of the image
and offsets encoded as ``0.5 + d / (2 * size)``, the same encoding :mod:`poet.processing` decodes.

Quirks of the authors' encoding decided here:

* #3 fixed: label 0 ("person without keypoints") means no visible keypoint. The authors test
  the nose offset instead, which also relabels people whose only visible keypoint is the nose.
* #4 fixed: the centre visibility is 0 only when no keypoint is visible (the authors also zero
  it when a centre coordinate is exactly 0).
* #7 reproduced: COCO v=1 counts as not visible.
* #13 fixed through the pixel representation: a horizontal flip moves only real centres, so
  people without keypoints keep centre (0, 0).
* Offsets of invisible keypoints are set to 0 (encoded 0.5). The authors store ``-centre``
  there; the matcher and the loss mask those entries out on both sides, so no loss changes.
"""

from __future__ import annotations

import numpy as np

from poet.skeleton import NUM_KEYPOINTS

TARGET_VALUES = 3 + 3 * NUM_KEYPOINTS


def people_from_coco(annotations: list[dict]) -> np.ndarray:
    """Non-crowd COCO annotations -> (N, 17, 3) float32 pixels with visibility 1 only where COCO says v=2."""
    people = [a for a in annotations if not a.get("iscrowd", 0)]
    if not people:
        return np.zeros((0, NUM_KEYPOINTS, 3), dtype=np.float32)
    keypoints = np.asarray([a["keypoints"] for a in people], dtype=np.float32).reshape(-1, NUM_KEYPOINTS, 3)
    keypoints[..., 2] = (keypoints[..., 2] == 2).astype(np.float32)
    return keypoints


def encode_targets(people: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 17, 3) pixel keypoints -> labels (N,) int64 and (N, 54) float32 targets, normalised to ``image_size``."""
    height, width = image_size
    count = len(people)
    scale = np.array([width, height], dtype=np.float64)
    xy = people[..., :2].astype(np.float64) / scale
    visible = people[..., 2] > 0
    has_visible = visible.any(axis=1)
    weights = visible.astype(np.float64)
    centre = (xy * weights[..., None]).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)[:, None]
    offsets = np.where(visible[..., None], 0.5 + (xy - centre[:, None, :]) / 2.0, 0.5)
    targets = np.zeros((count, TARGET_VALUES), dtype=np.float64)
    targets[:, 0:2] = centre
    targets[:, 2] = has_visible
    triplets = targets[:, 3:].reshape(count, NUM_KEYPOINTS, 3)
    triplets[..., :2] = offsets
    triplets[..., 2] = visible
    labels = np.asarray(has_visible, dtype=np.int64)
    return labels, targets.astype(np.float32)
