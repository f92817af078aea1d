"""Training-only dense supervision of the encoder tokens: POET learns pose features from fewer images.

The set loss supervises only the one or two queries matched to people, so early in training the backbone
and encoder get a weak signal. Here every encoder token that covers a person also predicts that person's
centre and keypoints (one-to-many, in the authors' encoding, the centre relative to the token's cell), and
every token learns whether it covers anyone. This is the keypoint analogue of the auxiliary one-to-many heads
on the encoder of Co-DETR (Zong et al., ICCV 2023).

The head is not part of POET: checkpoints keep the authors' layout, and export and inference never see it.
A token covers a person when its cell centre lies inside the box of the person's labelled keypoints; the cell
holding the person's centre always does; a token covering several people belongs to the nearest centre.
Coordinates follow the targets: fractions of each image's unpadded size.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poet.keypoints import PeopleKeypoints
from poet.skeleton import NUM_KEYPOINTS
from poet.train.matcher import (
    Targets,
    people_per_image,
    split_target_keypoints,
    target_keypoints,
    target_masks,
    to_device_async,
)

# Per token: objectness logit, centre shift (in cells), 17 encoded (x, y) offsets before the sigmoid.
_OUTPUTS = 1 + 2 + 2 * NUM_KEYPOINTS


class EncoderKeypointHead(nn.Module):
    """Three-layer MLP from each encoder token to objectness, centre and keypoint offsets."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, _OUTPUTS),
        )

    def forward(self, memory: Tensor) -> Tensor:
        """Encoder memory ``[B, C, h, w]`` -> raw predictions ``[B, h*w, 37]``."""
        return self.layers(memory.flatten(2).transpose(1, 2))


def _token_owners(
    people: PeopleKeypoints, labelled: Tensor, cells: Tensor, valid_tokens: Tensor, image_of_person: Tensor
) -> tuple[Tensor, Tensor]:
    """Which tokens cover a person, and whose: ([B, T] bool, [B, T] index into the batch's people).

    ``cells`` [B, T, 2] and ``valid_tokens`` [B, T] per image; the batch's people [P] in one tensor, each
    compared with its own image's cells: no per-image loop, so no host synchronize on a GPU.
    """
    batch, tokens = valid_tokens.shape
    if len(people.centres) == 0:
        empty = torch.zeros(batch, tokens, dtype=torch.bool, device=cells.device)
        return empty, torch.zeros(batch, tokens, dtype=torch.long, device=cells.device)
    person_cells = cells[image_of_person]  # [P, T, 2]
    absolute = people.absolute()  # [P, 17, 2]
    keep = labelled.unsqueeze(-1)
    low = torch.where(keep, absolute, torch.full_like(absolute, torch.inf)).amin(dim=1)  # [P, 2]
    high = torch.where(keep, absolute, torch.full_like(absolute, -torch.inf)).amax(dim=1)
    inside = ((person_cells >= low.unsqueeze(1)) & (person_cells <= high.unsqueeze(1))).all(-1)  # [P, T]
    distance = (person_cells - people.centres.unsqueeze(1)).square().sum(-1)  # [P, T]
    people_index = torch.arange(len(distance), device=cells.device)
    inside[people_index, distance.argmin(dim=1)] = True
    inside &= labelled.any(dim=1, keepdim=True) & valid_tokens[image_of_person]
    # Each image's tokens against that image's people only: [B, P, T], infinite for the others.
    per_image = torch.full((batch, *distance.shape), torch.inf, dtype=distance.dtype, device=cells.device)
    per_image[image_of_person, people_index] = torch.where(inside, distance, torch.inf)
    return per_image.amin(dim=1).isfinite(), per_image.argmin(dim=1)


