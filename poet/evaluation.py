"""COCO keypoint evaluation: results JSON from poses, and OKS AP/AR through pycocotools.

torch-free, so the runtime and benchmark stages score their poses with exactly the same code. pycocotools (the
model extra) is imported where it is used, so the COCO layout helpers also work on the base install.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from poet.errors import DatasetError
from poet.fileio import write_json
from poet.images import read_image
from poet.processing import Pose

if TYPE_CHECKING:
    from pycocotools.coco import COCO

STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
_REQUIRED_ANNOTATION_FIELDS = ("image_id", "category_id", "keypoints", "bbox")
_REQUIRED_IMAGE_FIELDS = ("id", "file_name", "width", "height")


def coco_split_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """COCO's own layout: ``root/annotations/person_keypoints_<split>.json`` and the images in ``root/<split>``."""
    root = Path(root)
    return root / "annotations" / f"person_keypoints_{split}.json", root / split


def resolve_coco_paths(
    data: Path | None, split: str, annotations: Path | None = None, images: Path | None = None
) -> tuple[Path, Path]:
    """Annotation file and image folder from a COCO-layout root (``annotations/``, ``<split>/``) or explicit paths.

    ``data`` may also be an annotation file itself, when ``images`` names its folder.
    """
    if data is not None and data.is_file() and annotations is None:
        if images is None:
            raise DatasetError(f"{data} is an annotation file: give its image folder too (--images)")
        annotations = data
    if annotations is None or images is None:
        if data is None:
            raise DatasetError("give --data COCO_ROOT, or both --annotations FILE and --images DIR")
        if not data.is_dir():
            raise DatasetError(f"{data} not found (expected a COCO root folder or an annotation JSON)")
        default_annotations, default_images = coco_split_paths(data, split)
        annotations = annotations or default_annotations
        images = images or default_images
    if not images.is_dir():
        raise DatasetError(f"image folder {images} not found")
    return annotations, images


def listed_images(
    coco: COCO, annotations: str | Path, images_dir: str | Path, limit: int | None = None
) -> tuple[list[dict[str, Any]], list[Path]]:
    """The first ``limit`` image entries of a loaded COCO file by id, and their paths; every one must exist.

    Checked before any work starts, so a folder that does not match its annotation file is one clear line.
    """
    entries = sorted(coco.dataset["images"], key=lambda item: item["id"])[:limit]
    paths = [Path(images_dir) / entry["file_name"] for entry in entries]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} images listed in {annotations} are not in {images_dir} (first: {missing[0]})"
        )
    return entries, paths


def _check_items(items: Any, key: str, fields: Sequence[str], path: Path) -> None:
    if not isinstance(items, list):
        raise DatasetError(f"{path}: '{key}' must be a list, got {type(items).__name__}")
    for index, item in enumerate(items):
        missing = [name for name in fields if name not in item]
        if missing:
            raise DatasetError(f"{path}: {key}[{index}] lacks {', '.join(repr(m) for m in missing)}")
        if key == "annotations" and len(item["keypoints"]) != 51:
            raise DatasetError(f"{path}: {key}[{index}] has {len(item['keypoints'])} keypoint values, expected 51")


def load_coco_keypoints(path: str | Path) -> COCO:
    """Load and check a COCO person-keypoints annotation file.

    Missing ``num_keypoints``, ``area`` and ``iscrowd`` are derived (from keypoints and bbox) since
    pycocotools needs them; anything it cannot derive is reported with the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"annotation file {path} not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a COCO annotation object, got a JSON {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"{path} has no '{key}' list: expected a COCO person-keypoints annotation file")
    _check_items(data["images"], "images", _REQUIRED_IMAGE_FIELDS, path)
    _check_items(data["annotations"], "annotations", _REQUIRED_ANNOTATION_FIELDS, path)
    for annotation in data["annotations"]:
        visibility = annotation["keypoints"][2::3]
        annotation.setdefault("num_keypoints", int(sum(v > 0 for v in visibility)))
        annotation.setdefault("area", float(annotation["bbox"][2] * annotation["bbox"][3]))
        annotation.setdefault("iscrowd", 0)
    for index, annotation in enumerate(data["annotations"]):
        annotation.setdefault("id", index + 1)
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_results(poses_per_image: Iterable[tuple[int, Sequence[Pose]]]) -> list[dict[str, Any]]:
    """COCO keypoint results JSON entries for ``(image_id, poses)`` pairs."""
    return [pose.to_coco(image_id) for image_id, poses in poses_per_image for pose in poses]


def evaluate_keypoints(
    coco_gt: COCO, results: list[dict[str, Any]], image_ids: Sequence[int] | None = None
) -> dict[str, float]:
    """The ten standard COCO keypoint numbers (OKS AP/AR, maxDets 20) for ``results`` on ``coco_gt``."""
    image_ids = sorted(coco_gt.getImgIds()) if image_ids is None else sorted(image_ids)
    if not results:
        return dict.fromkeys(STAT_NAMES, 0.0)
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # pycocotools reports -1 where a category/area range has no ground truth; keep that meaning.
    return {name: float(value) for name, value in zip(STAT_NAMES, np.asarray(evaluator.stats), strict=True)}


def format_table(stats: dict[str, float], title: str = "OKS keypoint evaluation") -> str:
    """A two-row Markdown table of the ten numbers."""
    header = "| " + " | ".join(STAT_NAMES) + " |"
    rule = "|" + "|".join("---:" for _ in STAT_NAMES) + "|"
    values = "| " + " | ".join(f"{stats[name]:.3f}" for name in STAT_NAMES) + " |"
    return f"{title}\n\n{header}\n{rule}\n{values}"


def evaluate_predictions(
    predict: Callable[[list[np.ndarray]], list[list[Pose]]],
    annotations: str | Path,
    images_dir: str | Path,
    *,
    batch_size: int = 4,
    limit: int | None = None,
    results_path: str | Path | None = None,
    progress: bool = True,
    desc: str = "evaluating",
) -> dict[str, float]:
    """OKS AP/AR of any pose predictor (PyTorch, ONNX Runtime, TensorRT) on every image of a COCO keypoint file.

    ``predict`` maps a batch of BGR images to their poses; one loop for all backends keeps their AP comparable.
    """
    from tqdm import tqdm

    coco = load_coco_keypoints(annotations)
    entries, paths = listed_images(coco, annotations, images_dir, limit)
    per_image: list[tuple[int, Sequence[Pose]]] = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            poses = predict([read_image(p) for p in chunk])
            per_image.extend(zip((e["id"] for e in entries[start : start + batch_size]), poses, strict=True))
            bar.update(len(chunk))
    results = coco_results(per_image)
    if results_path is not None:
        write_json(results_path, results)
    return evaluate_keypoints(coco, results, [entry["id"] for entry in entries])
