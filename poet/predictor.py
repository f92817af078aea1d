"""Torch inference on images: load a checkpoint, letterbox, run POET, decode poses in original pixels."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from poet.checkpoint import load_model
from poet.errors import PoetError
from poet.images import ImageInput, load_images
from poet.model.poet import POET
from poet.processing import Letterbox, Pose, decode_poses, preprocess

Inputs = tuple[torch.Tensor, torch.Tensor]
Outputs = tuple[np.ndarray, np.ndarray]


class Predictor:
    """Poses for images with a PyTorch POET, in the stages of :class:`poet.pipeline.PosePipeline`.

    Preprocessing and decoding are the shared definitions of :mod:`poet.processing`. Images are paths or
    BGR uint8 arrays as OpenCV gives them (``rgb=True`` for RGB arrays). ``fp16`` runs the model under
    CUDA autocast (FP16 matmuls and convolutions), for comparison with the FP16 exports.
    """

    def __init__(
        self,
        model: POET | str | Path,
        device: str | torch.device = "cpu",
        score_threshold: float = 0.5,
        max_people: int | None = None,
        batch_size: int = 4,
        fp16: bool = False,
    ) -> None:
        self.device = torch.device(device)
        if fp16 and self.device.type != "cuda":
            raise PoetError(f"PyTorch FP16 (autocast) runs on CUDA devices only, not on {self.device}")
        self.model = load_model(model, device) if isinstance(model, (str, Path)) else model.eval()
        self.score_threshold = score_threshold
        self.max_people = max_people
        self.batch_size = batch_size
        self.fp16 = fp16

    def prepare(self, images: Sequence[np.ndarray]) -> tuple[Inputs, list[Letterbox]]:
        """BGR uint8 images -> the letterboxed batch and padding mask on the model's device."""
        batch, mask, letterboxes = preprocess(images, self.model.preprocess)
        return (torch.from_numpy(batch).to(self.device), torch.from_numpy(mask).to(self.device)), letterboxes

    @torch.inference_mode()
    def infer(self, inputs: Inputs) -> Outputs:
        """``pred_logits`` [B,Q,3] and ``pred_kpts`` [B,Q,53] as numpy (copying them waits for the GPU)."""
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()
        with autocast:
            outputs = self.model(*inputs)
        logits, kpts = outputs["pred_logits"], outputs["pred_kpts"]
        assert isinstance(logits, torch.Tensor) and isinstance(kpts, torch.Tensor)
        return logits.float().cpu().numpy(), kpts.float().cpu().numpy()

    def decode(self, outputs: Outputs, letterboxes: Sequence[Letterbox]) -> list[list[Pose]]:
        """Raw outputs -> poses in original-image pixels, one list per image."""
        logits, kpts = outputs
        return [
            decode_poses(logits[i], kpts[i], box.original_size, self.score_threshold, self.max_people)
            for i, box in enumerate(letterboxes)
        ]

    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[list[Pose]]:
        """Poses for already-loaded BGR uint8 images, processed ``batch_size`` at a time."""
        poses: list[list[Pose]] = []
        for start in range(0, len(images), self.batch_size):
            inputs, letterboxes = self.prepare(images[start : start + self.batch_size])
            poses.extend(self.decode(self.infer(inputs), letterboxes))
        return poses

    def predict(self, images: ImageInput | Sequence[ImageInput], rgb: bool = False) -> list[Pose] | list[list[Pose]]:
        """One image -> its poses; a list of images -> a list of pose lists."""
        arrays, single = load_images(images, rgb)
        poses = self.predict_arrays(arrays)
        return poses[0] if single else poses
