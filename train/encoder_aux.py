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
from poet.train.matcher import Targets, split_target_keypoints, target_keypoints, target_masks

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
    people: PeopleKeypoints, labelled: Tensor, cells: Tensor, valid_tokens: Tensor
) -> tuple[Tensor, Tensor]:
    """Which tokens cover a person, and whose: ([T] bool, [T] person index) for one image."""
    if len(people.centres) == 0:
        empty = torch.zeros(len(cells), dtype=torch.bool, device=cells.device)
        return empty, torch.zeros(len(cells), dtype=torch.long, device=cells.device)
    absolute = people.absolute()  # [P, 17, 2]
    keep = labelled.unsqueeze(-1)
    low = torch.where(keep, absolute, torch.full_like(absolute, torch.inf)).amin(dim=1)  # [P, 2]
    high = torch.where(keep, absolute, torch.full_like(absolute, -torch.inf)).amax(dim=1)
    inside = ((cells.unsqueeze(0) >= low.unsqueeze(1)) & (cells.unsqueeze(0) <= high.unsqueeze(1))).all(-1)
    distance = (cells.unsqueeze(0) - people.centres.unsqueeze(1)).square().sum(-1)  # [P, T]
    people_index = torch.arange(len(distance), device=cells.device)
    inside[people_index, distance.argmin(dim=1)] = True
    inside &= labelled.any(dim=1, keepdim=True) & valid_tokens.unsqueeze(0)
    distance = torch.where(inside, distance, torch.full_like(distance, torch.inf))
    return inside.any(dim=0), distance.argmin(dim=0)


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
        canvas_xy = torch.tensor((canvas[1], canvas[0]), device=device, dtype=grid.dtype)
        tokens_xy = torch.tensor((width, height), device=device, dtype=grid.dtype)
        objectness, kpts, ctrs, deltas = [], [], [], []
        covering = 0
        for raw, target in zip(predictions, targets, strict=True):
            # Cell centres and sizes as fractions of this image's unpadded size (the targets' frame).
            image_xy = target["size"].to(device=device, dtype=grid.dtype).flip(0)
            cells = grid * canvas_xy / image_xy
            valid_tokens = (cells <= 1).all(dim=-1)
            rows_54 = target_keypoints(target)
            people = split_target_keypoints(rows_54)
            labelled = target_masks(rows_54).keypoints
            covered, owner = _token_owners(people, labelled, cells, valid_tokens)
            objectness.append(
                F.binary_cross_entropy_with_logits(raw[valid_tokens, 0], covered[valid_tokens].to(raw.dtype))
            )
            if not covered.any():
                continue
            owner, raw = owner[covered], raw[covered]
            covering += len(raw)
            centres = cells[covered] + raw[:, 1:3] * canvas_xy / tokens_xy / image_xy
            offsets = raw[:, 3:].reshape(-1, NUM_KEYPOINTS, 2).sigmoid()
            predicted = PeopleKeypoints(centres, offsets, offsets[..., 0])  # visibilities unused here
            mask = labelled[owner].unsqueeze(-1).to(raw.dtype)
            kpts.append(((predicted.absolute() - people.absolute()[owner]).abs() * mask).sum())
            deltas.append(((offsets - people.offsets[owner]).abs() * mask).sum())
            ctrs.append((centres - people.centres[owner]).square().sum())
        losses = {"loss_enc_obj": torch.stack(objectness).mean()}
        for name, values in (("loss_enc_kpts", kpts), ("loss_enc_ctrs", ctrs), ("loss_enc_deltas", deltas)):
            losses[name] = (torch.stack(values).sum() if values else predictions.sum() * 0) / max(covering, 1)
        return losses

    def weighted_total(self, losses: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([losses[name] * weight for name, weight in self.weight_dict.items()]).sum()
