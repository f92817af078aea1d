"""The work behind ``poet-eval`` and ``poet-predict``: loops over files with progress bars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from poet.checkpoint import load_model
from poet.drawing import draw_poses, save_image
from poet.errors import ImageError
from poet.evaluation import evaluate_predictions
from poet.fileio import check_outputs, unique_names, write_json
from poet.images import list_images, no_image_left, read_or_skip
from poet.model.poet import POET
from poet.predictor import Predictor


def evaluate_model(model: POET, annotations: str | Path, images_dir: str | Path, **options: Any) -> dict[str, float]:
    """OKS AP/AR of a model on every image listed in a COCO annotation file.

    All queries labelled "person" are submitted (no threshold), as the authors evaluate; COCOeval
    keeps the 20 best per image. Images go through the shared letterbox, as in export and runtime.
    ``options`` are those of :func:`poet.evaluation.evaluate_predictions` (batch_size, limit, results_path,
    progress).
    """
    was_training = model.training
    batch_size = options.setdefault("batch_size", 4)
    predictor = Predictor(model, next(model.parameters()).device, score_threshold=0.0, batch_size=batch_size)
    try:
        return evaluate_predictions(predictor.predict_arrays, annotations, images_dir, **options)
    finally:
        model.train(was_training)


def evaluate_checkpoint(
    checkpoint: str | Path,
    annotations: str | Path,
    images_dir: str | Path,
    device: str = "cpu",
    input_size: tuple[int, int] | None = None,
    **options: Any,
) -> dict[str, float]:
    """:func:`evaluate_model` on a checkpoint file (ours or the authors')."""
    return evaluate_model(load_model(checkpoint, device, input_size), annotations, images_dir, **options)


def _expand(sources: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for source in sources:
        files.extend(list_images(source) if source.is_dir() else [source])
    return files


def predict_files(
    checkpoint: str | Path,
    sources: Sequence[Path],
    output_dir: str | Path,
    device: str = "cpu",
    input_size: tuple[int, int] | None = None,
    score_threshold: float = 0.5,
    max_people: int | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> tuple[list[Path], list[Path]]:
    """Draw poses on each image into ``output_dir`` (PNG) and write all poses to ``poses.json``.

    Returns the drawings written and the unreadable files skipped (:func:`poet.images.read_or_skip`).
    """
    output_dir = Path(output_dir)
    files = _expand(sources)
    if not files:
        raise ImageError(f"no images in {', '.join(map(str, sources))} (expected .jpg, .png, ... files or folders)")
    targets = [output_dir / name for name in unique_names([f"{path.stem}_poses.png" for path in files])]
    check_outputs([output_dir / "poses.json", *targets], files)
    predictor = Predictor(load_model(checkpoint, device, input_size), device, score_threshold, max_people, batch_size)
    written: list[Path] = []
    skipped: list[Path] = []
    records: list[dict[str, Any]] = []
    for path, target in tqdm(
        zip(files, targets, strict=True), total=len(files), desc="predicting", unit="img", disable=not progress
    ):
        image = read_or_skip(path, skipped)
        if image is None:
            continue
        poses = predictor.predict_arrays([image])[0]
        save_image(target, draw_poses(image, poses))
        written.append(target)
        records.append({"image": str(path), "drawn": target.name, "poses": [pose.to_dict() for pose in poses]})
    if not written:
        raise no_image_left(skipped, ", ".join(map(str, sources)))
    write_json(output_dir / "poses.json", records, indent=1)
    return written, skipped
