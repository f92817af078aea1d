"""Torch inference on images: load a checkpoint, letterbox, run POET, decode poses in original pixels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from poet.checkpoint import load_model
from poet.images import ImageInput, load_images
from poet.model.poet import POET
from poet.processing import Pose, decode_poses, preprocess


class Predictor:
    """Poses for images with a PyTorch POET; preprocessing and decoding are the shared definitions.

    Images are paths or BGR uint8 arrays as OpenCV gives them (``rgb=True`` for RGB arrays).
    """

    def __init__(
        self,
        model: POET | str | Path,
        device: str | torch.device = "cpu",
        score_threshold: float = 0.5,
        max_people: int | None = None,
        batch_size: int = 4,
    ) -> None:
        self.model = load_model(model, device) if isinstance(model, (str, Path)) else model.eval()
        self.device = torch.device(device)
        self.score_threshold = score_threshold
        self.max_people = max_people
        self.batch_size = batch_size

    @torch.inference_mode()
    def raw_outputs(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Letterboxed batch -> ``pred_logits`` [B,Q,3] and ``pred_kpts`` [B,Q,53] as numpy."""
        batch, mask, _ = preprocess(images, self.model.preprocess)
        outputs = self.model(torch.from_numpy(batch).to(self.device), torch.from_numpy(mask).to(self.device))
        logits = outputs["pred_logits"]
        kpts = outputs["pred_kpts"]
        assert isinstance(logits, torch.Tensor) and isinstance(kpts, torch.Tensor)
        return logits.float().cpu().numpy(), kpts.float().cpu().numpy()

    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[list[Pose]]:
        """Poses for already-loaded BGR uint8 images, processed ``batch_size`` at a time."""
        poses: list[list[Pose]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            logits, kpts = self.raw_outputs(chunk)
            for image, image_logits, image_kpts in zip(chunk, logits, kpts, strict=True):
                poses.append(
                    decode_poses(image_logits, image_kpts, image.shape[:2], self.score_threshold, self.max_people)
                )
        return poses

    def predict(self, images: ImageInput | Sequence[ImageInput], rgb: bool = False) -> list[Pose] | list[list[Pose]]:
        """One image -> its poses; a list of images -> a list of pose lists."""
        arrays, single = load_images(images, rgb)
        poses = self.predict_arrays(arrays)
        return poses[0] if single else poses
