"""The COCO-17 person skeleton as data: names, limbs, left/right pairs, OKS sigmas, colours.

Kept free of torch so the runtime, drawing, training and evaluation all read the same tables.
"""

from __future__ import annotations

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

# Limbs as 0-based keypoint index pairs (COCO's annotation file lists the same pairs 1-based).
SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
)

# Keypoints that swap under a horizontal flip; the nose maps to itself.
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

# Per-keypoint OKS sigmas used by COCO's keypoint evaluation.
OKS_SIGMAS: tuple[float, ...] = (
    0.026,
    0.025,
    0.025,
    0.035,
    0.035,
    0.079,
    0.079,
    0.072,
    0.072,
    0.062,
    0.062,
    0.107,
    0.107,
    0.087,
    0.087,
    0.089,
    0.089,
)


def flip_permutation() -> list[int]:
    """Index map that reorders keypoints after a horizontal flip (left <-> right)."""
    order = list(range(NUM_KEYPOINTS))
    for left, right in FLIP_PAIRS:
        order[left], order[right] = right, left
    return order


def _side(name: str) -> str:
    return "left" if name.startswith("left") else "right" if name.startswith("right") else "centre"


# BGR colours by body side so a drawing shows at a glance whether left and right are swapped.
SIDE_COLOURS_BGR: dict[str, tuple[int, int, int]] = {
    "left": (0, 200, 255),
    "right": (255, 128, 0),
    "centre": (80, 220, 80),
}
KEYPOINT_SIDES: tuple[str, ...] = tuple(_side(name) for name in KEYPOINT_NAMES)


def limb_side(limb: tuple[int, int]) -> str:
    """A limb is left or right when both ends are; mixed limbs (e.g. shoulder line) are centre."""
    first, second = (KEYPOINT_SIDES[i] for i in limb)
    return first if first == second else "centre"
