"""The synthetic-people generator must write COCO files that COCO's own tools read and score as intended."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from poet.skeleton import KEYPOINT_NAMES, SKELETON
from poet.synthetic import (
    INFERABLE_RADIUS,
    MAX_PERSON_HEIGHT,
    VIDEO_FPS,
    generate_dataset,
    generate_splits,
    generate_videos,
    main,
)

HEIGHT, WIDTH = 128, 160
SPLITS = ("train2017", "val2017")
NUM_IMAGES = 40


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic")
    annotation_path = generate_dataset(root, NUM_IMAGES, image_size=(HEIGHT, WIDTH), seed=3, progress=False)
    return annotation_path, json.loads(annotation_path.read_text())


def _keypoints(annotation: dict) -> np.ndarray:
    return np.asarray(annotation["keypoints"], dtype=float).reshape(len(KEYPOINT_NAMES), 3)


def test_layout_and_coco_api(dataset):
    annotation_path, data = dataset
    assert annotation_path == annotation_path.parents[1] / "annotations" / "person_keypoints_train2017.json"
    assert set(data) == {"info", "licenses", "images", "annotations", "categories"}
    coco = COCO(str(annotation_path))
    assert sorted(coco.getImgIds()) == list(range(1, NUM_IMAGES + 1))
    assert coco.getCatIds() == [1]
    category = coco.loadCats(1)[0]
    assert category["name"] == "person"
    assert category["keypoints"] == list(KEYPOINT_NAMES)
    assert category["skeleton"] == [[a + 1, b + 1] for a, b in SKELETON]
    assert len(coco.getAnnIds()) == len(data["annotations"]) >= NUM_IMAGES
    assert len({annotation["id"] for annotation in data["annotations"]}) == len(data["annotations"])


def test_images_exist_and_decode_at_declared_size(dataset):
    annotation_path, data = dataset
    image_dir = annotation_path.parents[1] / "train2017"
    written = sorted(path.name for path in image_dir.iterdir())
    assert written == sorted(image["file_name"] for image in data["images"])
    for image in data["images"]:
        assert image["file_name"] == f"{image['id']:012d}.jpg"
        pixels = cv2.imread(str(image_dir / image["file_name"]))
        assert pixels is not None
        assert pixels.shape == (image["height"], image["width"], 3) == (HEIGHT, WIDTH, 3)


def test_keypoints_boxes_and_areas_are_consistent(dataset):
    _, data = dataset
    for annotation in data["annotations"]:
        assert annotation["category_id"] == 1 and annotation["iscrowd"] == 0
        keypoints = _keypoints(annotation)
        visibility = keypoints[:, 2]
        assert set(visibility) <= {0, 1, 2}
        assert annotation["num_keypoints"] == int((visibility > 0).sum())
        assert np.all(keypoints[visibility == 0] == 0)
        labelled = keypoints[visibility > 0]
        assert np.all((labelled[:, 0] >= 0) & (labelled[:, 0] <= WIDTH - 1))
        assert np.all((labelled[:, 1] >= 0) & (labelled[:, 1] <= HEIGHT - 1))
        x, y, w, h = annotation["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= WIDTH and y + h <= HEIGHT
        assert 0 < annotation["area"] <= w * h
        assert all(len(polygon) >= 6 and len(polygon) % 2 == 0 for polygon in annotation["segmentation"])


def test_content_mixes_crowding_occlusion_and_both_facings(dataset):
    _, data = dataset
    people_per_image = np.bincount([annotation["image_id"] for annotation in data["annotations"]])[1:]
    assert 1 in people_per_image and people_per_image.max() > 1
    all_keypoints = np.stack([_keypoints(annotation) for annotation in data["annotations"]])
    assert (all_keypoints[:, :, 2] == 1).sum() > 0, "overlapping people should hide some keypoints (v=1)"
    assert (all_keypoints[:, :, 2] == 2).mean() > 0.5
    # Seen from the front a person's left shoulder is on the image right; from behind it is on the left.
    shoulders = all_keypoints[:, 5:7]
    both = (shoulders[:, :, 2] > 0).all(axis=1)
    left_on_image_right = shoulders[both, 0, 0] > shoulders[both, 1, 0]
    assert left_on_image_right.any() and not left_on_image_right.all()


def test_hidden_joints_are_labelled_only_where_the_persons_own_body_shows_nearby(dataset):
    """COCO's annotators place an occluded joint from what shows around it; one wholly hidden stays unlabelled."""
    _, data = dataset
    reach = INFERABLE_RADIUS * MAX_PERSON_HEIGHT * HEIGHT
    hidden = 0
    for annotation in data["annotations"]:
        keypoints = _keypoints(annotation)
        shown = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        for polygon in annotation["segmentation"]:
            corners = [np.round(np.reshape(polygon, (-1, 2))).astype(np.int32)]
            cv2.fillPoly(shown, corners, 1)
            cv2.polylines(shown, corners, True, 1)  # slivers a fill misses
        distance_to_shown = cv2.distanceTransform(1 - shown, cv2.DIST_L2, 5)
        for x, y, v in keypoints:
            if v == 1:
                hidden += 1
                assert distance_to_shown[round(y), round(x)] <= reach + 1, (annotation["id"], x, y)
    assert hidden > 0


