"""The one definition of how images go into POET and how its raw outputs become poses.

Training, evaluation, export and the torch-free runtime all call these functions, so a pose can
never drift between stages because one of them resized, padded or decoded differently. Only numpy
and OpenCV are used here.

Layout of POET's 53 keypoint outputs per query (all after sigmoid, the authors' layout):
index 0, 1 are the person centre (cx, cy) as fractions of the image; for keypoint k,
``2 + 3k`` and ``3 + 3k`` are its offsets from the centre encoded as ``0.5 + d / (2 * size)``,
and ``4 + 3k`` is its visibility score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from poet.checks import describe
from poet.skeleton import NUM_KEYPOINTS

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
KEYPOINT_OUTPUTS = 2 + 3 * NUM_KEYPOINTS
# Classes: 0 person without annotated keypoints, 1 person; the class head adds 2, no object.
NUM_CLASSES = 2
PERSON_CLASS = 1
NO_OBJECT_CLASS = NUM_CLASSES


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the model's input: letterboxed into ``input_size`` (height, width), RGB."""

    input_size: tuple[int, int] = (512, 512)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if len(self.input_size) != 2 or min(self.input_size) < 32:
            raise ValueError(f"input_size must be (height, width) of at least 32 pixels, got {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need three values with std > 0, got {self.mean}, {self.std}")

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Any, name: str = "preprocess") -> PreprocessConfig:
        """From its dict (in model info or a checkpoint), every field checked; ValueError names it (``name.std``).

        ``input_size`` two whole numbers of at least 32 (height, width), ``mean`` and ``std`` three finite
        numbers each (std above 0); the last two default to ImageNet's.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{name} must be an object with input_size, mean and std, got {describe(data)}")
        if "input_size" not in data:
            raise ValueError(f"{name} lacks the field 'input_size'")
        size = data["input_size"]
        if (
            not isinstance(size, (list, tuple))
            or len(size) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 32 for v in size)
        ):
            raise ValueError(
                f"{name}.input_size must be two whole numbers of at least 32 (height, width), got {describe(size)}"
            )
        mean = _numbers(data.get("mean", list(IMAGENET_MEAN)), f"{name}.mean", 3)
        std = _numbers(data.get("std", list(IMAGENET_STD)), f"{name}.std", 3)
        if min(std) <= 0:
            raise ValueError(f"{name}.std must be above 0 (it divides), got {list(std)}")
        return cls(input_size=(size[0], size[1]), mean=mean, std=std)  # type: ignore[arg-type]


def _numbers(value: Any, name: str, count: int) -> tuple[float, ...]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != count
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value)
    ):
        raise ValueError(f"{name} must be {count} finite numbers, got {describe(value)}")
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class Letterbox:
    """Where an original image sits in the model input: resized to ``resized_size``, top-left aligned."""

    original_size: tuple[int, int]
    resized_size: tuple[int, int]


def fit_size(original_size: tuple[int, int], input_size: tuple[int, int]) -> tuple[int, int]:
    """Largest (height, width) with the original aspect ratio that fits inside ``input_size``."""
    height, width = original_size
    scale = min(input_size[0] / height, input_size[1] / width)
    return (
        min(input_size[0], max(1, round(height * scale))),
        min(input_size[1], max(1, round(width * scale))),
    )


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to ``size`` (height, width); the same call for training, evaluation and runtime."""
    if image.shape[:2] == size:
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float], bgr: bool = True) -> np.ndarray:
    """uint8 HxWx3 image -> float32 3xHxW RGB tensor, ``(pixel / 255 - mean) / std`` per channel."""
    gain = 1.0 / (255.0 * np.asarray(std, dtype=np.float32))
    offset = -np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)
    planes = cv2.split(image)
    if bgr:
        planes = planes[::-1]
    # Plane by plane into the channel-first output: six times faster than scaling the HxWx3 image and
    # transposing it (training spent a tenth of its time here), with the same float32 arithmetic.
    out = np.empty((3, *image.shape[:2]), dtype=np.float32)
    for channel, plane in enumerate(planes):
        np.multiply(plane, gain[channel], out=out[channel], dtype=np.float32)
        out[channel] += offset[channel]
    return out


