"""COCO keypoint evaluation: results JSON from poses, and OKS AP/AR through pycocotools.

torch-free, so the runtime and benchmark stages score their poses with exactly the same code. pycocotools (the
model extra) is imported where it is used, so the COCO layout helpers also work on the base install.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from poet.errors import DatasetError
from poet.fileio import write_json
from poet.images import no_image_left, read_or_skip
from poet.processing import PERSON_CLASS, Pose
from poet.skeleton import KEYPOINT_NAMES, NUM_KEYPOINTS

if TYPE_CHECKING:
    from pycocotools.coco import COCO

logger = logging.getLogger("poet")
STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


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

    Checked before any work starts, so a folder that does not match its annotation file, or a file that lists no
    image (which would score a table of zeros), is one clear line.
    """
    if not coco.dataset["images"]:
        raise DatasetError(f"{annotations}: 'images' is empty: expected at least one image to evaluate")
    entries = sorted(coco.dataset["images"], key=lambda item: item["id"])[:limit]
    paths = [Path(images_dir) / entry["file_name"] for entry in entries]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} images listed in {annotations} are not in {images_dir} (first: {missing[0]})"
        )
    return entries, paths


# ---------------------------------------------------------------- checking a COCO person-keypoints file
#
# One pass over plain dicts, with set and sum tricks for the 51 keypoint values, so COCO's 250k training
# annotations check in about a second; the slow search for the exact culprit runs only on a bad record.
# Structural problems (the file's layout, image records, ids and references) are errors everywhere; the
# content of one annotation (its keypoints, box, category and counts) may instead be skipped, for training.

KEYPOINT_VALUES = 3 * NUM_KEYPOINTS  # 17 x (x, y, visibility)
_NUMBER_TYPES = frozenset({int, float})  # type(), so JSON true/false (bool) is not a number
_VISIBILITIES = frozenset({0, 1, 2})
_KEYPOINTS_EXPECTED = f"expected {KEYPOINT_VALUES} ({NUM_KEYPOINTS} x, y, visibility)"
_CONTENT_FIELDS = {
    "category_id": f"the person category's id, {PERSON_CLASS}",
    "keypoints": f"{KEYPOINT_VALUES} numbers ({NUM_KEYPOINTS} x, y, visibility)",
    "bbox": "[x, y, width, height]",
}


@dataclass(frozen=True)
class BadAnnotation:
    """An annotation whose content is unusable, left out when loading with ``skip_bad_annotations``.

    ``message`` names the record and the field, without the file: ``annotations[3] (id 17): keypoints[5] is NaN,
    expected a finite number``.
    """

    index: int
    image_id: int
    message: str

    def __str__(self) -> str:
        return self.message