def test_face_and_body_agree_on_left_and_right(dataset):
    _, data = dataset
    checked = 0
    for annotation in data["annotations"]:
        keypoints = _keypoints(annotation)
        if (keypoints[[1, 2, 5, 6], 2] == 0).any():
            continue
        eyes_sign = np.sign(keypoints[1, 0] - keypoints[2, 0])
        shoulders_sign = np.sign(keypoints[5, 0] - keypoints[6, 0])
        assert eyes_sign == shoulders_sign
        checked += 1
    assert checked >= 5


def test_ground_truth_scores_perfect_oks_ap(dataset):
    annotation_path, data = dataset
    ground_truth = COCO(str(annotation_path))
    results = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in data["annotations"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), "keypoints")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_same_seed_is_byte_identical_and_seeds_differ(tmp_path):
    def build(name: str, seed: int) -> Path:
        return generate_dataset(tmp_path / name, 4, image_size=(96, 96), seed=seed, progress=False)

    first, again, other = build("first", 5), build("again", 5), build("other", 6)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    for image in sorted((tmp_path / "first" / "train2017").iterdir()):
        assert image.read_bytes() == (tmp_path / "again" / "train2017" / image.name).read_bytes()


def test_splits_and_command_line(tmp_path, capsys):
    train, val = generate_splits(tmp_path / "api", 3, 2, image_size=(64, 96), progress=False)
    train_data, val_data = json.loads(train.read_text()), json.loads(val.read_text())
    assert (len(train_data["images"]), len(val_data["images"])) == (3, 2)
    train_keypoints = [a["keypoints"] for a in train_data["annotations"]]
    assert all(a["keypoints"] not in train_keypoints for a in val_data["annotations"])

    cli_root = tmp_path / "cli"
    main([str(cli_root), "--train", "2", "--val", "1", "--size", "64", "96", "--seed", "1", "--no-progress"])
    printed = capsys.readouterr().out.split()
    annotations = cli_root / "annotations"
    assert printed == [str(annotations / f"person_keypoints_{split}.json") for split in SPLITS]
    image = cv2.imread(str(next((cli_root / "val2017").glob("*.jpg"))))
    assert image is not None and image.shape == (64, 96, 3)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "bad"), "--train", "-1"])


def test_min_height_and_max_people_shape_the_people(tmp_path):
    """Keypoint spans grow with --min-height (the recipe's easier preset) and people per image obey --max-people."""

    def spans(min_height: float) -> tuple[float, int]:
        path = generate_dataset(
            tmp_path / str(min_height), 30, image_size=(96, 96), max_people=2, min_height=min_height, progress=False
        )
        data = json.loads(path.read_text())
        heights = []
        for annotation in data["annotations"]:
            labelled = _keypoints(annotation)
            labelled = labelled[labelled[:, 2] > 0]
            if len(labelled) > 8:
                heights.append(np.ptp(labelled[:, 1]))
        per_image = max(sum(a["image_id"] == i["id"] for a in data["annotations"]) for i in data["images"])
        return float(np.median(heights)), per_image

    small, crowd_small = spans(0.1)
    large, crowd_large = spans(0.6)
    assert large > 1.25 * small and crowd_small <= 2 and crowd_large <= 2
    with pytest.raises(ValueError, match="min_height"):
        generate_dataset(tmp_path / "bad", 1, min_height=0.95, progress=False)


