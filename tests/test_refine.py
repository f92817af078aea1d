"""Optional keypoint refinement: a fresh refiner changes nothing, and it looks where each keypoint was
predicted, in the canvas frame, whatever the letterbox padding."""

from __future__ import annotations

import torch
from torch import nn

from poet.keypoints import join_predicted_keypoints, split_predicted_keypoints
from poet.model import PoetConfig, build_model
from poet.model.refine import KeypointRefiner
from poet.skeleton import NUM_KEYPOINTS

CONFIG = PoetConfig(
    backbone="resnet18",
    backbone_width=16,
    frozen_batchnorm=False,
    hidden_dim=32,
    nheads=2,
    enc_layers=1,
    dec_layers=2,
    dim_feedforward=64,
    num_queries=4,
    dropout=0.0,
    keypoint_refinement=True,
)


def test_a_fresh_refiner_is_the_identity_and_refines_only_the_final_layer(coco_batch):
    torch.manual_seed(0)
    model = build_model(CONFIG).eval()
    with torch.no_grad():
        refined = model(coco_batch.images, coco_batch.mask)
        refiners, model.refiners = model.refiners, nn.ModuleDict()
        plain = model(coco_batch.images, coco_batch.mask)
    torch.testing.assert_close(refined["pred_kpts"], plain["pred_kpts"], rtol=0, atol=0)
    assert list(refiners) == ["layer2", "layer1"]
    for refiner in refiners.values():
        nn.init.normal_(refiner.shift.weight, std=0.1)
    model.refiners = refiners
    with torch.no_grad():
        moved = model(coco_batch.images, coco_batch.mask)
    assert not torch.allclose(moved["pred_kpts"], plain["pred_kpts"], atol=1e-4)
    torch.testing.assert_close(moved["pred_kpts"][..., :2], plain["pred_kpts"][..., :2])  # centres kept
    torch.testing.assert_close(moved["aux_outputs"][0]["pred_kpts"], plain["aux_outputs"][0]["pred_kpts"])


def test_each_keypoint_reads_the_fine_map_where_it_lies_on_the_canvas():
    """A fine map holding each cell's own canvas position, and a refiner wired to pass the feature sampled at
    the middle of its patch through as its shift: the shift must be the keypoint's position on the canvas."""
    height, width = 16, 16
    ys, xs = torch.meshgrid((torch.arange(height) + 0.5) / height, (torch.arange(width) + 0.5) / width, indexing="ij")
    fine = torch.stack((xs, ys))[None]  # [1, 2, h, w]: canvas fractions
    refiner = KeypointRefiner(feature_channels=2, query_dim=8, width=2, patch=3)
    with torch.no_grad():
        for layer in (refiner.hidden, refiner.shift):
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
        # Of the 3x3 samples (channels last), pass the middle one's two channels: the keypoint's own place.
        refiner.feature_proj.weight.zero_()
        refiner.feature_proj.weight[:, 8:10] = torch.eye(2)
        refiner.feature_proj.bias.zero_()
        refiner.query_proj.weight.zero_()
        refiner.query_proj.bias.zero_()
        refiner.keypoint_embed.weight.zero_()
    generator = torch.Generator().manual_seed(0)
    keypoints = torch.rand(1, 1, 2 + 3 * NUM_KEYPOINTS, generator=generator) * 0.5 + 0.25
    # The image fills 3/4 of the canvas width and all its height (padding on the right).
    extent = torch.tensor([[0.75, 1.0]])
    refined = refiner(keypoints, torch.zeros(1, 1, 8), fine, extent)
    centres = keypoints[0, 0, :2]
    offsets = keypoints[0, 0, 2:].reshape(NUM_KEYPOINTS, 3)[:, :2]
    absolute = centres + 2 * (offsets - 0.5)
    shift = 2 * (refined[0, 0, 2:].reshape(NUM_KEYPOINTS, 3)[:, :2] - offsets)
    inside = ((absolute * extent[0] > 1 / 32) & (absolute * extent[0] < 1 - 1 / 32)).all(-1)
    assert inside.sum() > 5
    torch.testing.assert_close(shift[inside], (absolute * extent[0])[inside], rtol=0, atol=1e-5)


def test_predictions_split_and_join_back_unchanged():
    """The refiner writes its shifted offsets back through the same layout the loss reads them with."""
    rows = torch.rand(5, 2 + 3 * NUM_KEYPOINTS, generator=torch.Generator().manual_seed(1))
    assert torch.equal(join_predicted_keypoints(split_predicted_keypoints(rows)), rows)
