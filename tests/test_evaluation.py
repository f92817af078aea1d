"""OKS evaluation through the real decoding path, and bad annotation files."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from poet.errors import DatasetError
from poet.evaluation import STAT_NAMES, coco_results, evaluate_keypoints, format_table, load_coco_keypoints
from poet.processing import decode_poses, encode_keypoints


def _ground_truth_as_raw_outputs(coco, noise=0.0, seed=0):
    """Per image: the [Q,3] logits and [Q,53] keypoint outputs a perfect model would emit."""
    rng = np.random.default_rng(seed)
    per_image = defaultdict(list)
    for annotation in coco.dataset["annotations"]:
        if annotation["num_keypoints"] > 0 and not annotation["iscrowd"]:
            per_image[annotation["image_id"]].append(annotation)
    outputs = {}
    for image_id, people in per_image.items():
        info = coco.imgs[image_id]
        size = (info["height"], info["width"])
        kpts = np.stack([encode_keypoints(np.asarray(a["keypoints"], float).reshape(17, 3), size) for a in people])
        kpts[:, 2:] += noise * rng.standard_normal(kpts[:, 2:].shape)
        logits = np.tile([0.0, 5.0, 0.0], (len(people), 1))
        outputs[image_id] = (logits, kpts, size)
    return outputs


@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_ground_truth_fed_back_scores_ap_one(coco, split):
    coco = load_coco_keypoints(coco / "annotations" / f"person_keypoints_{split}.json")
    raw = _ground_truth_as_raw_outputs(coco)
    results = coco_results((i, decode_poses(lg, kp, size)) for i, (lg, kp, size) in raw.items())
    stats = evaluate_keypoints(coco, results)
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)
    assert set(stats) == set(STAT_NAMES)


def test_perturbed_predictions_score_lower(coco):
    coco = load_coco_keypoints(coco / "annotations" / "person_keypoints_val2017.json")
    raw = _ground_truth_as_raw_outputs(coco, noise=0.01)
    results = coco_results((i, decode_poses(lg, kp, size)) for i, (lg, kp, size) in raw.items())
    stats = evaluate_keypoints(coco, results)
    assert 0.0 < stats["AP"] < 0.95
    assert "AP50" in format_table(stats)


def test_no_predictions_score_zero(coco):
    coco = load_coco_keypoints(coco / "annotations" / "person_keypoints_val2017.json")
    assert evaluate_keypoints(coco, [])["AP"] == 0.0


def _write(tmp_path, data, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_annotation_file_without_annotations_names_file_and_key(coco, tmp_path):
    data = json.loads((coco / "annotations" / "person_keypoints_val2017.json").read_text())
    del data["annotations"]
    path = _write(tmp_path, data)
    with pytest.raises(DatasetError, match=r"bad\.json has no 'annotations'"):
        load_coco_keypoints(path)


def test_annotation_missing_keypoints_field_is_reported(coco, tmp_path):
    data = json.loads((coco / "annotations" / "person_keypoints_val2017.json").read_text())
    del data["annotations"][3]["keypoints"]
    with pytest.raises(DatasetError, match=r"annotations\[3\] lacks 'keypoints'"):
        load_coco_keypoints(_write(tmp_path, data))


def test_missing_derivable_fields_are_filled(coco, tmp_path):
    data = json.loads((coco / "annotations" / "person_keypoints_val2017.json").read_text())
    for annotation in data["annotations"]:
        del annotation["num_keypoints"], annotation["area"]
    coco = load_coco_keypoints(_write(tmp_path, data))
    raw = _ground_truth_as_raw_outputs(coco)
    results = coco_results((i, decode_poses(lg, kp, size)) for i, (lg, kp, size) in raw.items())
    assert evaluate_keypoints(coco, results)["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize("content", ["not json {", "[1, 2, 3]"])
def test_unreadable_annotation_files(tmp_path, content):
    with pytest.raises(DatasetError, match="bad.json"):
        load_coco_keypoints(_write(tmp_path, content))
    with pytest.raises(DatasetError, match="not found"):
        load_coco_keypoints(tmp_path / "absent.json")


def test_keypoint_precision_oracles_and_model_errors(tmp_path, tiny_checkpoint):
    """The figures behind "AP 0.5 needs keypoints within about 3% of the height": less noise, more AP."""
    from keypoint_precision import model_errors, oracle_scores

    from poet.synthetic import generate_dataset

    annotations = generate_dataset(tmp_path, 24, split="val2017", image_size=(128, 128), max_people=2, progress=False)
    scores = oracle_scores(annotations)
    aps = [stats["AP"] for name, stats in scores.items() if name.startswith("truth")]
    assert aps == sorted(aps, reverse=True) and aps[0] > 0.5 and aps[-1] < aps[0] / 2
    assert scores["mean pose at true centre and height"]["AP"] < aps[0] / 2
    empty = generate_dataset(tmp_path / "empty", 0, split="val2017", image_size=(64, 64), progress=False)
    with pytest.raises(DatasetError, match="no person with 10 or more"):
        oracle_scores(empty)
    errors = model_errors(tiny_checkpoint, annotations, tmp_path / "val2017", limit=5)
    assert set(errors) >= {"nose", "right_ankle", "centre"} and all(value >= 0 for value in errors.values())
