"""POET training loss, with the authors' terms and weights: Hungarian matching, then per-layer class and keypoint terms.

``SetCriterion.forward`` returns the unweighted terms under the official names; ``weighted_total`` applies
``weight_dict``. With the default arguments every coefficient equals the official default, and the aux
copies ``_0``..``_4`` follow from the 6 decoder layers.

All keypoint sums are over the matched pairs and divided by ``num_people``: the number of targets in the
batch, empty people (label 0, centre visibility 0) included, averaged over processes when torch.distributed
is initialised and clamped to at least 1.

Decisions on the authors' quirks:
  * #8 REPRODUCED: squared centre error (the matcher uses the Euclidean distance), L1 sums normalised by a
    people count that includes empty people, squared error on the sigmoided visibilities instead of BCE.
  * The official loss picks a masking branch from the matched targets; as in the matcher (see
    ``poet.train.matcher``), both branches agree per pair, so each pair is masked on its own: a target with centre
    visibility 0 contributes no position terms, and its visibility term is zero on both sides.
  * #17 FIXED: nothing is pinned to CUDA; the people count is reduced on the device of the outputs.
  * ``class_error`` is 100 when the batch has no matched query, as in DETR's accuracy helper.

On a GPU a step waits for the device once here, for the matcher's costs of all layers together: the indices
and people counts go the other way as queued copies (``to_device_async``), as the host already knows them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import accumulate
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from poet.keypoints import split_predicted_keypoints
from poet.processing import NO_OBJECT_CLASS, NUM_CLASSES
from poet.train.matcher import (
    HungarianMatcher,
    MatchIndices,
    ModelOutputs,
    Targets,
    people_per_image,
    split_target_keypoints,
    target_keypoints,
    target_masks,
    to_device_async,
)


class _MatchedPairs(NamedTuple):
    """Matched (image, query) positions with their targets' labels and keypoint rows, over the whole batch."""

    image_idx: Tensor
    query_idx: Tensor
    labels: Tensor
    keypoints: Tensor

    @classmethod
    def gather_layers(
        cls, matches: Sequence[MatchIndices], targets: Targets, device: torch.device
    ) -> list[_MatchedPairs]:
        """Each layer's per-image matches flattened; the indices of all layers go to ``device`` in one copy.

        Targets are then picked on the device by their row in the batch: no index tensor per image or per
        layer crosses to the GPU, and the copy does not make the host wait.
        """
        first_row = torch.tensor([0, *accumulate(people_per_image(targets))])
        per_layer = [
            torch.cat(
                [
                    torch.stack((torch.full_like(queries, image), queries, first_row[image] + people))
                    for image, (queries, people) in enumerate(indices)
                ],
                dim=1,
            )
            for indices in matches
        ]
        on_device = to_device_async(torch.cat(per_layer, dim=1), device)
        labels = torch.cat([target["labels"].reshape(-1) for target in targets]).to(device)
        keypoints = torch.cat([target_keypoints(target) for target in targets]).to(device)
        return [
            cls(image_idx, query_idx, labels[rows], keypoints[rows])
            for image_idx, query_idx, rows in on_device.split([part.shape[1] for part in per_layer], dim=1)
        ]


