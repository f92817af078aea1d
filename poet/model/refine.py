"""Optional keypoint refinement (not in the authors' POET): look again at each predicted keypoint in finer
feature maps and correct it.

POET regresses every keypoint from one query state that read a stride-32 feature map, which bounds how
precisely a small model places wrists, ankles and facial keypoints. Here each keypoint of the final decoder
layer samples a small patch of the backbone's stride-8 map (layer2) around where it was predicted, and a small
MLP, told which keypoint it refines and what its query saw, shifts it; then the same on the stride-4 map
(layer1). The output keeps POET's 53-value layout, so matching, loss, export and decoding are unchanged. The
shift starts at zero, so a fresh refiner is the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poet.keypoints import PeopleKeypoints, join_predicted_keypoints, split_predicted_keypoints
from poet.skeleton import NUM_KEYPOINTS

# The backbone stages read, in the order the refiners run: stride 8, then stride 4.
REFINEMENT_STAGES = ("layer2", "layer1")


class KeypointRefiner(nn.Module):
    """Per keypoint: a patch of the fine map around it + its identity + its query's state -> a shift (x, y).

    ``patch`` x ``patch`` points one map cell apart are sampled, centred on the keypoint, so the MLP sees which
    way the body part lies rather than one blurred value.
    """

    def __init__(self, feature_channels: int, query_dim: int, width: int = 128, patch: int = 3) -> None:
        super().__init__()
        self.patch = patch
        self.feature_proj = nn.Linear(feature_channels * patch * patch, width)
        self.query_proj = nn.Linear(query_dim, width)
        self.keypoint_embed = nn.Embedding(NUM_KEYPOINTS, width)
        self.hidden = nn.Linear(width, width)
        self.shift = nn.Linear(width, 2)
        nn.init.zeros_(self.shift.weight)
        nn.init.zeros_(self.shift.bias)

    def forward(self, pred_kpts: Tensor, states: Tensor, fine: Tensor, image_extent: Tensor) -> Tensor:
        """pred_kpts [B,Q,53] (sigmoided), states [B,Q,C], fine [B,Cf,h,w] over the padded canvas,
        image_extent [B,2] the unpadded image's (width, height) as fractions of the canvas -> refined [B,Q,53]."""
        batch, queries = pred_kpts.shape[:2]
        people = split_predicted_keypoints(pred_kpts.flatten(0, 1))
        keypoints = people.offsets.shape[1]
        absolute = people.absolute().reshape(batch, queries, keypoints, 2)  # image fractions
        # Where to look is not learned through the sampling (as Deformable DETR detaches its reference points).
        grid = absolute.detach() * image_extent[:, None, None, :] * 2 - 1  # grid_sample's [-1, 1] canvas frame
        steps = torch.arange(self.patch, device=fine.device, dtype=grid.dtype) - (self.patch - 1) / 2
        step_y, step_x = torch.meshgrid(steps * 2 / fine.shape[-2], steps * 2 / fine.shape[-1], indexing="ij")
        around = torch.stack((step_x.flatten(), step_y.flatten()), dim=-1)  # [P, 2], one map cell apart
        points = grid.reshape(batch, queries * keypoints, 1, 2) + around
        sampled = F.grid_sample(fine, points, align_corners=False)  # [B, Cf, Q*17, P]
        sampled = sampled.permute(0, 2, 3, 1).reshape(batch, queries, keypoints, -1)
        hidden = self.feature_proj(sampled) + self.keypoint_embed.weight + self.query_proj(states).unsqueeze(-2)
        shift = self.shift(torch.relu(self.hidden(torch.relu(hidden)))).flatten(0, 1)
        # The decoded position c + 2 (o - 0.5) moves by the shift when the offset moves by half of it.
        moved = PeopleKeypoints(people.centres, people.offsets + shift / 2, people.visibilities)
        return join_predicted_keypoints(moved).reshape(batch, queries, -1)
