"""Matcher and criterion against the authors' cost and loss terms, checked by hand values and independent loops."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from poet.keypoints import PRED_DIM, split_predicted_keypoints
from poet.train.criterion import SetCriterion
from poet.train.matcher import (
    TARGET_DIM,
    HungarianMatcher,
    MatchIndices,
    ModelOutputs,
    Targets,
    split_target_keypoints,
)

LOSS_NAMES = ("loss_ce", "loss_kpts", "loss_ctrs", "loss_deltas", "loss_kpts_class")
POSITION_LOSSES = ("loss_kpts", "loss_ctrs", "loss_deltas", "loss_kpts_class")
DEFAULT_COSTS = {"class": 1.0, "kpts": 5.0, "ctrs": 1.0, "deltas": 1.0, "kpts_class": 2.0}


def person(centre: tuple[float, float], generator: torch.Generator, invisible: Sequence[int] = ()) -> Tensor:
    """A normalised 54-dim target; invisible keypoints sit at pixel (0, 0) as in the official encoding."""
    row = torch.empty(TARGET_DIM)
    row[0:3] = torch.tensor([centre[0], centre[1], 1.0])
    for k in range(17):
        if k in invisible:
            row[3 + 3 * k : 6 + 3 * k] = torch.tensor([0.5 - centre[0] / 2, 0.5 - centre[1] / 2, 0.0])
        else:
            row[3 + 3 * k : 5 + 3 * k] = 0.35 + 0.3 * torch.rand(2, generator=generator)
            row[5 + 3 * k] = 1.0
    return row


def empty_person() -> Tensor:
    """A person without visible keypoints: zero centre, centre visibility 0, zero pixel offsets."""
    row = torch.zeros(TARGET_DIM)
    row[3::3] = 0.5
    row[4::3] = 0.5
    return row


def as_prediction(target_row: Tensor) -> Tensor:
    """The 53-dim prediction that reproduces a 54-dim target exactly (drops the centre visibility)."""
    return torch.cat((target_row[:2], target_row[3:]))


def random_batch(
    generator: torch.Generator, batch: int, queries: int, people: int, with_odd_people: bool = True
) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
    """Random outputs and targets with invisible keypoints, empty people and a quirk-#4 person."""
    outputs = {
        "pred_logits": torch.randn(batch, queries, 3, generator=generator),
        "pred_kpts": torch.rand(batch, queries, PRED_DIM, generator=generator),
    }
    targets = []
    for image in range(batch):
        rows = torch.rand(people, TARGET_DIM, generator=generator)
        rows[:, 2::3] = (torch.rand(people, 18, generator=generator) < 0.7).float()
        rows[:, 2] = 1.0
        labels = torch.ones(people, dtype=torch.int64)
        if with_odd_people and image % 2 == 0:
            rows[0] = empty_person()
            labels[0] = 0
            rows[1, 0] = 0.0  # quirk #4: visible keypoints but centre x exactly 0, so centre visibility 0
            rows[1, 2] = 0.0
        targets.append({"labels": labels, "keypoints": rows})
    return outputs, targets