class SetCriterion(nn.Module):
    """Official POET set loss; returns unweighted terms, ``weighted_total`` gives the training loss."""

    empty_weight: Tensor

    def __init__(
        self,
        matcher: HungarianMatcher | None = None,
        *,
        eos_coef: float = 0.1,
        kpts_loss_coef: float = 5,
        ctrs_loss_coef: float = 1,
        deltas_loss_coef: float = 1,
        kpts_class_loss_coef: float = 2,
        num_decoder_layers: int = 6,
        aux_loss: bool = True,
    ) -> None:
        super().__init__()
        self.matcher = matcher if matcher is not None else HungarianMatcher()
        self.eos_coef = eos_coef
        final_weights = {
            "loss_ce": 1,
            "loss_kpts": kpts_loss_coef,
            "loss_ctrs": ctrs_loss_coef,
            "loss_deltas": deltas_loss_coef,
            "loss_kpts_class": kpts_class_loss_coef,
        }
        self.weight_dict: dict[str, float] = dict(final_weights)
        if aux_loss:
            for layer in range(num_decoder_layers - 1):
                self.weight_dict.update({f"{name}_{layer}": weight for name, weight in final_weights.items()})
        empty_weight = torch.ones(NUM_CLASSES + 1)
        empty_weight[NO_OBJECT_CLASS] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def forward(self, outputs: ModelOutputs, targets: Targets) -> dict[str, Tensor]:
        """Unweighted terms of the final layer and, suffixed ``_i``, of each aux layer (matcher re-run)."""
        layers = [outputs, *outputs.get("aux_outputs", ())]
        device = outputs["pred_logits"].device
        counts = people_per_image(targets)
        num_people = self._num_people(counts, device)
        target_people = to_device_async(torch.tensor(counts, dtype=torch.float32), device)
        matched = _MatchedPairs.gather_layers(self.matcher.match_layers(layers, targets), targets, device)
        losses: dict[str, Tensor] = {}
        for layer, (layer_outputs, layer_matched) in enumerate(zip(layers, matched, strict=True)):
            suffix = f"_{layer - 1}" if layer else ""
            losses.update(self._layer_losses(layer_outputs, layer_matched, num_people, target_people, suffix))
        return losses

    def weighted_total(self, losses: Mapping[str, Tensor]) -> Tensor:
        """Training loss: sum of loss * weight over the keys of ``weight_dict`` (logging terms excluded)."""
        weighted = [losses[name] * self.weight_dict[name] for name in losses if name in self.weight_dict]
        return torch.stack(weighted).sum()

    @staticmethod
    def _num_people(counts: Sequence[int], device: torch.device) -> Tensor:
        """Targets per process, empty people included, averaged over processes and clamped to >= 1."""
        count = to_device_async(torch.tensor(float(sum(counts))), device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(count)
            count = count / dist.get_world_size()
        return count.clamp(min=1)

    def _layer_losses(
        self,
        layer_outputs: ModelOutputs,
        matched: _MatchedPairs,
        num_people: Tensor,
        target_people: Tensor,
        suffix: str,
    ) -> dict[str, Tensor]:
        """All terms of one decoder layer; ``class_error`` only for the final layer (empty suffix)."""
        logits = layer_outputs["pred_logits"]

        positions = (matched.image_idx, matched.query_idx)
        target_classes = torch.full_like(logits[..., 0], NO_OBJECT_CLASS, dtype=torch.int64)
        target_classes[positions] = matched.labels
        # In float32 like autocast would, so the eos weight 0.1 is not rounded to a half-precision value.
        class_logits = logits.transpose(1, 2).float()
        class_weights = self.empty_weight.to(logits.device)
        losses = {f"loss_ce{suffix}": F.cross_entropy(class_logits, target_classes, class_weights)}
        if not suffix:
            losses["class_error"] = self._class_error(logits[positions], matched.labels)

        preds = split_predicted_keypoints(layer_outputs["pred_kpts"][positions])
        truths = split_target_keypoints(matched.keypoints)
        masks = target_masks(matched.keypoints)
        deltas_l1 = (preds.offsets - truths.offsets).abs().sum(-1)
        kpts_l1 = (preds.absolute() - truths.absolute()).abs().sum(-1)
        centre_sq = (preds.centres - truths.centres).square().sum(-1)
        visibility_sq = (preds.visibilities - truths.visibilities).square().sum(-1)
        losses[f"loss_kpts{suffix}"] = (kpts_l1 * masks.keypoints).sum() / num_people
        losses[f"loss_ctrs{suffix}"] = (centre_sq * masks.centre).sum() / num_people
        losses[f"loss_deltas{suffix}"] = (deltas_l1 * masks.keypoints).sum() / num_people
        losses[f"loss_kpts_class{suffix}"] = (visibility_sq * masks.has_centre).sum() / num_people

        losses[f"cardinality_error{suffix}"] = self._cardinality_error(logits, target_people)
        return losses

    @staticmethod
    @torch.no_grad()
    def _class_error(matched_logits: Tensor, matched_labels: Tensor) -> Tensor:
        """100 minus the top-1 accuracy (%) of the matched queries; logging only."""
        if matched_labels.numel() == 0:
            return torch.full((), 100.0, device=matched_logits.device)
        accuracy = (matched_logits.argmax(-1) == matched_labels).float().mean() * 100
        return 100 - accuracy

    @staticmethod
    @torch.no_grad()
    def _cardinality_error(logits: Tensor, target_people: Tensor) -> Tensor:
        """Mean over images of |#queries not predicting no-object - #targets|; logging only."""
        predicted_people = (logits.argmax(-1) != NO_OBJECT_CLASS).sum(1).float()
        return F.l1_loss(predicted_people, target_people)
