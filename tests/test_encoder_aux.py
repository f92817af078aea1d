"""The training-only dense loss on the encoder tokens: which tokens it supervises, in which frame, and that it
learns; POET's checkpoint and outputs stay the authors'."""

from __future__ import annotations

import numpy as np
import torch

from poet.model import PoetConfig, build_model
from poet.train.encoder_aux import EncoderKeypointHead, EncoderKeypointLoss
from poet.train.loop import PoetWithEncoderHead
from poet.train.targets import encode_targets

GRID = (4, 4)  # feature map of a 128x128 canvas at stride 32


def _person(box: tuple[float, float, float, float]) -> np.ndarray:
    """17 labelled keypoints spread over the pixel box (x0, y0, x1, y1), corners included."""
    x0, y0, x1, y1 = box
    t = np.linspace(0, 1, 17)
    people = np.zeros((1, 17, 3), dtype=np.float32)
    people[0, :, 0] = x0 + (x1 - x0) * t
    people[0, :, 1] = y0 + (y1 - y0) * t[::-1]
    people[0, :, 2] = 2
    return people


def _target(people: np.ndarray, image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    labels, keypoints = encode_targets(people, image_size)
    return {
        "labels": torch.from_numpy(labels),
        "keypoints": torch.from_numpy(keypoints),
        "size": torch.tensor(image_size),
    }


def _perfect_predictions(
    target: dict[str, torch.Tensor], canvas: tuple[int, int], covered: set[int] | dict[int, int]
) -> torch.Tensor:
    """Raw head outputs predicting target person ``covered[token]`` (or person 0) exactly, nobody elsewhere."""
    height, width = target["size"].tolist()
    owners = covered if isinstance(covered, dict) else dict.fromkeys(covered, 0)
    raw = torch.zeros(1, GRID[0] * GRID[1], 37)
    raw[0, :, 0] = -30.0
    for token, person in owners.items():
        row = target["keypoints"][person]
        offsets = torch.stack((row[3::3], row[4::3]), dim=-1).clamp(1e-6, 1 - 1e-6)
        cell_x = (token % GRID[1] + 0.5) / GRID[1] * canvas[1] / width
        cell_y = (token // GRID[1] + 0.5) / GRID[0] * canvas[0] / height
        raw[0, token, 0] = 30.0
        raw[0, token, 1] = (row[0] - cell_x) * width / (canvas[1] / GRID[1])
        raw[0, token, 2] = (row[1] - cell_y) * height / (canvas[0] / GRID[0])
        raw[0, token, 3:] = torch.logit(offsets).flatten()
    return raw


def test_tokens_inside_the_persons_keypoint_box_are_supervised_in_the_unpadded_frame():
    # A 128x96 (h x w) image letterboxed on a 128x128 canvas: the last token column is padding.
    canvas, image_size = (128, 128), (128, 96)
    target = _target(_person((20, 10, 90, 120)), image_size)
    # Cell centres are at 16, 48, 80, 112 px: x in [20, 90] -> columns 1, 2; y in [10, 120] -> all rows.
    covered = {row * 4 + col for row in range(4) for col in (1, 2)}
    loss = EncoderKeypointLoss()
    exact = loss(_perfect_predictions(target, canvas, covered), GRID, canvas, [target])
    assert all(value < 1e-4 for value in exact.values()), exact
    # One covered token more, or one fewer, is wrong objectness; a shifted centre is a centre error.
    extra = _perfect_predictions(target, canvas, covered | {0})
    assert loss(extra, GRID, canvas, [target])["loss_enc_obj"] > 0.5
    missing = _perfect_predictions(target, canvas, covered - {5})
    assert loss(missing, GRID, canvas, [target])["loss_enc_obj"] > 0.5
    shifted = _perfect_predictions(target, canvas, covered)
    shifted[0, 5, 1] += 1.0
    terms = loss(shifted, GRID, canvas, [target])
    assert terms["loss_enc_ctrs"] > 1e-3 and terms["loss_enc_kpts"] > 1e-3
    # Padding tokens (column 3, centres at 112 px > 96 px) take no objectness loss whatever they predict.
    padded = _perfect_predictions(target, canvas, covered)
    padded[0, 3::4, 0] = 30.0
    assert loss(padded, GRID, canvas, [target])["loss_enc_obj"] < 1e-4


def test_a_token_covering_two_people_belongs_to_the_nearer_centre():
    canvas = image_size = (128, 128)
    target = _target(np.concatenate([_person((5, 5, 70, 70)), _person((40, 40, 125, 125))]), image_size)
    # Boxes cover tokens {0, 1, 4, 5} and {5, 6, 7, 9, 10, 11, 13, 14, 15}; token 5 (centre 48, 48) lies in
    # both and the first person's centre (37.5, 37.5) is nearer than the second's (82.5, 82.5).
    owners = {token: 0 for token in (0, 1, 4, 5)} | {token: 1 for token in (6, 7, 9, 10, 11, 13, 14, 15)}
    loss = EncoderKeypointLoss()
    exact = loss(_perfect_predictions(target, canvas, owners), GRID, canvas, [target])
    assert all(value < 1e-4 for value in exact.values()), exact
    wrong_owner = loss(_perfect_predictions(target, canvas, owners | {5: 1}), GRID, canvas, [target])
    assert wrong_owner["loss_enc_kpts"] > 1e-2 and wrong_owner["loss_enc_obj"] < 1e-4


def test_a_batch_is_its_images_losses_combined():
    """Images of other sizes, and one without people, in one batch: objectness is the mean of the images',
    the keypoint terms the mean over every covering token of the batch (8 in the first image, 12 in the
    second, none in the third)."""
    canvas = (128, 128)
    narrow = _target(_person((20, 10, 90, 120)), (128, 96))
    two = _target(np.concatenate([_person((5, 5, 70, 70)), _person((40, 40, 125, 125))]), canvas)
    nobody = _target(np.zeros((0, 17, 3), dtype=np.float32), canvas)
    covering = torch.tensor([8.0, 12.0, 0.0])
    torch.manual_seed(0)
    raw = torch.randn(3, GRID[0] * GRID[1], 37)
    loss = EncoderKeypointLoss()
    batch = loss(raw, GRID, canvas, [narrow, two, nobody])
    alone = [loss(raw[i : i + 1], GRID, canvas, [target]) for i, target in enumerate((narrow, two, nobody))]
    expected_obj = torch.stack([terms["loss_enc_obj"] for terms in alone]).mean()
    torch.testing.assert_close(batch["loss_enc_obj"], expected_obj)
    for name in ("loss_enc_kpts", "loss_enc_ctrs", "loss_enc_deltas"):
        per_image = torch.stack([terms[name] for terms in alone])
        assert per_image[2] == 0 and per_image[:2].min() > 0
        torch.testing.assert_close(batch[name], (per_image * covering).sum() / covering.sum())


def test_the_head_learns_and_poet_stays_the_authors_model(coco_batch):
    torch.manual_seed(0)
    batch = coco_batch
    config = PoetConfig(backbone="resnet18", backbone_width=16, hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1)
    poet = build_model(config)
    plain_keys = set(poet.state_dict())
    trained = PoetWithEncoderHead(poet, EncoderKeypointHead(config.hidden_dim)).train()
    loss = EncoderKeypointLoss()
    optimizer = torch.optim.AdamW(trained.parameters(), lr=3e-3)
    canvas = (batch.images.shape[-2], batch.images.shape[-1])
    totals = []
    for _ in range(40):
        outputs = trained(batch.images, batch.mask)
        total = loss.weighted_total(
            loss(outputs["encoder_predictions"], outputs["encoder_size"], canvas, batch.targets)
        )
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
    assert np.mean(totals[-5:]) < 0.6 * np.mean(totals[:5]), totals
    assert set(poet.state_dict()) == plain_keys
    poet.eval()
    assert not {"encoder_memory", "encoder_predictions"} & set(poet(batch.images, batch.mask))
