"""Augmentations and target encoding on real COCO people, and agreement with the shared preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from poet.images import read_image
from poet.processing import PreprocessConfig, decode_keypoints, preprocess
from poet.train.dataset import CocoKeypoints
from poet.train.targets import encode_targets, people_from_coco
from poet.train.transforms import TrainTransform, crop, hflip, resize


@pytest.fixture(scope="module")
def photo_with_people(coco):
    data = json.loads((coco / "annotations" / "person_keypoints_val2017.json").read_text())
    counts = {}
    for annotation in data["annotations"]:
        if annotation["num_keypoints"] > 5:
            counts.setdefault(annotation["image_id"], []).append(annotation)
    image_id = max(counts, key=lambda i: len(counts[i]))
    name = next(i["file_name"] for i in data["images"] if i["id"] == image_id)
    return read_image(coco / "val2017" / name), people_from_coco(counts[image_id])


def test_coco_visibility_two_is_the_only_visible():
    annotations = [
        {"keypoints": [10, 20, 2, 30, 40, 1] + [0] * 45, "iscrowd": 0},
        {"keypoints": [1] * 51, "iscrowd": 1},
    ]
    people = people_from_coco(annotations)
    assert people.shape == (1, 17, 3) and people[0, 0, 2] == 1 and people[0, 1, 2] == 0


def test_hflip_mirrors_x_and_swaps_left_and_right(photo_with_people):
    image, people = photo_with_people
    flipped_image, flipped = hflip(image, people)
    width = image.shape[1]
    np.testing.assert_array_equal(flipped_image, image[:, ::-1])
    visible = people[:, 5, 2] > 0  # left shoulder becomes the right shoulder
    np.testing.assert_allclose(flipped[visible, 6, 0], width - people[visible, 5, 0])
    np.testing.assert_allclose(flipped[visible, 6, 1], people[visible, 5, 1])
    np.testing.assert_allclose(flipped[:, 0, 2], people[:, 0, 2])
    again_image, again = hflip(flipped_image, flipped)
    np.testing.assert_array_equal(again_image, image)
    np.testing.assert_allclose(again[..., :2][again[..., 2] > 0], people[..., :2][people[..., 2] > 0], atol=1e-4)


def test_flip_leaves_people_without_keypoints_at_zero():
    people = np.zeros((1, 17, 3), dtype=np.float32)
    _, flipped = hflip(np.zeros((10, 20, 3), np.uint8), people)
    labels, targets = encode_targets(flipped, (10, 20))
    assert labels[0] == 0 and targets[0, 0] == 0 and targets[0, 2] == 0


def test_crop_hides_points_outside_and_drops_empty_people(photo_with_people):
    image, people = photo_with_people
    top, left, height, width = 20, 30, image.shape[0] // 2, image.shape[1] // 2
    cropped_image, cropped = crop(image, people, top, left, height, width)
    assert cropped_image.shape[:2] == (height, width)
    visible = cropped[..., 2] > 0
    assert ((cropped[..., 0][visible] > 0) & (cropped[..., 0][visible] < width)).all()
    assert cropped[..., 2].any(axis=1).all() and len(cropped) <= len(people)


def test_resize_scales_keypoints(photo_with_people):
    image, people = photo_with_people
    resized_image, resized = resize(image, people, (image.shape[0] // 2, image.shape[1] // 3))
    assert resized_image.shape[:2] == (image.shape[0] // 2, image.shape[1] // 3)
    np.testing.assert_allclose(resized[..., 0], people[..., 0] * (image.shape[1] // 3) / image.shape[1], rtol=1e-6)


def test_train_transform_is_deterministic_per_seed_and_fits_the_letterbox(photo_with_people):
    image, people = photo_with_people
    transform = TrainTransform((256, 320))
    first = transform(image, people, np.random.default_rng(5))
    second = transform(image, people, np.random.default_rng(5))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    boxes = [(round(256 * f), round(320 * f)) for f in transform.scales()]
    assert boxes[-1] == (256, 320) and boxes[0][1] == 192
    for seed in range(20):
        height, width = transform(image, people, np.random.default_rng(seed))[0].shape[:2]
        # The (possibly cropped) image fills one side of one of the multi-scale letterboxes.
        assert any((height == h and width <= w) or (width == w and height <= h) for h, w in boxes)


def test_targets_decode_back_to_the_pixels(photo_with_people):
    image, people = photo_with_people
    labels, targets = encode_targets(people, image.shape[:2])
    predictions = np.delete(targets, 2, axis=1)  # the 53-value layout drops the centre visibility
    decoded = decode_keypoints(predictions)
    visible = people[..., 2] > 0
    pixels = decoded[..., :2] * np.array([image.shape[1], image.shape[0]])
    np.testing.assert_allclose(pixels[visible], people[..., :2][visible], atol=1e-3)
    assert (labels == 1).all()


def test_training_eval_path_equals_the_shared_preprocessing(coco):
    """The dataset without augmentation produces exactly what preprocess() gives export and runtime."""
    config = PreprocessConfig(input_size=(224, 288))
    dataset = CocoKeypoints(coco / "annotations" / "person_keypoints_val2017.json", coco / "val2017", config)
    for index in (0, 5):
        sample = dataset[index]
        assert sample is not None
        path = coco / "val2017" / dataset.entries[index][0]["file_name"]
        batch, mask, _ = preprocess([read_image(path)], config)
        height, width = sample.image.shape[1:]
        assert not mask[0, :height, :width].any() and mask[0].sum() == mask[0].size - height * width
        assert torch.equal(sample.image, torch.from_numpy(batch[0, :, :height, :width]))