def _describe(value: Any) -> str:
    """A JSON value as a user wrote it, short and on one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= 24 else f"a {len(text)}-digit number"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 40 else f'{text[:36]}..."'
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _record(key: str, index: int, item: Any) -> str:
    """``annotations[12] (id 4567)``, or ``annotations[12]`` for a record without a usable id."""
    if isinstance(item, dict) and "id" in item:
        return f"{key}[{index}] (id {_describe(item['id'])})"
    return f"{key}[{index}]"


def _lacks(key: str, index: int, item: Any, field: str, expected: str) -> str:
    ident = f" (id {_describe(item['id'])})" if "id" in item else ""
    return f"{key}[{index}] lacks {field!r}{ident}: expected {expected}"


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) in _NUMBER_TYPES


def _fits_float(value: int | float) -> bool:
    """Finite, and representable as a float (an integer of 400 digits is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _numbers_problem(values: list[Any], field: str) -> str | None:
    """The first value of a list that is not a finite number, as ``field[j] is ..., expected ...``; else None."""
    if not _NUMBER_TYPES.issuperset(map(type, values)):
        for j, value in enumerate(values):
            if not _is_number(value):
                return f"{field}[{j}] is {_describe(value)}, expected a number"
    try:
        if math.isfinite(sum(values)):
            return None
    except OverflowError:
        pass
    # The sum is not finite: a NaN or an infinity, or finite values too large to add up (then all is well).
    for j, value in enumerate(values):
        if not _fits_float(value):
            return f"{field}[{j}] is {_describe(value)}, expected a finite number"
    return None


def _keypoints_problem(keypoints: Any) -> str | None:
    if type(keypoints) is not list:
        return f"keypoints is {_describe(keypoints)}, expected a list of {KEYPOINT_VALUES} numbers"
    if len(keypoints) != KEYPOINT_VALUES:
        return f"keypoints has {len(keypoints)} values, {_KEYPOINTS_EXPECTED}"
    problem = _numbers_problem(keypoints, "keypoints")
    if problem is not None:
        return problem
    visibilities = keypoints[2::3]
    if not _VISIBILITIES.issuperset(visibilities):
        for k, value in enumerate(visibilities):
            if value not in _VISIBILITIES:
                return (
                    f"keypoints[{3 * k + 2}] (visibility of {KEYPOINT_NAMES[k]}) is {_describe(value)}, "
                    "expected 0, 1 or 2"
                )
    return None


def _bbox_problem(bbox: Any) -> str | None:
    if type(bbox) is not list or len(bbox) != 4:
        return f"bbox is {_describe(bbox)}, expected [x, y, width, height]"
    problem = _numbers_problem(bbox, "bbox")
    if problem is not None:
        return problem
    if bbox[2] < 0 or bbox[3] < 0:
        return f"bbox has width {_describe(bbox[2])} and height {_describe(bbox[3])}, expected both 0 or more"
    return None


def _content_problem(annotation: dict[str, Any], key: str, index: int, person_id: int) -> str | None:
    """What is wrong with one annotation's content, as ``annotations[3] (id 17): field ...``; None if nothing."""
    for field, expected in _CONTENT_FIELDS.items():
        if field not in annotation:
            return _lacks(key, index, annotation, field, expected)
    problem = None
    category = annotation["category_id"]
    if not (_is_int(category) and category == person_id):
        problem = f"category_id is {_describe(category)}, expected {person_id} (person)"
    if problem is None:
        problem = _keypoints_problem(annotation["keypoints"]) or _bbox_problem(annotation["bbox"])
    if problem is None and "num_keypoints" in annotation:
        count = annotation["num_keypoints"]
        if not (_is_int(count) and 0 <= count <= NUM_KEYPOINTS):
            problem = f"num_keypoints is {_describe(count)}, expected a whole number from 0 to {NUM_KEYPOINTS}"
    if problem is None and "area" in annotation:
        area = annotation["area"]
        if not (_is_number(area) and _fits_float(area) and area >= 0):
            problem = f"area is {_describe(area)}, expected a finite number, 0 or more"
    if problem is None and "iscrowd" in annotation:
        crowd = annotation["iscrowd"]
        if not (_is_int(crowd) and crowd in (0, 1)):
            problem = f"iscrowd is {_describe(crowd)}, expected 0 or 1"
    return None if problem is None else f"{_record(key, index, annotation)}: {problem}"


def _person_category(categories: list[Any], path: Path) -> int:
    """The id of the person category, which must be COCO's (results are written as that category)."""
    for index, category in enumerate(categories):
        if isinstance(category, dict) and category.get("name") == "person":
            if _is_int(category.get("id")) and category["id"] == PERSON_CLASS:
                return PERSON_CLASS
            raise DatasetError(
                f"{path}: {_record('categories', index, category)}: the person category has id "
                f"{_describe(category.get('id'))}, expected {PERSON_CLASS} (COCO's)"
            )
    raise DatasetError(
        f"{path}: 'categories' has no person category: expected "
        f'{{"id": {PERSON_CLASS}, "name": "person"}} in a COCO person-keypoints file'
    )


def _check_images(images: list[Any], path: Path) -> set[int]:
    """Every image record has a unique integer id and a file name; returns the ids."""
    ids: dict[int, int] = {}
    for index, image in enumerate(images):
        if not isinstance(image, dict):
            raise DatasetError(f"{path}: images[{index}] is {_describe(image)}, expected an image object")
        for field, expected in (("id", "an integer image id"), ("file_name", "the image's file name")):
            if field not in image:
                raise DatasetError(f"{path}: {_lacks('images', index, image, field, expected)}")
        image_id, name = image["id"], image["file_name"]
        if not _is_int(image_id):
            raise DatasetError(f"{path}: images[{index}]: id is {_describe(image_id)}, expected an integer")
        record = f"images[{index}] (id {image_id})"
        if type(name) is not str or not name:
            raise DatasetError(f"{path}: {record}: file_name is {_describe(name)}, expected a file name")
        for side in ("width", "height"):
            if side in image and not (_is_int(image[side]) and image[side] > 0):
                raise DatasetError(
                    f"{path}: {record}: {side} is {_describe(image[side])}, expected a positive whole number"
                )
        first = ids.setdefault(image_id, index)
        if first != index:
            raise DatasetError(f"{path}: {record}: image id {image_id} is also images[{first}]'s: ids must be unique")
    return set(ids)


def check_coco_keypoints(data: Any, path: str | Path, *, skip_bad_annotations: bool = False) -> list[BadAnnotation]:
    """Check a parsed COCO person-keypoints file in place, before any work uses it.

    Raises :class:`DatasetError`, one line naming ``path``, the record and the field, for the layout, the image
    records, duplicate image or annotation ids and annotations of unlisted images. An annotation whose content is
    unusable (keypoints that are not 51 finite numbers with visibilities 0/1/2, a box that is not 4 finite numbers
    with non-negative sides, a wrong category or count) is an error too, unless ``skip_bad_annotations``: then it
    is removed from ``data["annotations"]`` and returned. Missing ``num_keypoints``, ``area``, ``iscrowd`` and
    ``id`` of the annotations kept are then filled in (pycocotools needs them).
    """
    path = Path(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a COCO annotation object, got a JSON {_json_type(data)}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"{path} has no '{key}' list: expected a COCO person-keypoints annotation file")
        if not isinstance(data[key], list):
            raise DatasetError(f"{path}: '{key}' is {_describe(data[key])}, expected a list")
    person_id = _person_category(data["categories"], path)
    image_ids = _check_images(data["images"], path)
    key = "annotations"
    annotations: list[Any] = data[key]
    annotation_ids: dict[int, int] = {}
    bad: list[BadAnnotation] = []
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            raise DatasetError(f"{path}: {key}[{index}] is {_describe(annotation)}, expected an annotation object")
        if "id" in annotation:
            annotation_id = annotation["id"]
            if not _is_int(annotation_id):
                raise DatasetError(f"{path}: {key}[{index}]: id is {_describe(annotation_id)}, expected an integer")
            first = annotation_ids.setdefault(annotation_id, index)
            if first != index:
                raise DatasetError(
                    f"{path}: {key}[{index}] (id {annotation_id}): annotation id {annotation_id} is also "
                    f"{key}[{first}]'s: ids must be unique"
                )
        if "image_id" not in annotation:
            raise DatasetError(f"{path}: {_lacks(key, index, annotation, 'image_id', 'the id of a listed image')}")
        image_id = annotation["image_id"]
        if not (_is_int(image_id) and image_id in image_ids):
            what = "no listed image's id" if _is_int(image_id) else "not an integer"
            raise DatasetError(
                f"{path}: {_record(key, index, annotation)}: image_id {_describe(image_id)} is {what}, "
                "expected the id of an image in 'images'"
            )
        problem = _content_problem(annotation, key, index, person_id)
        if problem is not None:
            if not skip_bad_annotations:
                raise DatasetError(f"{path}: {problem}")
            bad.append(BadAnnotation(index, image_id, problem))
    if bad:
        dropped = {item.index for item in bad}
        annotations[:] = [a for i, a in enumerate(annotations) if i not in dropped]
    next_id = max(annotation_ids, default=0) + 1
    for annotation in annotations:
        if "num_keypoints" not in annotation:
            annotation["num_keypoints"] = sum(v > 0 for v in annotation["keypoints"][2::3])
        if "area" not in annotation:
            annotation["area"] = float(annotation["bbox"][2] * annotation["bbox"][3])
        annotation.setdefault("iscrowd", 0)
        if "id" not in annotation:
            annotation["id"] = next_id
            next_id += 1
    return bad


def _json_type(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def read_coco_keypoints(path: str | Path, *, skip_bad_annotations: bool = False) -> tuple[COCO, list[BadAnnotation]]:
    """Load and check (:func:`check_coco_keypoints`) a COCO person-keypoints file; with the annotations left out.

    The left-out list is empty unless ``skip_bad_annotations`` (training's choice: one bad label need not end a
    run; evaluation's is the default, an error, since a dropped annotation changes AP).
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path} is a folder, expected a COCO annotation JSON file")
    if not path.is_file():
        raise DatasetError(f"annotation file {path} not found")
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path} is not valid JSON: {error}") from error
    except RecursionError:
        raise DatasetError(f"{path} is not valid JSON: nested too deeply") from None
    bad = check_coco_keypoints(data, path, skip_bad_annotations=skip_bad_annotations)
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, bad


def load_coco_keypoints(path: str | Path) -> COCO:
    """Load a COCO person-keypoints annotation file, every record checked; any problem is a :class:`DatasetError`.

    Missing ``num_keypoints``, ``area``, ``iscrowd`` and annotation ``id`` are derived, since pycocotools needs
    them; anything else wrong is reported with the file, the record and the field.
    """
    coco, _ = read_coco_keypoints(path)
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
    An image file that cannot be read is skipped with a warning and left out of the AP, like its annotations.
    """
    from tqdm import tqdm

    coco = load_coco_keypoints(annotations)
    entries, paths = listed_images(coco, annotations, images_dir, limit)
    per_image: list[tuple[int, Sequence[Pose]]] = []
    skipped: list[Path] = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = zip(entries[start : start + batch_size], paths[start : start + batch_size], strict=True)
            read = [(entry["id"], read_or_skip(path, skipped)) for entry, path in chunk]
            kept = [(image_id, image) for image_id, image in read if image is not None]
            if kept:
                poses = predict([image for _, image in kept])
                per_image.extend(zip((image_id for image_id, _ in kept), poses, strict=True))
            bar.update(len(read))
    if not per_image:
        raise no_image_left(skipped, str(images_dir))
    if skipped:
        logger.warning(
            "%d of the %d images could not be read and were skipped; the AP is over the other %d",
            len(skipped),
            len(paths),
            len(per_image),
        )
    results = coco_results(per_image)
    if results_path is not None:
        write_json(results_path, results)
    return evaluate_keypoints(coco, results, [image_id for image_id, _ in per_image])
