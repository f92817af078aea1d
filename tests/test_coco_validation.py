"""COCO person-keypoints files checked at the boundary: one line naming the file, the record and the field.

Each case damages one record of the real validation file. Evaluation refuses every damaged file; training skips
(and counts) an annotation whose content is unusable, but refuses a file whose structure is wrong.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from poet.errors import DatasetError
from poet.evaluation import check_coco_keypoints, listed_images, load_coco_keypoints, read_coco_keypoints

VAL = "person_keypoints_val2017.json"


@pytest.fixture
def val_data(coco: Path) -> dict[str, Any]:
    return json.loads((coco / "annotations" / VAL).read_text())


def _write(tmp_path: Path, data: Any, name: str = "ann.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _error(path: Path, **options: Any) -> str:
    with pytest.raises(DatasetError) as caught:
        read_coco_keypoints(path, **options)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(str(path)), message
    return message


def _ids(data: dict[str, Any]) -> dict[str, Any]:
    """Placeholders of the expected messages: ``a3`` is annotations[3]'s id, ``i2`` images[2]'s."""
    ids = {f"a{i}": a.get("id") for i, a in enumerate(data["annotations"])}
    ids.update({f"i{i}": image.get("id") for i, image in enumerate(data["images"])})
    return ids


def _set(container: str, index: int, field: str, value: Any):
    def damage(data: dict[str, Any]) -> None:
        data[container][index][field] = value

    return damage


def _delete(container: str, index: int, field: str):
    def damage(data: dict[str, Any]) -> None:
        del data[container][index][field]

    return damage


def _keypoint(index: int, position: int, value: Any):
    def damage(data: dict[str, Any]) -> None:
        data["annotations"][index]["keypoints"][position] = value

    return damage


def _bbox(index: int, position: int, value: Any):
    def damage(data: dict[str, Any]) -> None:
        data["annotations"][index]["bbox"][position] = value

    return damage


def _same_id(container: str, index: int, other: int):
    def damage(data: dict[str, Any]) -> None:
        data[container][index]["id"] = data[container][other]["id"]

    return damage


def _unknown_image(data: dict[str, Any]) -> None:
    data["annotations"][4]["image_id"] = 999_999_999


def _replace(container: str, index: int, value: Any):
    def damage(data: dict[str, Any]) -> None:
        data[container][index] = value

    return damage


def _person_id(value: int):
    def damage(data: dict[str, Any]) -> None:
        data["categories"][0]["id"] = value

    return damage


def _no_person(data: dict[str, Any]) -> None:
    data["categories"] = [{"id": 2, "name": "bicycle"}]


# Structural problems: errors for evaluation and for training alike.
STRUCTURAL = {
    "image record null": (_replace("images", 2, None), "images[2] is null, expected an image object"),
    "image without id": (_delete("images", 2, "id"), "images[2] lacks 'id': expected an integer image id"),
    "image id a string": (_set("images", 2, "id", "9"), 'images[2]: id is "9", expected an integer'),
    "image id a boolean": (_set("images", 2, "id", True), "images[2]: id is true, expected an integer"),
    "image id a float": (_set("images", 2, "id", 9.5), "images[2]: id is 9.5, expected an integer"),
    "image without file_name": (
        _delete("images", 1, "file_name"),
        "images[1] lacks 'file_name' (id {i1}): expected the image's file name",
    ),
    "file_name a number": (
        _set("images", 1, "file_name", 12),
        "images[1] (id {i1}): file_name is 12, expected a file name",
    ),
    "file_name empty": (_set("images", 1, "file_name", ""), 'images[1] (id {i1}): file_name is "", expected'),
    "width zero": (_set("images", 0, "width", 0), "images[0] (id {i0}): width is 0, expected a positive whole number"),
    "height a string": (
        _set("images", 0, "height", "427"),
        'images[0] (id {i0}): height is "427", expected a positive whole number',
    ),
    "duplicate image id": (
        _same_id("images", 5, 2),
        "images[5] (id {i2}): image id {i2} is also images[2]'s: ids must be unique",
    ),
    "duplicate annotation id": (
        _same_id("annotations", 7, 1),
        "annotations[7] (id {a1}): annotation id {a1} is also annotations[1]'s: ids must be unique",
    ),
    "annotation id a string": (
        _set("annotations", 7, "id", "x"),
        'annotations[7]: id is "x", expected an integer',
    ),
    "unknown image_id": (
        _unknown_image,
        "annotations[4] (id {a4}): image_id 999999999 is no listed image's id, expected the id of an image in 'images'",
    ),
    "image_id a string": (
        _set("annotations", 4, "image_id", "397133"),
        'annotations[4] (id {a4}): image_id "397133" is not an integer',
    ),
    "annotation without image_id": (
        _delete("annotations", 4, "image_id"),
        "annotations[4] lacks 'image_id' (id {a4}): expected the id of a listed image",
    ),
    "annotation record null": (_replace("annotations", 6, None), "annotations[6] is null, expected an annotation"),
    "no person category": (_no_person, "'categories' has no person category: expected"),
    "person category with another id": (
        _person_id(3),
        "categories[0] (id 3): the person category has id 3, expected 1 (COCO's)",
    ),
}

# One annotation's content: an error for evaluation, skipped and counted by training.
CONTENT = {
    "keypoints short": (
        _set("annotations", 3, "keypoints", [0] * 50),
        "annotations[3] (id {a3}): keypoints has 50 values, expected 51 (17 x, y, visibility)",
    ),
    "keypoints long": (
        _set("annotations", 3, "keypoints", [0] * 54),
        "annotations[3] (id {a3}): keypoints has 54 values, expected 51",
    ),
    "keypoints null": (
        _set("annotations", 3, "keypoints", None),
        "annotations[3] (id {a3}): keypoints is null, expected a list of 51 numbers",
    ),
    "keypoints a string": (
        _set("annotations", 3, "keypoints", "0 0 0"),
        'annotations[3] (id {a3}): keypoints is "0 0 0", expected a list of 51 numbers',
    ),
    "keypoints missing": (
        _delete("annotations", 3, "keypoints"),
        "annotations[3] lacks 'keypoints' (id {a3}): expected 51 numbers (17 x, y, visibility)",
    ),
    "keypoint null": (_keypoint(3, 6, None), "annotations[3] (id {a3}): keypoints[6] is null, expected a number"),
    "keypoint a string": (_keypoint(3, 7, "12"), 'annotations[3] (id {a3}): keypoints[7] is "12", expected a number'),
    "keypoint a boolean": (_keypoint(3, 0, True), "annotations[3] (id {a3}): keypoints[0] is true, expected a number"),
    "keypoint a list": (_keypoint(3, 0, [1, 2]), "annotations[3] (id {a3}): keypoints[0] is a list of 2, expected"),
    "keypoint NaN": (
        _keypoint(3, 9, math.nan),
        "annotations[3] (id {a3}): keypoints[9] is NaN, expected a finite number",
    ),
    "keypoint infinite": (
        _keypoint(3, 10, -math.inf),
        "annotations[3] (id {a3}): keypoints[10] is -Infinity, expected a finite number",
    ),
    "keypoint beyond a float": (
        _keypoint(3, 0, 10**400),
        "annotations[3] (id {a3}): keypoints[0] is a 401-digit number, expected a finite number",
    ),
    "visibility 3": (
        _keypoint(3, 2, 3),
        "annotations[3] (id {a3}): keypoints[2] (visibility of nose) is 3, expected 0, 1 or 2",
    ),
    "visibility 0.5": (
        _keypoint(3, 50, 0.5),
        "annotations[3] (id {a3}): keypoints[50] (visibility of right_ankle) is 0.5, expected 0, 1 or 2",
    ),
    "visibility a string": (_keypoint(3, 5, "2"), 'annotations[3] (id {a3}): keypoints[5] is "2", expected a number'),
    "visibility negative": (
        _keypoint(3, 5, -1),
        "annotations[3] (id {a3}): keypoints[5] (visibility of left_eye) is -1, expected 0, 1 or 2",
    ),
    "bbox short": (
        _set("annotations", 2, "bbox", [1, 2, 3]),
        "annotations[2] (id {a2}): bbox is a list of 3, expected [x, y, width, height]",
    ),
    "bbox null": (_set("annotations", 2, "bbox", None), "annotations[2] (id {a2}): bbox is null, expected [x, y"),
    "bbox missing": (
        _delete("annotations", 2, "bbox"),
        "annotations[2] lacks 'bbox' (id {a2}): expected [x, y, width, height]",
    ),
    "bbox NaN": (_bbox(2, 1, math.nan), "annotations[2] (id {a2}): bbox[1] is NaN, expected a finite number"),
    "bbox string": (_bbox(2, 3, "10"), 'annotations[2] (id {a2}): bbox[3] is "10", expected a number'),
    "bbox negative width": (
        _bbox(2, 2, -5.0),
        "annotations[2] (id {a2}): bbox has width -5.0 and height",
    ),
    "num_keypoints negative": (
        _set("annotations", 1, "num_keypoints", -1),
        "annotations[1] (id {a1}): num_keypoints is -1, expected a whole number from 0 to 17",
    ),
    "num_keypoints a float": (
        _set("annotations", 1, "num_keypoints", 2.5),
        "annotations[1] (id {a1}): num_keypoints is 2.5, expected a whole number",
    ),
    "num_keypoints a boolean": (
        _set("annotations", 1, "num_keypoints", False),
        "annotations[1] (id {a1}): num_keypoints is false, expected",
    ),
    "area NaN": (_set("annotations", 1, "area", math.nan), "annotations[1] (id {a1}): area is NaN, expected a finite"),
    "area negative": (_set("annotations", 1, "area", -4.0), "annotations[1] (id {a1}): area is -4.0, expected"),
    "area a string": (_set("annotations", 1, "area", "big"), 'annotations[1] (id {a1}): area is "big", expected'),
    "iscrowd 2": (_set("annotations", 1, "iscrowd", 2), "annotations[1] (id {a1}): iscrowd is 2, expected 0 or 1"),
    "iscrowd a boolean": (
        _set("annotations", 1, "iscrowd", True),
        "annotations[1] (id {a1}): iscrowd is true, expected 0 or 1",
    ),
    "category_id of another category": (
        _set("annotations", 1, "category_id", 2),
        "annotations[1] (id {a1}): category_id is 2, expected 1 (person)",
    ),
    "category_id missing": (
        _delete("annotations", 1, "category_id"),
        "annotations[1] lacks 'category_id' (id {a1})",
    ),
}


@pytest.mark.parametrize("case", list(STRUCTURAL) + list(CONTENT))
def test_a_damaged_record_is_one_line_naming_file_record_and_field(val_data, tmp_path, case):
    damage, expected = {**STRUCTURAL, **CONTENT}[case]
    expected = expected.format(**_ids(val_data))
    damage(val_data)
    message = _error(_write(tmp_path, val_data))
    assert expected in message, message


@pytest.mark.parametrize("case", list(STRUCTURAL))
def test_structural_problems_are_errors_for_training_too(val_data, tmp_path, case):
    damage, expected = STRUCTURAL[case]
    expected = expected.format(**_ids(val_data))
    damage(val_data)
    assert expected in _error(_write(tmp_path, val_data), skip_bad_annotations=True)


@pytest.mark.parametrize("case", list(CONTENT))
def test_training_skips_an_annotation_with_bad_content(val_data, tmp_path, case):
    damage, expected = CONTENT[case]
    expected = expected.format(**_ids(val_data))
    count = len(val_data["annotations"])
    damage(val_data)
    coco, bad = read_coco_keypoints(_write(tmp_path, val_data), skip_bad_annotations=True)
    assert len(bad) == 1 and expected in str(bad[0]) and str(bad[0]).startswith(f"annotations[{bad[0].index}]")
    assert bad[0].image_id == val_data["annotations"][bad[0].index]["image_id"]
    assert len(coco.dataset["annotations"]) == count - 1 == len(coco.anns)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[1, 2, 3]", "ann.json: expected a COCO annotation object, got a JSON list"),
        ('"images"', "ann.json: expected a COCO annotation object, got a JSON string"),
        ("null", "ann.json: expected a COCO annotation object, got a JSON null"),
        ('{"annotations": [], "categories": []}', "ann.json has no 'images' list"),
        ('{"images": [], "categories": []}', "ann.json has no 'annotations' list"),
        ('{"images": [], "annotations": []}', "ann.json has no 'categories' list"),
        ('{"images": {}, "annotations": [], "categories": []}', "ann.json: 'images' is an object, expected a list"),
        ('{"images": [], "annotations": null, "categories": []}', "ann.json: 'annotations' is null, expected a list"),
        ("not json {", "ann.json is not valid JSON: Expecting value: line 1 column 1"),
        ("[" * 100_000 + "]" * 100_000, "ann.json is not valid JSON: nested too deeply"),
    ],
)
def test_files_that_are_no_coco_object(tmp_path, content, expected):
    assert expected in _error(_write(tmp_path, content))


def test_a_missing_file_or_a_folder(tmp_path):
    with pytest.raises(DatasetError) as caught:
        load_coco_keypoints(tmp_path / "absent.json")
    assert str(caught.value) == f"annotation file {tmp_path / 'absent.json'} not found"
    with pytest.raises(DatasetError) as caught:
        load_coco_keypoints(tmp_path)
    assert str(caught.value) == f"{tmp_path} is a folder, expected a COCO annotation JSON file"


def test_an_empty_images_list_loads_but_is_refused_for_evaluation(val_data, tmp_path):
    val_data["images"], val_data["annotations"] = [], []
    path = _write(tmp_path, val_data)
    coco = load_coco_keypoints(path)
    with pytest.raises(DatasetError) as caught:
        listed_images(coco, path, tmp_path)
    assert str(caught.value) == f"{path}: 'images' is empty: expected at least one image to evaluate"


def test_long_strings_and_newlines_stay_on_one_short_line(val_data, tmp_path):
    val_data["annotations"][0]["keypoints"] = "line one\nline two " + "x" * 500
    message = _error(_write(tmp_path, val_data))
    assert "\n" not in message and len(message) < len(str(tmp_path)) + 160, message


def test_missing_annotation_ids_are_filled_without_colliding(val_data, tmp_path):
    for annotation in val_data["annotations"][1:4]:
        del annotation["id"]
    kept = [a["id"] for a in val_data["annotations"] if "id" in a]
    coco = load_coco_keypoints(_write(tmp_path, val_data))
    ids = [a["id"] for a in coco.dataset["annotations"]]
    assert len(set(ids)) == len(ids) and set(kept) <= set(ids) and len(coco.anns) == len(ids)


def test_real_files_pass_crowd_zeros_float_values_and_segmentation_included(coco, tmp_path):
    files = sorted((coco / "annotations").glob("*.json"))
    mini = os.environ.get("POET_COCO_MINI")  # the larger real subset, where the environment names it
    files += sorted((Path(mini) / "annotations").glob("*.json")) if mini else []
    crowd = 0
    for path in files:
        coco_gt, bad = read_coco_keypoints(path, skip_bad_annotations=True)
        assert bad == [] and load_coco_keypoints(path).dataset["annotations"] == coco_gt.dataset["annotations"]
        crowd += sum(a["iscrowd"] for a in coco_gt.dataset["annotations"])
    assert crowd > 0  # crowd annotations (num_keypoints 0, keypoints all zero, RLE segmentation) are valid
    # Floats and integral-valued visibilities are numbers too.
    data = json.loads((coco / "annotations" / VAL).read_text())
    data["annotations"][0]["keypoints"] = [float(v) for v in data["annotations"][0]["keypoints"]]
    load_coco_keypoints(_write(tmp_path, data))


def test_checking_is_fast_on_a_coco_sized_file(val_data):
    """COCO train2017 has 250k person annotations; checking a tenth of that takes well under a second."""
    import time

    template = val_data["annotations"]
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in range(5000)]
    annotations = [{**template[n % len(template)], "id": n + 1, "image_id": n % 5000} for n in range(25_000)]
    data = {"images": images, "annotations": annotations, "categories": val_data["categories"]}
    start = time.perf_counter()
    assert check_coco_keypoints(data, "big.json") == []
    assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------- through the tools


def test_poet_eval_on_a_damaged_file_is_one_error_line_and_exit_2(tiny_checkpoint, coco, val_data, tmp_path, capsys):
    from poet.cli import eval_main

    val_data["annotations"][3]["keypoints"][4] = None
    broken = _write(tmp_path, val_data, "damaged.json")
    code = eval_main([str(tiny_checkpoint), "--annotations", str(broken), "--images", str(coco / "val2017")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in err
    record = f"annotations[3] (id {val_data['annotations'][3]['id']})"
    assert lines == [f"error: {broken}: {record}: keypoints[4] is null, expected a number"]


def test_poet_eval_on_a_file_without_images_is_an_error_not_a_table_of_zeros(
    tiny_checkpoint, coco, val_data, tmp_path, capsys
):
    from poet.cli import eval_main

    val_data["images"], val_data["annotations"] = [], []
    empty = _write(tmp_path, val_data, "empty.json")
    code = eval_main([str(tiny_checkpoint), "--annotations", str(empty), "--images", str(coco / "val2017")])
    captured = capsys.readouterr()
    assert code == 2 and "AP" not in captured.out
    assert [line for line in captured.err.splitlines() if line.startswith("error:")] == [
        f"error: {empty}: 'images' is empty: expected at least one image to evaluate"
    ]


# ---------------------------------------------------------------- the training dataset


def _training_set(annotations: Path, coco: Path):
    from poet.processing import PreprocessConfig
    from poet.train.dataset import CocoKeypoints

    return CocoKeypoints(annotations, coco / "val2017", PreprocessConfig(input_size=(128, 128)))


def test_training_dataset_skips_and_counts_a_nan_annotation_with_one_warning(coco, val_data, tmp_path, caplog):
    clean = _training_set(coco / "annotations" / VAL, coco)
    bad = val_data["annotations"][3]
    bad["keypoints"][0] = math.nan
    bad_image = next(image for image in val_data["images"] if image["id"] == bad["image_id"])
    path = _write(tmp_path, val_data, "train_nan.json")
    with caplog.at_level(logging.WARNING, logger="poet"):
        dataset = _training_set(path, coco)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    first = f"annotations[3] (id {bad['id']}): keypoints[0] is NaN, expected a finite number"
    assert warnings == [f"{path}: skipped 1 bad annotation and the images they are in (first: {first})"]
    assert [str(b) for b in dataset.bad_annotations] == [first]
    assert dataset.skipped.reasons["with bad annotations"] == 1
    assert dataset.skipped.examples["with bad annotations"] == bad_image["file_name"]
    assert len(dataset) == len(clean) - 1
    assert bad_image["id"] not in {info["id"] for info, _ in dataset.entries}
    # What reaches the matcher is finite.
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample is not None and bool(np.isfinite(sample.target["keypoints"].numpy()).all())


def test_training_dataset_refuses_a_duplicate_annotation_id(coco, val_data, tmp_path):
    val_data["annotations"][5]["id"] = val_data["annotations"][0]["id"]
    path = _write(tmp_path, val_data, "train_dup.json")
    with pytest.raises(DatasetError, match=r"annotations\[5\] .* is also annotations\[0\]'s: ids must be unique"):
        _training_set(path, coco)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_training_sample_beyond_float32_is_skipped_not_matched(coco, val_data, tmp_path):
    """Finite in the file, infinite as float32: the sample is dropped before it can reach the matcher."""
    annotation = next(a for a in val_data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"])
    visible = annotation["keypoints"][2::3].index(2)
    annotation["keypoints"][3 * visible] = 1e39
    dataset = _training_set(_write(tmp_path, val_data, "train_big.json"), coco)
    index = next(i for i, (info, _) in enumerate(dataset.entries) if info["id"] == annotation["image_id"])
    assert dataset[index] is None
