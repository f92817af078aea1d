"""COCO person-keypoints dataset for training, reading COCO's own layout (annotation JSON + image folder).

Images kept are those with at least one annotation (the authors' rule). Bad entries never stop an
epoch: images whose annotations are all crowd (quirk #12, which crashes the authors' code), files
that are missing or unreadable, and images with an unusable annotation (NaN or missing keypoints, a
short box: each is named by :func:`poet.evaluation.check_coco_keypoints`) are skipped, counted, and
reported. The whole image goes, not only the bad annotation, so its person is never taught as
background. A file that is wrong as a whole (duplicate ids, annotations of unlisted images) stops
before training, as evaluation does.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from poet.errors import DatasetError, ImageError
from poet.evaluation import read_coco_keypoints
from poet.images import read_image
from poet.processing import PreprocessConfig, fit_size, normalize, pad_batch
from poet.train.targets import encode_targets, people_from_coco
from poet.train.transforms import resize

logger = logging.getLogger("poet")
Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass
class Sample:
    image: torch.Tensor
    target: dict[str, torch.Tensor]


@dataclass
class Batch:
    """Padded images, padding mask, per-image targets, and how many images of this batch were skipped.

    ``mask`` is None when no image of the batch is padded, so the model skips zeroing padding it does not have.
    """

    images: torch.Tensor
    mask: torch.Tensor | None
    targets: list[dict[str, torch.Tensor]]
    skipped: int = 0

    def to(self, device: torch.device | str, memory_format: torch.memory_format = torch.contiguous_format) -> Batch:
        return Batch(
            self.images.to(device, non_blocking=True, memory_format=memory_format),
            None if self.mask is None else self.mask.to(device, non_blocking=True),
            [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in self.targets],
            self.skipped,
        )


@dataclass
class SkipReport:
    """Images left out when the dataset was indexed, by reason."""

    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, example: str) -> None:
        self.reasons[reason] += 1
        self.examples.setdefault(reason, example)

    def __str__(self) -> str:
        return ", ".join(f"{n} {r} (e.g. {self.examples[r]})" for r, n in self.reasons.items()) or "none"


class CocoKeypoints(Dataset[Sample | None]):
    """People of a COCO-layout split as POET training samples.

    ``transform`` augments (image, people-in-pixels) with a per-sample generator seeded from
    (seed, epoch, index), so augmentation is reproducible whatever the worker count; call
    :meth:`set_epoch` each epoch. The epoch lives in shared memory, so loader workers that outlive an
    epoch (``persistent_workers``) see it too. Without a transform, images are letterboxed as at evaluation.
    """

    def __init__(
        self,
        annotations: str | Path,
        images_dir: str | Path,
        preprocess: PreprocessConfig,
        transform: Transform | None = None,
        seed: int = 0,
    ) -> None:
        self.annotation_file = Path(annotations)
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise DatasetError(f"image folder {self.images_dir} not found")
        coco, self.bad_annotations = read_coco_keypoints(self.annotation_file, skip_bad_annotations=True)
        if self.bad_annotations:
            logger.warning(
                "%s: skipped %d bad annotation%s and the images they are in (first: %s)",
                self.annotation_file,
                len(self.bad_annotations),
                "" if len(self.bad_annotations) == 1 else "s",
                self.bad_annotations[0],
            )
        with_bad_annotations = {bad.image_id for bad in self.bad_annotations}
        self.preprocess = preprocess
        self.transform = transform
        self.seed = seed
        self._epoch = multiprocessing.RawValue("q", 0)
        self.skipped = SkipReport()
        self.entries: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        for image_id in sorted(coco.getImgIds()):
            info = coco.imgs[image_id]
            annotations_of_image = coco.imgToAnns.get(image_id, [])
            if image_id in with_bad_annotations:
                self.skipped.add("with bad annotations", info["file_name"])
            elif not annotations_of_image:
                self.skipped.add("without people", info["file_name"])
            elif all(a.get("iscrowd", 0) for a in annotations_of_image):
                self.skipped.add("with crowd annotations only", info["file_name"])
            elif not (self.images_dir / info["file_name"]).is_file():
                self.skipped.add("missing image files", info["file_name"])
            else:
                self.entries.append((info, annotations_of_image))
        if self.skipped.reasons:
            logger.info("%s: skipped %s", self.annotation_file, self.skipped)
        if not self.entries:
            raise DatasetError(f"{self.annotation_file} lists no usable image with people in {self.images_dir}")

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = epoch

    def __getitem__(self, index: int) -> Sample | None:
        info, annotations = self.entries[index]
        path = self.images_dir / info["file_name"]
        try:
            image = read_image(path)
        except ImageError as error:
            logger.warning("skipping %s", error)
            return None
        people = people_from_coco(annotations)
        original_size = image.shape[:2]
        if self.transform is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image, people = self.transform(image, people, rng)
        else:
            image, people = resize(image, people, fit_size(original_size, self.preprocess.input_size))
        labels, keypoints = encode_targets(people, image.shape[:2])
        if not np.isfinite(keypoints).all():
            # Checked annotations are finite, but coordinates beyond float32 (1e39) are not once encoded:
            # never hand the matcher a NaN or an infinity.
            logger.warning("skipping %s: keypoints too large to encode (not finite as float32)", path)
            return None
        target = {
            "labels": torch.from_numpy(labels),
            "keypoints": torch.from_numpy(keypoints),
            "image_id": torch.tensor(int(info["id"])),
            "orig_size": torch.tensor(original_size),
            "size": torch.tensor(image.shape[:2]),
        }
        tensor = torch.from_numpy(normalize(image, self.preprocess.mean, self.preprocess.std))
        return Sample(tensor, target)


def collate(samples: Sequence[Sample | None]) -> Batch:
    """Pad a list of samples bottom/right to the largest (the authors' batching); drop skipped ones."""
    kept = [s for s in samples if s is not None]
    if not kept:
        return Batch(torch.zeros(0, 3, 32, 32), torch.zeros(0, 32, 32, dtype=torch.bool), [], len(samples))
    images, mask = pad_batch([s.image.numpy() for s in kept])
    padding = torch.from_numpy(mask) if mask.any() else None
    return Batch(torch.from_numpy(images), padding, [s.target for s in kept], len(samples) - len(kept))