def _area_over_height_squared(annotations: list[dict]) -> float:
    """Median area / (vertical extent of the labelled keypoints)^2 of people with 14 or more labelled.

    Nearly whole people only: with fewer keypoints their extent falls short of their height.
    """
    ratios = []
    for annotation in annotations:
        keypoints = _keypoints(annotation)
        labelled = keypoints[keypoints[:, 2] > 0]
        if annotation.get("iscrowd") or len(labelled) < 14:
            continue
        ratios.append(annotation["area"] / max(float(np.ptp(labelled[:, 1])), 1.0) ** 2)
    return float(np.median(ratios))


def test_figures_are_as_broad_as_cocos_people_so_oks_judges_them_alike(tmp_path, coco_mini):
    # OKS forgives an error in proportion to sqrt(area): stick-thin figures would be scored more strictly.
    annotation_path = generate_dataset(tmp_path, 150, image_size=(128, 128), seed=5, progress=False)
    synthetic = _area_over_height_squared(json.loads(annotation_path.read_text())["annotations"])
    real_files = [coco_mini / "annotations" / f"person_keypoints_{split}.json" for split in SPLITS]
    real = _area_over_height_squared([a for path in real_files for a in json.loads(path.read_text())["annotations"]])
    assert abs(synthetic - real) / real < 0.12, (synthetic, real)


def test_videos_in_mots_layout_keep_identities_and_smooth_motion(tmp_path, capsys):
    frames = 10
    main([str(tmp_path), "--videos", "1", "--frames", str(frames), "--size", "128", "128", "--min-height", "0.5"])
    video = tmp_path / "videos" / "synth-001"
    assert capsys.readouterr().out.split() == [str(video)]  # only the video: no image splits
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos"]
    assert sorted(p.name for p in (video / "img1").iterdir()) == [f"{i:06d}.jpg" for i in range(1, frames + 1)]
    assert cv2.imread(str(video / "img1" / "000001.jpg")).shape == (128, 128, 3)
    info = (video / "seqinfo.ini").read_text()
    assert f"frameRate={VIDEO_FPS}\nseqLength={frames}\nimWidth=128\nimHeight=128" in info
    rows = np.loadtxt(video / "gt" / "gt.txt", delimiter=",", ndmin=2)
    keypoints = json.loads((video / "gt" / "keypoints.json").read_text())["frames"]
    assert len(keypoints) == frames
    assert len({int(i) for i in rows[:, 1]}) >= 2 and rows[:, 0].min() == 1  # two or more people from the start
    previous: dict[int, np.ndarray] = {}
    for frame, person, x, y, w, h, consider, kind, visibility in rows:
        assert consider == kind == 1 and 0 < visibility <= 1 and w > 0 and h > 0
        joints = np.array(keypoints[int(frame) - 1][str(int(person))])
        assert joints.shape == (17, 3) and set(joints[:, 2]) <= {0, 1, 2}
        labelled = joints[joints[:, 2] > 0, :2] + 1  # MOT's boxes are 1-based
        assert np.all((labelled >= [x - 1, y - 1]) & (labelled <= [x + w + 1, y + h + 1]))
        if int(person) in previous and (joints[:, 2] > 0).all() and (previous[int(person)][:, 2] > 0).all():
            step = np.abs(joints[:, :2] - previous[int(person)][:, :2]).max()
            assert step < 6, (frame, person, step)  # a walk, not a jump: the identity is the same person
        previous[int(person)] = joints
    assert {len(people) for people in keypoints} <= {1, 2, 3}
    again = generate_videos(tmp_path / "again", 1, frames, min_height=0.5, progress=False)[0]
    for name in ("gt/gt.txt", "gt/keypoints.json", "img1/000007.jpg"):
        assert (again / name).read_bytes() == (video / name).read_bytes()