def reference_cost(outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> np.ndarray:
    """Facts §10 read literally, pair by pair, keeping the batch-global branch but not the row bug."""
    logits = outputs["pred_logits"].double().numpy()
    kpts = outputs["pred_kpts"].double().numpy()
    labels = torch.cat([t["labels"] for t in targets]).numpy()
    gts = torch.cat([t["keypoints"] for t in targets]).double().numpy()
    branch_b = bool((gts[:, 2] == 0).any())
    batch, queries = logits.shape[:2]
    cost = np.zeros((batch, queries, len(gts)))
    pred_x_idx, pred_y_idx = [0, *range(2, 53, 3)], [1, *range(3, 53, 3)]
    tgt_x_idx, tgt_y_idx = [0, *range(3, 54, 3)], [1, *range(4, 54, 3)]
    for b in range(batch):
        for q in range(queries):
            p = kpts[b, q]
            prob = np.exp(logits[b, q]) / np.exp(logits[b, q]).sum()
            px, py = p[pred_x_idx], p[pred_y_idx]
            pax, pay = px[0] + 2 * (px[1:] - 0.5), py[0] + 2 * (py[1:] - 0.5)
            for j, t in enumerate(gts):
                mask = t[2::3] == 1
                tv = t[5::3].copy()
                if branch_b and t[2] == 0:
                    mask[:] = False
                    tv[:] = 0
                tx, ty = t[tgt_x_idx], t[tgt_y_idx]
                tax, tay = tx[0] + 2 * (tx[1:] - 0.5), ty[0] + 2 * (ty[1:] - 0.5)
                deltas = (mask[1:] * (abs(px[1:] - tx[1:]) + abs(py[1:] - ty[1:]))).sum()
                absolute = (mask[1:] * (abs(pax - tax) + abs(pay - tay))).sum()
                centre = mask[0] * math.hypot(px[0] - tx[0], py[0] - ty[0])
                visibility = float(np.linalg.norm(p[4::3] - tv))
                cost[b, q, j] = (
                    DEFAULT_COSTS["kpts"] * absolute
                    + DEFAULT_COSTS["ctrs"] * centre
                    + DEFAULT_COSTS["deltas"] * deltas
                    - DEFAULT_COSTS["class"] * prob[labels[j]]
                    + DEFAULT_COSTS["kpts_class"] * visibility
                )
    return cost


def reference_position_losses(
    outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], indices: MatchIndices
) -> dict[str, float]:
    """Facts §11 keypoint terms with explicit loops over matched pairs and keypoints."""
    sums = dict.fromkeys(POSITION_LOSSES, 0.0)
    num_people = max(sum(len(t["labels"]) for t in targets), 1)
    for image, (queries, people) in enumerate(indices):
        for q, j in zip(queries.tolist(), people.tolist(), strict=True):
            p = outputs["pred_kpts"][image, q].double().tolist()
            t = targets[image]["keypoints"][j].double().tolist()
            has_centre = t[2] != 0
            if t[2] == 1:
                sums["loss_ctrs"] += (p[0] - t[0]) ** 2 + (p[1] - t[1]) ** 2
            for k in range(17):
                dx, dy = p[2 + 3 * k] - t[3 + 3 * k], p[3 + 3 * k] - t[4 + 3 * k]
                if has_centre and t[5 + 3 * k] == 1:
                    sums["loss_deltas"] += abs(dx) + abs(dy)
                    sums["loss_kpts"] += abs(p[0] - t[0] + 2 * dx) + abs(p[1] - t[1] + 2 * dy)
                if has_centre:
                    sums["loss_kpts_class"] += (p[4 + 3 * k] - t[5 + 3 * k]) ** 2
    return {name: value / num_people for name, value in sums.items()}


