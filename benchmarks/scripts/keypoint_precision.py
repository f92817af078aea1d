"""How precise keypoints must be for a given OKS AP on a COCO set, and how precise a checkpoint is.

Scores oracle predictions with pycocotools on the set's own people: the true keypoints plus Gaussian
noise of a fraction of each person's height, and the set's mean pose placed at each person's true
centre and height (what a model that finds people but not their pose would score). With
``--checkpoint`` it also prints that model's median error per keypoint as a fraction of the person's
height, for the query nearest each person (matching as the loss does, by keypoint distance).

    python benchmarks/scripts/keypoint_precision.py runs/quickstart/data/annotations/person_keypoints_val2017.json \\
        --checkpoint runs/quickstart/train/checkpoint.pth --images runs/quickstart/data/val2017
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from poet.errors import DatasetError, PoetError
from poet.evaluation import evaluate_keypoints, load_coco_keypoints
from poet.processing import Pose
from poet.skeleton import KEYPOINT_NAMES, flip_permutation

NOISE_FRACTIONS = (0.02, 0.03, 0.05, 0.1)
# People with fewer labelled keypoints have no reliable height to scale by.
MIN_LABELLED = 10


def _people(coco: Any) -> list[tuple[int, np.ndarray]]:
    """(image id, [17, 3] keypoints) of every non-crowd person with enough labelled keypoints."""
    people = []
    for annotation in coco.dataset["annotations"]:
        keypoints = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(17, 3)
        if not annotation.get("iscrowd") and (keypoints[:, 2] > 0).sum() >= MIN_LABELLED:
            people.append((annotation["image_id"], keypoints))
    return people


def _frame(keypoints: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (mean of labelled keypoints) and height (their vertical extent) of one person."""
    labelled = keypoints[:, 2] > 0
    return keypoints[labelled, :2].mean(axis=0), max(float(np.ptp(keypoints[labelled, 1])), 1.0)


def _result(image_id: int, points: np.ndarray) -> dict[str, Any]:
    """A COCO result entry for oracle keypoints, through the same :class:`Pose` every predictor returns."""
    return Pose(keypoints=np.concatenate([points, np.ones((17, 1))], axis=1), score=1.0).to_coco(image_id)


def oracle_scores(annotations: Path, seed: int = 0) -> dict[str, dict[str, float]]:
    """OKS AP of the noisy-truth and mean-pose oracles on the set at ``annotations``."""
    coco = load_coco_keypoints(annotations)
    people = _people(coco)
    if not people:
        raise DatasetError(f"{annotations} has no person with {MIN_LABELLED} or more labelled keypoints")
    normalised = []
    for _, keypoints in people:
        centre, height = _frame(keypoints)
        offsets = (keypoints[:, :2] - centre) / height
        normalised.append(np.where(keypoints[:, 2:] > 0, offsets, np.nan))
    mean_pose = np.nanmean(np.stack(normalised), axis=0)
    rng = np.random.default_rng(seed)
    scores = {}
    for fraction in NOISE_FRACTIONS:
        results = []
        for image_id, keypoints in people:
            centre, height = _frame(keypoints)
            truth = np.where(keypoints[:, 2:] > 0, keypoints[:, :2], centre)
            results.append(_result(image_id, truth + rng.normal(0, fraction * height, size=(17, 2))))
        scores[f"truth + noise {fraction:.0%} of height"] = evaluate_keypoints(coco, results)
    mean_results = []
    for image_id, keypoints in people:
        centre, height = _frame(keypoints)
        mean_results.append(_result(image_id, centre + mean_pose * height))
    scores["mean pose at true centre and height"] = evaluate_keypoints(coco, mean_results)
    return scores


def model_errors(checkpoint: Path, annotations: Path, images: Path, limit: int) -> dict[str, float]:
    """Median error / person height per keypoint, the centre's, and the share of people fitting better swapped."""
    from poet.checkpoint import load_model
    from poet.images import read_image
    from poet.predictor import Predictor

    coco = load_coco_keypoints(annotations)
    by_image: dict[int, list[np.ndarray]] = {}
    for image_id, keypoints in _people(coco):
        by_image.setdefault(image_id, []).append(keypoints)
    predictor = Predictor(load_model(checkpoint), score_threshold=0.0)
    swap = flip_permutation()
    errors, swapped_better, centre_errors = [], [], []
    for image_id in sorted(by_image)[:limit]:
        image = read_image(images / coco.imgs[image_id]["file_name"])
        poses = predictor.predict_arrays([image])[0]
        if not poses:
            continue
        predicted = np.stack([pose.keypoints[:, :2] for pose in poses])
        for keypoints in by_image[image_id]:
            labelled = keypoints[:, 2] > 0
            centre, height = _frame(keypoints)
            distance = np.linalg.norm(predicted - keypoints[None, :, :2], axis=-1)
            best = int(np.where(labelled, distance, 0).sum(axis=1).argmin())
            errors.append(np.where(labelled, distance[best] / height, np.nan))
            swapped = np.linalg.norm(predicted[best][swap] - keypoints[:, :2], axis=-1)
            swapped_better.append(swapped[labelled].sum() < distance[best][labelled].sum())
            centre_errors.append(np.linalg.norm(predicted[best][labelled].mean(axis=0) - centre) / height)
    if not errors:
        raise PoetError(f"{checkpoint} predicts no person on the first {limit} images of {annotations}")
    per_keypoint = np.nanmedian(np.stack(errors), axis=0)
    report = {name: float(value) for name, value in zip(KEYPOINT_NAMES, per_keypoint, strict=True)}
    report["centre"] = float(np.median(centre_errors))
    report["people fitting better with left and right swapped"] = float(np.mean(swapped_better))
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path, help="COCO person-keypoints JSON")
    parser.add_argument("--checkpoint", type=Path, help="also measure this model's keypoint errors")
    parser.add_argument("--images", type=Path, help="image folder of the annotations (with --checkpoint)")
    parser.add_argument("--limit", type=int, default=100, help="images for --checkpoint (default: 100)")
    args = parser.parse_args(argv)
    if args.checkpoint and not args.images:
        parser.error("--checkpoint needs --images")
    try:
        scores = oracle_scores(args.annotations)
        errors = model_errors(args.checkpoint, args.annotations, args.images, args.limit) if args.checkpoint else {}
    except PoetError as error:
        parser.exit(2, f"error: {error}\n")
    print(f"oracle predictions on {args.annotations} (OKS AP / AP50):")
    for name, stats in scores.items():
        print(f"  {name:40s} {stats['AP']:.3f} / {stats['AP50']:.3f}")
    if errors:
        print(f"{args.checkpoint}: median error as a fraction of the person's height")
        for name, value in errors.items():
            print(f"  {name:50s} {value:.3f}")


if __name__ == "__main__":
    main()
