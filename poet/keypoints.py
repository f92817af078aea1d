"""POET's 53-value keypoint prediction in torch: its layout, split into fields and joined back, and the decode.

Torch-only (no scipy), so the model itself (keypoint refinement) and the training loss read and write the
predictions through the same definitions. ``poet.processing`` holds the numpy twin used by export and runtime.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from poet.processing import KEYPOINT_OUTPUTS

# Prediction: [cx, cy, ox0, oy0, v0, ..., ox16, oy16, v16], all sigmoided.
PRED_DIM = KEYPOINT_OUTPUTS
PRED_CENTRE = slice(0, 2)
PRED_OFFSET_X = slice(2, PRED_DIM, 3)
PRED_OFFSET_Y = slice(3, PRED_DIM, 3)
PRED_VISIBILITY = slice(4, PRED_DIM, 3)


class PeopleKeypoints(NamedTuple):
    """People split into the fields that matching and loss compare; leading dimensions N (or B, Q)."""

    centres: Tensor  # [N, 2] centre (x, y) as a fraction of the image size
    offsets: Tensor  # [N, 17, 2] encoded offsets 0.5 + d / (2 * size)
    visibilities: Tensor  # [N, 17]

    def absolute(self) -> Tensor:
        """Decoded keypoint positions ``c + 2 * (o - 0.5)`` as fractions of the image size, [N, 17, 2]."""
        return self.centres.unsqueeze(-2) + 2 * (self.offsets - 0.5)


def split_predicted_keypoints(pred_kpts: Tensor) -> PeopleKeypoints:
    """Split [..., 53] predictions into centres, encoded offsets and visibilities (traceable for export)."""
    offsets = torch.stack((pred_kpts[..., PRED_OFFSET_X], pred_kpts[..., PRED_OFFSET_Y]), dim=-1)
    return PeopleKeypoints(pred_kpts[..., PRED_CENTRE], offsets, pred_kpts[..., PRED_VISIBILITY])


def join_predicted_keypoints(people: PeopleKeypoints) -> Tensor:
    """The inverse of :func:`split_predicted_keypoints`: fields back to [..., 53] rows (traceable for export)."""
    per_keypoint = torch.cat((people.offsets, people.visibilities.unsqueeze(-1)), dim=-1)  # [..., 17, 3]
    return torch.cat((people.centres, per_keypoint.flatten(-2)), dim=-1)