class EncoderKeypointLoss(nn.Module):
    """Unweighted dense terms ``loss_enc_obj``, ``loss_enc_kpts``, ``loss_enc_ctrs``, ``loss_enc_deltas``.

    Keypoint terms mirror the set loss (L1 on decoded and on encoded offsets of labelled keypoints,
    squared centre error) averaged over covering tokens; objectness is a BCE over the unpadded tokens.
    ``weight_dict`` scales them by ``coef`` times the set loss's keypoint coefficients.
    """

    def __init__(
        self, coef: float = 1.0, kpts_loss_coef: float = 5, ctrs_loss_coef: float = 1, deltas_loss_coef: float = 1
    ) -> None:
        super().__init__()
        self.weight_dict = {
            "loss_enc_obj": coef,
            "loss_enc_kpts": coef * kpts_loss_coef,
            "loss_enc_ctrs": coef * ctrs_loss_coef,
            "loss_enc_deltas": coef * deltas_loss_coef,
        }

    def forward(
        self, predictions: Tensor, feature_size: tuple[int, int], canvas: tuple[int, int], targets: Targets
    ) -> dict[str, Tensor]:
        """``predictions`` [B, h*w, 37] from :class:`EncoderKeypointHead`; ``canvas`` is the padded (H, W)."""
        height, width = feature_size
        device = predictions.device
        rows, cols = torch.meshgrid(
            torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
        )
        grid = torch.stack(((cols.flatten() + 0.5) / width, (rows.flatten() + 0.5) / height), dim=-1)  # [T, 2]
        canvas_xy = to_device_async(torch.tensor((canvas[1], canvas[0]), dtype=grid.dtype), device)
        tokens_xy = to_device_async(torch.tensor((width, height), dtype=grid.dtype), device)
        # Cell centres and sizes as fractions of each image's unpadded size (the targets' frame).
        image_xy = torch.stack([target["size"] for target in targets]).to(device=device, dtype=grid.dtype).flip(-1)
        image_xy = image_xy.unsqueeze(1)  # [B, 1, 2]
        cells = grid * canvas_xy / image_xy  # [B, T, 2]
        valid_tokens = (cells <= 1).all(dim=-1)
        rows_54 = torch.cat([target_keypoints(target) for target in targets]).to(device)
        counts = people_per_image(targets)
        image_of_person = to_device_async(torch.repeat_interleave(torch.tensor(counts)), device)
        people = split_target_keypoints(rows_54)
        labelled = target_masks(rows_54).keypoints
        covered, owner = _token_owners(people, labelled, cells, valid_tokens, image_of_person)
        logits = predictions[..., 0]
        per_token = F.binary_cross_entropy_with_logits(logits, covered.to(logits.dtype), reduction="none")
        per_image = torch.where(valid_tokens, per_token, 0).sum(1) / valid_tokens.sum(1)
        losses = {"loss_enc_obj": per_image.mean()}
        names = ("loss_enc_kpts", "loss_enc_ctrs", "loss_enc_deltas")
        if sum(counts) == 0:
            losses.update(dict.fromkeys(names, predictions.sum() * 0))
            return losses
        centres = cells + predictions[..., 1:3] * canvas_xy / tokens_xy / image_xy
        offsets = predictions[..., 3:].reshape(*predictions.shape[:2], NUM_KEYPOINTS, 2).sigmoid()
        predicted = PeopleKeypoints(centres, offsets, offsets[..., 0])  # visibilities unused here
        mask = (labelled[owner] & covered.unsqueeze(-1)).unsqueeze(-1)  # [B, T, 17, 1]
        covering = covered.sum().clamp(min=1)
        kpts = torch.where(mask, (predicted.absolute() - people.absolute()[owner]).abs(), 0).sum()
        deltas = torch.where(mask, (offsets - people.offsets[owner]).abs(), 0).sum()
        ctrs = torch.where(covered.unsqueeze(-1), (centres - people.centres[owner]).square(), 0).sum()
        losses.update(zip(names, (kpts / covering, ctrs / covering, deltas / covering), strict=True))
        return losses

    def weighted_total(self, losses: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([losses[name] * weight for name, weight in self.weight_dict.items()]).sum()