def pad_batch(tensors: Sequence[np.ndarray], size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad 3xhxw tensors bottom/right to ``size`` (default: the largest); mask is True on padding."""
    if size is None:
        size = (max(t.shape[1] for t in tensors), max(t.shape[2] for t in tensors))
    batch = np.zeros((len(tensors), 3, *size), dtype=np.float32)
    mask = np.ones((len(tensors), *size), dtype=bool)
    for i, tensor in enumerate(tensors):
        _, height, width = tensor.shape
        batch[i, :, :height, :width] = tensor
        mask[i, :height, :width] = False
    return batch, mask


def fill_batch(images: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A model's ``(images, mask)`` inputs filled up to a fixed batch of ``size`` with black images that are not
    masked (an all-padding mask would leave attention nothing to attend to); their outputs are to be dropped."""
    missing = size - len(images)
    if missing <= 0:
        return images, mask
    return (
        np.concatenate([images, np.zeros((missing, *images.shape[1:]), images.dtype)]),
        np.concatenate([mask, np.zeros((missing, *mask.shape[1:]), bool)]),
    )


def preprocess(
    images: Sequence[np.ndarray], config: PreprocessConfig, bgr: bool = True
) -> tuple[np.ndarray, np.ndarray, list[Letterbox]]:
    """Letterbox uint8 HxWx3 images into one ``[B,3,H,W]`` float32 batch plus its padding mask.

    The model's keypoints then refer to the unpadded region (the mask tells it where that is), so
    decoding needs only each image's original size: see :func:`decode_poses`.
    """
    tensors = []
    boxes = []
    for image in images:
        original = (int(image.shape[0]), int(image.shape[1]))
        resized_size = fit_size(original, config.input_size)
        tensors.append(normalize(resize_image(image, resized_size), config.mean, config.std, bgr=bgr))
        boxes.append(Letterbox(original_size=original, resized_size=resized_size))
    batch, mask = pad_batch(tensors, config.input_size)
    return batch, mask, boxes


def letterbox_batch(
    images: Sequence[np.ndarray],
    input_size: tuple[int, int],
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[Letterbox]]:
    """Letterbox uint8 HxWx3 images into a uint8 ``[B,H,W,3]`` batch (channels untouched) and its mask.

    The same resize and top-left placement as :func:`preprocess`, without normalisation: models with
    ``uint8-nhwc-bgr`` input normalise in the graph, which saves the runtime most of its per-frame
    cost. ``normalize`` of the result equals :func:`preprocess` wherever the mask is False; padding
    is zero. ``out`` is a ``(batch, mask)`` pair from an earlier call, reused so video frames allocate
    nothing; it must have the batch's shape.
    """
    height, width = input_size
    shape = (len(images), height, width, 3)
    if out is None:
        batch, mask = np.empty(shape, dtype=np.uint8), np.empty(shape[:3], dtype=bool)
    else:
        batch, mask = out
        if batch.shape != shape or batch.dtype != np.uint8 or mask.shape != shape[:3] or mask.dtype != bool:
            raise ValueError(f"out must be uint8 {shape} and bool {shape[:3]}, got {batch.shape}, {mask.shape}")
    boxes = []
    for index, image in enumerate(images):
        original = (int(image.shape[0]), int(image.shape[1]))
        resized_h, resized_w = fit_size(original, input_size)
        target = batch[index, :resized_h, :resized_w]
        if original == (resized_h, resized_w):
            target[...] = image
        elif target.flags.c_contiguous:
            cv2.resize(image, (resized_w, resized_h), dst=target, interpolation=cv2.INTER_LINEAR)
        else:
            target[...] = resize_image(image, (resized_h, resized_w))
        batch[index, resized_h:] = 0
        batch[index, :resized_h, resized_w:] = 0
        mask[index] = True
        mask[index, :resized_h, :resized_w] = False
        boxes.append(Letterbox(original_size=original, resized_size=(resized_h, resized_w)))
    return batch, mask, boxes


@dataclass
class Pose:
    """One person: ``keypoints`` (17, 3) as x, y in original-image pixels and a per-keypoint score.

    ``track_id`` is the person's identity across video frames (:class:`poet.runtime.tracking.PoseTracker`
    sets it); None for a single image.
    """

    keypoints: np.ndarray
    score: float
    box: np.ndarray = field(default_factory=lambda: np.zeros(4))
    track_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The pose as JSON: score, box (x0, y0, x1, y1) and keypoints as [x, y, score] rows in original pixels.

        ``track_id`` is added only when set, so untracked output keeps its layout.
        """
        data: dict[str, Any] = {
            "score": round(float(self.score), 4),
            "box": [round(float(v), 1) for v in self.box],
            "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), 3)] for x, y, s in self.keypoints],
        }
        if self.track_id is not None:
            data["track_id"] = int(self.track_id)
        return data

    def to_coco(self, image_id: int) -> dict[str, Any]:
        """A COCO keypoint result entry (category 1, person)."""
        return {
            "image_id": int(image_id),
            "category_id": PERSON_CLASS,
            "keypoints": [round(float(v), 3) for v in self.keypoints.reshape(-1)],
            "score": float(self.score),
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def person_scores(pred_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score and label per query as the authors define them: max over classes 0 and 1 of the softmax.

    Label 0 means "person without annotated keypoints"; COCO evaluation ignores those, so the
    decoder below keeps only label-1 queries, which leaves OKS AP identical to the authors' path.
    """
    probs = softmax(pred_logits.astype(np.float64))[..., :NO_OBJECT_CLASS]
    return probs.max(axis=-1), probs.argmax(axis=-1)


def decode_keypoints(pred_kpts: np.ndarray) -> np.ndarray:
    """``(..., 53)`` raw outputs -> ``(..., 17, 3)``: x, y as fractions of the image, visibility score."""
    kpts = pred_kpts.astype(np.float64)
    centre = kpts[..., 0:2]
    triplets = kpts[..., 2:].reshape(*kpts.shape[:-1], NUM_KEYPOINTS, 3)
    out = np.empty_like(triplets)
    out[..., :2] = centre[..., None, :] + 2.0 * (triplets[..., :2] - 0.5)
    out[..., 2] = triplets[..., 2]
    return out


def encode_keypoints(keypoints: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`decode_keypoints` for one pose given in pixels: ``(17, 3)`` -> ``(53,)``.

    The centre is the centre of mass of keypoints whose third value is positive (as in training
    targets); with none, it is (0, 0).
    """
    height, width = image_size
    xy = keypoints[:, :2].astype(np.float64) / np.array([width, height], dtype=np.float64)
    visible = keypoints[:, 2] > 0
    centre = xy[visible].mean(axis=0) if visible.any() else np.zeros(2)
    out = np.empty(KEYPOINT_OUTPUTS, dtype=np.float64)
    out[0:2] = centre
    triplets = out[2:].reshape(NUM_KEYPOINTS, 3)
    triplets[:, :2] = 0.5 + (xy - centre) / 2.0
    triplets[:, 2] = keypoints[:, 2]
    return out


def keypoint_box(keypoints: np.ndarray, min_score: float = 0.5) -> np.ndarray:
    """x0, y0, x1, y1 around the keypoints scored at least ``min_score`` (all of them if none is)."""
    return keypoint_boxes(keypoints[None], min_score)[0]


def keypoint_boxes(keypoints: np.ndarray, min_score: float = 0.5) -> np.ndarray:
    """:func:`keypoint_box` of every pose in ``(N, 17, 3)`` at once -> ``(N, 4)``; one numpy pass for a crowd."""
    chosen = keypoints[..., 2] >= min_score
    chosen |= ~chosen.any(axis=-1, keepdims=True)
    xy = keypoints[..., :2].astype(np.float64)
    low = np.where(chosen[..., None], xy, np.inf).min(axis=-2)
    high = np.where(chosen[..., None], xy, -np.inf).max(axis=-2)
    return np.concatenate([low, high], axis=-1)


def decode_poses(
    pred_logits: np.ndarray,
    pred_kpts: np.ndarray,
    image_size: tuple[int, int],
    score_threshold: float = 0.0,
    max_people: int | None = None,
) -> list[Pose]:
    """One image's raw outputs (``[Q,3]`` logits, ``[Q,53]`` keypoints) -> poses in its pixels.

    ``image_size`` is the (height, width) the fractions refer to: the original image when the model
    was given the padding mask (our predictor, export and runtime all do). Poses come sorted by score.
    """
    scores, labels = person_scores(pred_logits)
    keep = _ranked_queries(scores, (labels == PERSON_CLASS) & (scores >= score_threshold), max_people)
    keypoints = decode_keypoints(pred_kpts[keep])
    keypoints[..., 0] *= image_size[1]
    keypoints[..., 1] *= image_size[0]
    boxes = keypoint_boxes(keypoints)
    return [
        Pose(keypoints=kp, score=float(scores[q]), box=box) for q, kp, box in zip(keep, keypoints, boxes, strict=True)
    ]


def poses_from_decoded(
    scores: np.ndarray,
    keypoints: np.ndarray,
    letterbox: Letterbox,
    score_threshold: float = 0.0,
    max_people: int | None = None,
) -> list[Pose]:
    """One image's outputs of a model that decodes in the graph -> poses in original-image pixels.

    ``scores`` ``[Q]`` is the person score (0 for queries not labelled person) and ``keypoints``
    ``[Q,17,3]`` has x, y in pixels of the letterboxed input, so only the resize is undone here;
    selection and ordering are those of :func:`decode_poses`.
    """
    scores = scores.astype(np.float64)
    keep = _ranked_queries(scores, (scores > 0) & (scores >= score_threshold), max_people)
    chosen = keypoints[keep].astype(np.float64)
    chosen[..., 0] *= letterbox.original_size[1] / letterbox.resized_size[1]
    chosen[..., 1] *= letterbox.original_size[0] / letterbox.resized_size[0]
    boxes = keypoint_boxes(chosen)
    return [Pose(keypoints=kp, score=float(scores[q]), box=box) for q, kp, box in zip(keep, chosen, boxes, strict=True)]


def _ranked_queries(scores: np.ndarray, candidates: np.ndarray, max_people: int | None) -> np.ndarray:
    """Indices of the candidate queries, best score first (ties keep query order), at most ``max_people``."""
    keep = np.flatnonzero(candidates)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    return keep if max_people is None else keep[:max_people]
