"""Hungarian matching between POET queries and ground-truth people, with the authors' cost terms.

For every query q and target j the cost is a weighted sum of
  * class: minus the softmax probability of the target's label (0 = person without keypoints, 1 = person),
  * deltas: L1 between the encoded keypoint offsets, summed over the supervised keypoints,
  * kpts: the same L1 on the decoded absolute coordinates ``c + 2 * (o - 0.5)``,
  * ctrs: Euclidean distance between the centres, if the target centre is visible,
  * kpts_class: L2 norm of the difference of the 17 visibilities (not masked per keypoint).
All B*Q predictions are scored against all n targets of the batch in one set of tensor ops; scipy's
``linear_sum_assignment`` then runs on each image's (Q x n_img) block.

Decisions on the authors' quirks:
  * #5 FIXED. When any target has centre visibility 0, the official matcher also zeroes the visibility
    predictions of the query rows whose flat index equals such a target's index, which corrupts unrelated
    queries. Here only the target side is masked: a target with centre visibility 0 supervises no centre or
    keypoint position and its visibility vector counts as all zeros.
  * #6 is moot after that fix. The official code chooses one masking branch for the whole batch, but without
    the row bug both branches give every target the same cost column, so each target is masked on its own
    and an image's matching does not depend on the other images of the batch.
  * #8 REPRODUCED: Euclidean centre cost, L1 sums over keypoints, L2 norm of the visibility difference.
  * #17 FIXED: costs are computed on the device of the outputs (no ``.cuda()``); only the cost matrix goes
    to the CPU for scipy, in one copy for all decoder layers (``match_layers``).

The 53-dim prediction layout is ``poet.keypoints``; the 54-dim target layout helpers here are shared with
``poet.train.criterion`` and ``poet.train.encoder_aux`` so each layout is described once, as is
``to_device_async``, their way of sending host-known values to the GPU without a synchronize.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from poet.keypoints import PeopleKeypoints, split_predicted_keypoints
from poet.skeleton import NUM_KEYPOINTS

# Target: [cx, cy, cv, ox0, oy0, v0, ..., ox16, oy16, v16]; the centre visibility shifts keypoints by one.
TARGET_DIM = 3 + 3 * NUM_KEYPOINTS
TARGET_CENTRE = slice(0, 2)
TARGET_CENTRE_VISIBILITY = 2
TARGET_OFFSET_X = slice(3, TARGET_DIM, 3)
TARGET_OFFSET_Y = slice(4, TARGET_DIM, 3)
TARGET_VISIBILITY = slice(5, TARGET_DIM, 3)

# The model's output dict (pred_logits, pred_kpts, optional aux_outputs), the per-image targets, and per image
# the matched (query indices, target indices).
ModelOutputs = Mapping[str, Any]
Targets = Sequence[Mapping[str, Tensor]]
MatchIndices = list[tuple[Tensor, Tensor]]


class TargetMasks(NamedTuple):
    """Which terms of each target person are supervised."""

    centre: Tensor  # [N] bool, centre position supervised
    keypoints: Tensor  # [N, 17] bool, keypoint position supervised
    has_centre: Tensor  # [N] bool, visibilities supervised (treated as all zero on both sides otherwise)


def split_target_keypoints(target_kpts: Tensor) -> PeopleKeypoints:
    """Split [N, 54] targets into centres, encoded offsets and visibilities (centre visibility dropped)."""
    offsets = torch.stack((target_kpts[:, TARGET_OFFSET_X], target_kpts[:, TARGET_OFFSET_Y]), dim=-1)
    return PeopleKeypoints(target_kpts[:, TARGET_CENTRE], offsets, target_kpts[:, TARGET_VISIBILITY])


def target_masks(target_kpts: Tensor) -> TargetMasks:
    """Supervision masks of [N, 54] targets; a target with centre visibility 0 supervises no position."""
    centre_visibility = target_kpts[:, TARGET_CENTRE_VISIBILITY]
    has_centre = centre_visibility != 0
    keypoints = (target_kpts[:, TARGET_VISIBILITY] == 1) & has_centre.unsqueeze(-1)
    return TargetMasks(centre_visibility == 1, keypoints, has_centre)


def target_keypoints(target: Mapping[str, Tensor]) -> Tensor:
    """The [n, 54] keypoint rows of one image; tolerates a 1-D empty tensor for images without people."""
    return target["keypoints"].reshape(-1, TARGET_DIM)


def people_per_image(targets: Targets) -> list[int]:
    """Number of target people (empty ones included) in each image."""
    return [len(target_keypoints(target)) for target in targets]


def to_device_async(tensor: Tensor, device: torch.device) -> Tensor:
    """Host tensor to ``device`` without the host waiting for the GPU: the copy is queued from page-locked memory."""
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def _masked_l1_cost(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Sum over supervised keypoints of |dx| + |dy|: [P, 17, 2] x [n, 17, 2] with mask [n, 17] -> [P, n]."""
    per_keypoint = torch.cdist(pred.transpose(0, 1), target.transpose(0, 1), p=1)  # [17, P, n]
    return (per_keypoint * mask.transpose(0, 1).unsqueeze(1)).sum(0)