class FixedMatcher(HungarianMatcher):
    """Returns a preset matching, to evaluate the loss on a chosen (e.g. wrong) assignment."""

    def __init__(self, indices: MatchIndices) -> None:
        super().__init__()
        self.indices = indices

    def match_layers(self, layers: Sequence[ModelOutputs], targets: Targets) -> list[MatchIndices]:
        return [self.indices for _ in layers]


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def hand_example(generator: torch.Generator) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
    """2 images x 3 queries. Image 0: B (5 invisible keypoints) at query 0, A at query 2, junk query 1.
    Image 1: one empty person (label 0) at query 1; queries 0 and 2 are junk."""
    person_a = person((0.4, 0.5), generator)
    person_b = person((0.6, 0.3), generator, invisible=(0, 1, 2, 3, 4))
    pred_a = as_prediction(person_a)
    pred_a[0:2] += torch.tensor([0.03, 0.04])  # centre error
    pred_a[4] = 0.8  # nose visibility error 0.2
    pred_b = as_prediction(person_b)
    pred_b[2 + 3 * 10] += 0.1  # visible keypoint 10: x-offset error
    pred_b[3 + 3 * 2] += 0.3  # invisible keypoint 2: masked y-offset error
    pred_b[4 + 3 * 2] = 0.5  # invisible keypoint 2: visibility error, not masked per keypoint
    junk = torch.full((PRED_DIM,), 0.9)
    pred_empty = torch.full((PRED_DIM,), 0.3)
    logits = torch.tensor(
        [
            [[0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]],
            [[0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        ]
    )
    outputs = {
        "pred_logits": logits.requires_grad_(),
        "pred_kpts": torch.stack(
            [torch.stack([pred_b, junk, pred_a]), torch.stack([junk, pred_empty, junk])]
        ).requires_grad_(),
    }
    targets = [
        {"labels": torch.tensor([1, 1]), "keypoints": torch.stack([person_a, person_b])},
        {"labels": torch.tensor([0]), "keypoints": empty_person()[None]},
    ]
    return outputs, targets


def assert_indices_equal(actual: MatchIndices, expected: Sequence[tuple[list[int], list[int]]]) -> None:
    assert len(actual) == len(expected)
    for (queries, people), (expected_queries, expected_people) in zip(actual, expected, strict=True):
        assert queries.dtype == torch.int64 and people.dtype == torch.int64
        assert queries.tolist() == expected_queries
        assert people.tolist() == expected_people


def test_default_coefficients() -> None:
    matcher = HungarianMatcher()
    assert (matcher.cost_class, matcher.cost_kpts, matcher.cost_ctrs) == (1, 5, 1)
    assert (matcher.cost_deltas, matcher.cost_kpts_class) == (1, 2)

    criterion = SetCriterion()
    base = {"loss_ce": 1, "loss_kpts": 5, "loss_ctrs": 1, "loss_deltas": 1, "loss_kpts_class": 2}
    expected = dict(base)
    for layer in range(5):
        expected.update({f"{name}_{layer}": weight for name, weight in base.items()})
    assert criterion.weight_dict == expected
    assert isinstance(criterion.matcher, HungarianMatcher)
    assert criterion.matcher.cost_kpts == 5
    assert torch.equal(criterion.empty_weight, torch.tensor([1.0, 1.0, 0.1]))
    assert "empty_weight" in dict(criterion.named_buffers())
    assert SetCriterion(aux_loss=False).weight_dict == base


def test_layout_helpers_pair_prediction_and_target_fields() -> None:
    target = torch.arange(TARGET_DIM, dtype=torch.float32)[None]
    prediction = as_prediction(target[0])[None]
    pred_fields, target_fields = split_predicted_keypoints(prediction), split_target_keypoints(target)
    for pred_field, target_field in zip(pred_fields, target_fields, strict=True):
        assert torch.equal(pred_field, target_field)
    assert target_fields.offsets[0, 16].tolist() == [51.0, 52.0]
    assert target_fields.visibilities[0, :2].tolist() == [5.0, 8.0]


def test_matcher_recovers_permutation_and_position_losses_vanish(generator: torch.Generator) -> None:
    """Exact copies of the targets sit at shuffled query slots; the other queries predict no-object."""
    logits = torch.zeros(2, 7, 3)
    logits[..., 2] = 4.0
    kpts = torch.full((2, 7, PRED_DIM), 0.95)
    targets: list[dict[str, Tensor]] = []
    expected: list[tuple[list[int], list[int]]] = []
    for image, slots in enumerate(([5, 0, 3, 6], [2, 4, 1])):
        centres = [(0.2 + 0.15 * i, 0.7 - 0.1 * i) for i in range(len(slots))]
        rows = torch.stack([person(centre, generator, (i, 9)) for i, centre in enumerate(centres)])
        targets.append({"labels": torch.ones(len(slots), dtype=torch.int64), "keypoints": rows})
        for j, q in enumerate(slots):
            kpts[image, q] = as_prediction(rows[j])
            logits[image, q] = torch.tensor([0.0, 4.0, 0.0])
        order = sorted(range(len(slots)), key=slots.__getitem__)
        expected.append((sorted(slots), order))
    outputs = {"pred_logits": logits, "pred_kpts": kpts}

    indices = HungarianMatcher()(outputs, targets)
    assert_indices_equal(indices, expected)
    losses = SetCriterion()(outputs, targets)
    for name in POSITION_LOSSES:
        assert losses[name].item() < 1e-6, name
    assert losses["class_error"].item() == 0.0
    assert losses["cardinality_error"].item() == 0.0

    wrong = [(q, p.roll(1)) for q, p in indices]
    wrong_losses = SetCriterion(FixedMatcher(wrong))(outputs, targets)
    for name in POSITION_LOSSES:
        assert wrong_losses[name].item() > 0.05, name


def test_losses_match_hand_computation(
    hand_example: tuple[dict[str, Tensor], list[dict[str, Tensor]]],
) -> None:
    outputs, targets = hand_example
    assert_indices_equal(HungarianMatcher()(outputs, targets), [([0, 2], [1, 0]), ([1], [0])])
    losses = SetCriterion()(outputs, targets)

    num_people = 3  # the empty person counts
    assert losses["loss_ctrs"].item() == pytest.approx((0.03**2 + 0.04**2) / num_people, rel=1e-4)
    assert losses["loss_deltas"].item() == pytest.approx(0.1 / num_people, rel=1e-4)
    # A: 17 visible keypoints each off by the centre error; B: decoding doubles the offset error.
    assert losses["loss_kpts"].item() == pytest.approx((17 * 0.07 + 2 * 0.1) / num_people, rel=1e-4)
    # A: nose visibility 0.8 vs 1; B: invisible keypoint predicted 0.5; the empty person adds nothing.
    assert losses["loss_kpts_class"].item() == pytest.approx((0.2**2 + 0.5**2) / num_people, rel=1e-4)

    logits = outputs["pred_logits"].detach().reshape(-1, 3).tolist()
    classes = [1, 2, 1, 2, 0, 2]  # unmatched queries target no-object
    weights = [0.1 if c == 2 else 1.0 for c in classes]
    nll = [math.log(sum(math.exp(v) for v in row)) - row[c] for row, c in zip(logits, classes, strict=True)]
    expected_ce = sum(w * n for w, n in zip(weights, nll, strict=True)) / sum(weights)
    assert losses["loss_ce"].item() == pytest.approx(expected_ce, rel=1e-5)
    # Matched queries predict 1 (right), 0 (wrong, label 1), 0 (right, empty person).
    assert losses["class_error"].item() == pytest.approx(100 / 3, rel=1e-5)
    # Image 0 predicts 2 people for 2 targets; image 1 predicts 2 for 1.
    assert losses["cardinality_error"].item() == pytest.approx(0.5)


def test_gradients_reach_only_supervised_outputs(
    hand_example: tuple[dict[str, Tensor], list[dict[str, Tensor]]],
) -> None:
    outputs, targets = hand_example
    criterion = SetCriterion()
    criterion.weighted_total(criterion(outputs, targets)).backward()
    logits_grad, kpts_grad = outputs["pred_logits"].grad, outputs["pred_kpts"].grad
    assert logits_grad is not None and kpts_grad is not None
    assert (logits_grad.abs().sum(-1) > 0).all()  # CE covers every query
    assert kpts_grad[0, 0].abs().sum() > 0 and kpts_grad[0, 2].abs().sum() > 0
    assert torch.equal(kpts_grad[0, 1], torch.zeros(PRED_DIM))  # unmatched
    assert torch.equal(kpts_grad[1], torch.zeros(3, PRED_DIM))  # empty person supervises no keypoint output
    assert kpts_grad[0, 0, 3 + 3 * 2] == 0  # invisible keypoint's offset is masked ...
    assert kpts_grad[0, 0, 4 + 3 * 2] != 0  # ... but its visibility is still trained towards 0
    assert kpts_grad[0, 0, 2 + 3 * 10] != 0


def test_aux_outputs_give_suffixed_keys_and_rerun_the_matcher(generator: torch.Generator) -> None:
    outputs, targets = random_batch(generator, batch=2, queries=6, people=3)
    aux_layers = [random_batch(generator, batch=2, queries=6, people=3)[0] for _ in range(2)]
    criterion = SetCriterion()
    losses = criterion({**outputs, "aux_outputs": aux_layers}, targets)

    final_keys = {*LOSS_NAMES, "class_error", "cardinality_error"}
    aux_keys = {f"{name}_{layer}" for layer in range(2) for name in (*LOSS_NAMES, "cardinality_error")}
    assert set(losses) == final_keys | aux_keys
    final_alone = criterion(outputs, targets)
    for name in final_keys:
        assert torch.equal(losses[name], final_alone[name])
    for layer, aux in enumerate(aux_layers):
        aux_alone = criterion(aux, targets)
        for name in (*LOSS_NAMES, "cardinality_error"):
            assert torch.allclose(losses[f"{name}_{layer}"], aux_alone[name]), (layer, name)
    assert losses["loss_kpts_0"] != losses["loss_kpts_1"]


def test_images_without_targets(generator: torch.Generator) -> None:
    outputs, targets = random_batch(generator, batch=2, queries=4, people=2, with_odd_people=False)
    targets[1] = {"labels": torch.zeros(0, dtype=torch.int64), "keypoints": torch.zeros(0, TARGET_DIM)}
    indices = HungarianMatcher()(outputs, targets)
    assert len(indices[0][0]) == 2
    assert indices[1][0].shape == (0,) and indices[1][1].shape == (0,)
    assert indices[1][0].dtype == torch.int64 and indices[1][1].dtype == torch.int64
    losses = SetCriterion()(outputs, targets)
    expected = reference_position_losses(outputs, targets, indices)
    for name in POSITION_LOSSES:
        assert losses[name].item() == pytest.approx(expected[name], rel=1e-5)

    logits = outputs["pred_logits"].clone().requires_grad_()
    nobody = [{"labels": torch.zeros(0, dtype=torch.int64), "keypoints": torch.zeros(0)} for _ in range(2)]
    criterion = SetCriterion()
    losses = criterion({"pred_logits": logits, "pred_kpts": outputs["pred_kpts"]}, nobody)
    assert all(losses[name].item() == 0.0 for name in POSITION_LOSSES)
    no_object = torch.full((8,), 2)
    expected_ce = torch.nn.functional.cross_entropy(logits.detach().reshape(-1, 3), no_object)
    assert losses["loss_ce"].item() == pytest.approx(expected_ce.item(), rel=1e-6)
    assert losses["class_error"].item() == 100.0
    criterion.weighted_total(losses).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_batched_matcher_agrees_with_brute_force(generator: torch.Generator) -> None:
    outputs, targets = random_batch(generator, batch=4, queries=50, people=20)
    matcher = HungarianMatcher()
    reference = reference_cost(outputs, targets)
    np.testing.assert_allclose(matcher.cost_matrix(outputs, targets).numpy(), reference, rtol=1e-5, atol=1e-5)

    indices = matcher(outputs, targets)
    losses = SetCriterion()(outputs, targets)
    expected_losses = reference_position_losses(outputs, targets, indices)
    for image, (queries, people) in enumerate(indices):
        block = reference[image, :, 20 * image : 20 * (image + 1)]
        optimum_rows, optimum_cols = linear_sum_assignment(block)
        assert queries.tolist() == sorted(queries.tolist()) and len(queries) == 20
        assert block[queries.numpy(), people.numpy()].sum() == pytest.approx(
            block[optimum_rows, optimum_cols].sum(), abs=1e-4
        )
    for name in POSITION_LOSSES:
        assert losses[name].item() == pytest.approx(expected_losses[name], rel=1e-5), name


def test_more_people_than_queries(generator: torch.Generator) -> None:
    outputs, targets = random_batch(generator, batch=1, queries=2, people=5)
    ((queries, people),) = HungarianMatcher()(outputs, targets)
    assert queries.tolist() == [0, 1] and len(set(people.tolist())) == 2


def test_empty_person_does_not_change_matching_of_other_images(generator: torch.Generator) -> None:
    """Quirk #5 fixed / #6 moot: image 0's costs and matching are the same alone, beside an image whose only
    person is empty (official branch B, whose row bug would zero query 4 of image 0), and beside a normal
    image (branch A)."""
    outputs, targets = random_batch(generator, batch=2, queries=6, people=4, with_odd_people=False)
    first_image = {name: value[:1] for name, value in outputs.items()}
    matcher = HungarianMatcher()
    alone_cost = matcher.cost_matrix(first_image, targets[:1])[0]
    alone_indices = matcher(first_image, targets[:1])[0]

    with_empty = [targets[0], {"labels": torch.tensor([0]), "keypoints": empty_person()[None]}]
    for batch_targets in (with_empty, targets):
        batch_cost = matcher.cost_matrix(outputs, batch_targets)
        assert torch.allclose(batch_cost[0, :, :4], alone_cost, rtol=1e-6, atol=1e-6)
        queries, people = matcher(outputs, batch_targets)[0]
        assert torch.equal(queries, alone_indices[0]) and torch.equal(people, alone_indices[1])

    # Only the target side of the empty person is masked: its column is class cost plus the visibility norm.
    empty_column = matcher.cost_matrix(outputs, with_empty)[..., 4]
    probs = outputs["pred_logits"].softmax(-1)
    visibility_norm = outputs["pred_kpts"][..., 4::3].norm(dim=-1)
    assert torch.allclose(empty_column, -probs[..., 0] + 2 * visibility_norm, atol=1e-6)


def test_weighted_total_matches_manual_sum(generator: torch.Generator) -> None:
    outputs, targets = random_batch(generator, batch=2, queries=5, people=2)
    aux_layers = [random_batch(generator, batch=2, queries=5, people=2)[0] for _ in range(5)]
    criterion = SetCriterion()
    losses = criterion({**outputs, "aux_outputs": aux_layers}, targets)
    weights = {"loss_ce": 1, "loss_kpts": 5, "loss_ctrs": 1, "loss_deltas": 1, "loss_kpts_class": 2}
    manual = sum(
        weights[name] * losses[f"{name}{suffix}"].item()
        for name in weights
        for suffix in ("", "_0", "_1", "_2", "_3", "_4")
    )
    assert criterion.weighted_total(losses).item() == pytest.approx(manual, rel=1e-6)
    with_huge_logging = {**losses, "class_error": torch.tensor(1e6), "cardinality_error_0": torch.tensor(1e6)}
    assert criterion.weighted_total(with_huge_logging).item() == pytest.approx(manual, rel=1e-6)


def test_people_count_is_averaged_over_processes(
    hand_example: tuple[dict[str, Tensor], list[dict[str, Tensor]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs, targets = hand_example
    local = SetCriterion()(outputs, targets)

    def add_other_rank(tensor: Tensor) -> None:
        tensor += 6  # another process holds 6 people: (3 + 6) / 2 = 4.5 on average

    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", add_other_rank)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    averaged = SetCriterion()(outputs, targets)
    for name in POSITION_LOSSES:
        assert averaged[name].item() == pytest.approx(local[name].item() * 3 / 4.5, rel=1e-6)
    assert torch.equal(averaged["loss_ce"], local["loss_ce"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_outputs_device(generator: torch.Generator) -> None:
    outputs, targets = random_batch(generator, batch=2, queries=8, people=3)
    criterion = SetCriterion()
    cpu_losses = criterion(outputs, targets)
    cuda = torch.device("cuda")
    cuda_outputs = {name: value.to(cuda) for name, value in outputs.items()}
    cuda_targets = [{name: value.to(cuda) for name, value in target.items()} for target in targets]
    cuda_losses = criterion.to(cuda)(cuda_outputs, cuda_targets)
    for name, value in cpu_losses.items():
        assert cuda_losses[name].device.type == "cuda"
        assert cuda_losses[name].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), name


def test_match_layers_equals_matching_each_layer(generator: torch.Generator) -> None:
    layers = [random_batch(generator, batch=3, queries=7, people=2)[0] for _ in range(4)]
    _, targets = random_batch(generator, batch=3, queries=7, people=2)
    matcher = HungarianMatcher()
    together = matcher.match_layers(layers, targets)
    assert len(together) == len(layers)
    for layer, matches in zip(layers, together, strict=True):
        for (queries, people), (alone_queries, alone_people) in zip(matches, matcher(layer, targets), strict=True):
            assert torch.equal(queries, alone_queries) and torch.equal(people, alone_people)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_six_layers_wait_for_the_gpu_once(generator: torch.Generator) -> None:
    """Only the matcher's one copy of all layers' costs synchronizes; indices and counts are queued copies."""
    cuda = torch.device("cuda")
    outputs, targets = random_batch(generator, batch=4, queries=8, people=3)
    aux = [random_batch(generator, batch=4, queries=8, people=3)[0] for _ in range(5)]
    cuda_outputs = {
        **{name: value.to(cuda) for name, value in outputs.items()},
        "aux_outputs": [{name: value.to(cuda) for name, value in layer.items()} for layer in aux],
    }
    cuda_targets = [{name: value.to(cuda) for name, value in target.items()} for target in targets]
    criterion = SetCriterion().to(cuda)
    criterion(cuda_outputs, cuda_targets)  # warm-up: the first call allocates
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            criterion.weighted_total(criterion(cuda_outputs, cuda_targets))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(warning.message) for warning in caught if "called a synchronizing" in str(warning.message)]
    assert len(syncs) == 1, syncs
