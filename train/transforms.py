"""Training augmentations on (image, people in pixels), the preset style of torchvision's references.

Kept to what the authors' recipe needs and what a fixed-size deployment benefits from:
horizontal flip with the left/right swap, multi-scale resize into the model's letterbox, and a
random crop. The evaluation side is :func:`poet.processing.preprocess` itself, so training sees
the same resize and normalisation as export and the runtime. The authors' rotation and coarse
dropout are not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poet.processing import fit_size, resize_image
from poet.skeleton import flip_permutation

_FLIP_ORDER = flip_permutation()


def hflip(image: np.ndarray, people: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror the image; x becomes W - x (continuous coordinates) and left/right keypoints swap."""
    width = image.shape[1]
    flipped = people[:, _FLIP_ORDER].copy()
    visible = flipped[..., 2] > 0
    flipped[..., 0] = np.where(visible, width - flipped[..., 0], 0.0)
    return np.ascontiguousarray(image[:, ::-1]), flipped


def resize(image: np.ndarray, people: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize to ``size`` (height, width) and scale the keypoints with it."""
    height, width = image.shape[:2]
    if (height, width) == size:
        return image, people
    resized = resize_image(image, size)
    scaled = people.copy()
    scaled[..., 0] *= size[1] / width
    scaled[..., 1] *= size[0] / height
    return resized, scaled


def crop(
    image: np.ndarray, people: np.ndarray, top: int, left: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a region; keypoints stay visible only strictly inside it, and people left with none are dropped."""
    shifted = people.copy()
    shifted[..., 0] -= left
    shifted[..., 1] -= top
    inside = (shifted[..., 0] > 0) & (shifted[..., 0] < width) & (shifted[..., 1] > 0) & (shifted[..., 1] < height)
    shifted[..., 2] = np.where(inside, shifted[..., 2], 0.0)
    shifted[..., 0] = np.clip(shifted[..., 0], 0, width)
    shifted[..., 1] = np.clip(shifted[..., 1], 0, height)
    keep = shifted[..., 2].any(axis=1)
    return np.ascontiguousarray(image[top : top + height, left : left + width]), shifted[keep]


@dataclass(frozen=True)
class TrainTransform:
    """Flip, optional random crop, then a random scale of the letterbox size (multiples of 32 px).

    ``min_scale`` is the smallest letterbox as a fraction of ``input_size`` (the authors sample
    short sides 480..800 for an 800 evaluation, i.e. 0.6); ``min_crop`` the smallest crop side as
    a fraction of the image.
    """

    input_size: tuple[int, int]
    flip_prob: float = 0.5
    crop_prob: float = 0.5
    min_scale: float = 0.6
    min_crop: float = 0.5

    def scales(self) -> list[float]:
        longest = max(self.input_size)
        sizes = range(32 * max(1, round(self.min_scale * longest / 32)), longest + 1, 32)
        return [size / longest for size in sizes] or [1.0]

    def __call__(
        self, image: np.ndarray, people: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if rng.random() < self.flip_prob:
            image, people = hflip(image, people)
        if rng.random() < self.crop_prob:
            height, width = image.shape[:2]
            crop_h = int(rng.integers(max(1, int(self.min_crop * height)), height + 1))
            crop_w = int(rng.integers(max(1, int(self.min_crop * width)), width + 1))
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            image, people = crop(image, people, top, left, crop_h, crop_w)
        factor = float(rng.choice(self.scales()))
        box = (max(32, round(self.input_size[0] * factor)), max(32, round(self.input_size[1] * factor)))
        return resize(image, people, fit_size(image.shape[:2], box))