def _euclidean_cost(pred: Tensor, target: Tensor) -> Tensor:
    """Exact pairwise L2 distance [P, D] x [n, D] -> [P, n] (the matmul shortcut loses precision)."""
    return torch.cdist(pred, target, p=2, compute_mode="donot_use_mm_for_euclid_dist")


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to target people minimising the weighted cost of the authors' terms."""

    def __init__(
        self,
        cost_class: float = 1,
        cost_kpts: float = 5,
        cost_ctrs: float = 1,
        cost_deltas: float = 1,
        cost_kpts_class: float = 2,
    ) -> None:
        super().__init__()
        self.cost_class = cost_class
        self.cost_kpts = cost_kpts
        self.cost_ctrs = cost_ctrs
        self.cost_deltas = cost_deltas
        self.cost_kpts_class = cost_kpts_class

    @torch.no_grad()
    def cost_matrix(self, outputs: ModelOutputs, targets: Targets) -> Tensor:
        """Weighted cost [B, Q, n] of every query against every target of the batch (targets concatenated)."""
        batch_size, num_queries = outputs["pred_logits"].shape[:2]
        probs = outputs["pred_logits"].flatten(0, 1).float().softmax(-1)
        preds = split_predicted_keypoints(outputs["pred_kpts"].flatten(0, 1).float())
        labels = torch.cat([target["labels"].reshape(-1) for target in targets]).to(probs.device)
        all_target_kpts = torch.cat([target_keypoints(target) for target in targets]).to(probs.device).float()
        truths = split_target_keypoints(all_target_kpts)
        masks = target_masks(all_target_kpts)

        cost_class = -probs[:, labels]
        cost_deltas = _masked_l1_cost(preds.offsets, truths.offsets, masks.keypoints)
        cost_kpts = _masked_l1_cost(preds.absolute(), truths.absolute(), masks.keypoints)
        cost_ctrs = _euclidean_cost(preds.centres, truths.centres) * masks.centre
        supervised_visibilities = truths.visibilities * masks.has_centre.unsqueeze(-1)
        cost_kpts_class = _euclidean_cost(preds.visibilities, supervised_visibilities)

        cost = (
            self.cost_kpts * cost_kpts
            + self.cost_ctrs * cost_ctrs
            + self.cost_deltas * cost_deltas
            + self.cost_class * cost_class
            + self.cost_kpts_class * cost_kpts_class
        )
        return cost.view(batch_size, num_queries, -1)

    @torch.no_grad()
    def forward(self, outputs: ModelOutputs, targets: Targets) -> MatchIndices:
        """Per image, (query indices ascending, matched target indices) as CPU int64, min(Q, n_img) pairs."""
        return self.match_layers([outputs], targets)[0]

    @torch.no_grad()
    def match_layers(self, layers: Sequence[ModelOutputs], targets: Targets) -> list[MatchIndices]:
        """``forward`` for each decoder layer, with one device-to-host copy of the costs for all of them.

        On a GPU that copy makes the host wait once per step instead of once per layer. The costs are computed
        layer by layer: on a CPU all layers' cost tensors at once fall out of cache (0.7x at batch 8).
        """
        costs = torch.stack([self.cost_matrix(layer, targets) for layer in layers]).cpu()
        counts = people_per_image(targets)
        matches = []
        for layer_cost in costs:
            indices: MatchIndices = []
            for image, image_cost in enumerate(layer_cost.split(counts, dim=-1)):
                query_idx, target_idx = linear_sum_assignment(image_cost[image].numpy())
                indices.append((torch.from_numpy(query_idx).long(), torch.from_numpy(target_idx).long()))
            matches.append(indices)
        return matches
