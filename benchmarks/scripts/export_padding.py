"""How close a fixed-size ONNX fed a letterboxed photograph comes to PyTorch on the unpadded photograph.

The exported graph takes the padding mask as an input: the transformer ignores padded positions, and
a padding-invariant model (``PoetConfig.padding_invariant``, the default) zeroes them before every
spatial convolution and pooling of the ResNet, so the two should agree to float rounding. (With
``padding_invariant=False``, the authors' model, the padding leaks in near the right/bottom edge.) This prints, per
aspect-ratio class of coco-mini val photographs, the largest keypoint difference in original-image
pixels over all person queries, the largest person-score difference, and whether the number of
people above the score threshold agrees; the same ONNX fed an all-False mask is the control.

    python benchmarks/scripts/export_padding.py --checkpoint /tmp/recipe6/best.pth
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from poet.checkpoint import load_model
from poet.images import read_image
from poet.optimize.export import export_onnx
from poet.processing import decode_keypoints, fit_size, normalize, person_scores, preprocess, resize_image


def _aspect_classes(images: list[np.ndarray], per_class: int) -> dict[str, list[np.ndarray]]:
    ratios = [image.shape[1] / image.shape[0] for image in images]
    order = np.argsort(ratios)
    squareness = np.argsort([abs(np.log(r)) for r in ratios])
    return {
        "portrait": [images[i] for i in order[:per_class]],
        "landscape": [images[i] for i in order[::-1][:per_class]],
        "square": [images[i] for i in squareness[:per_class]],
    }


def _poses(logits: np.ndarray, kpts: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Every query's person score (0 unless labelled person) and keypoints in original pixels."""
    scores, labels = person_scores(logits)
    keypoints = decode_keypoints(kpts)[..., :2] * np.array([size[1], size[0]])
    return np.where(labels == 1, scores, 0.0), keypoints


def compare(
    checkpoint: Path, input_size: tuple[int, int] | None, images: dict[str, list[np.ndarray]], threshold: float
):
    model = load_model(checkpoint, input_size=input_size)
    with tempfile.TemporaryDirectory() as work:
        exported = export_onnx(model, Path(work) / "model.onnx", progress=False)
        session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    config = model.preprocess
    print(f"\n{checkpoint} at {config.input_size[0]}x{config.input_size[1]} (score threshold {threshold})")
    print(
        "| photos | n | max keypoint diff px | max score diff | people count agrees | control: no mask, kpt diff px |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, photos in images.items():
        kpt_diff, score_diff, agree, unmasked_diff = 0.0, 0.0, 0, 0.0
        for photo in photos:
            size = photo.shape[:2]
            batch, mask, _ = preprocess([photo], config)
            logits, kpts = session.run(None, {"images": batch, "mask": mask})
            no_mask_logits, no_mask_kpts = session.run(None, {"images": batch, "mask": np.zeros_like(mask)})
            resized = normalize(resize_image(photo, fit_size(size, config.input_size)), config.mean, config.std)
            with torch.inference_mode():
                reference = model(torch.from_numpy(resized)[None])
            ref_scores, ref_kpts = _poses(reference["pred_logits"][0].numpy(), reference["pred_kpts"][0].numpy(), size)
            scores, keypoints = _poses(logits[0], kpts[0], size)
            _, unmasked = _poses(no_mask_logits[0], no_mask_kpts[0], size)
            kpt_diff = max(kpt_diff, float(np.abs(keypoints - ref_kpts).max()))
            unmasked_diff = max(unmasked_diff, float(np.abs(unmasked - ref_kpts).max()))
            score_diff = max(score_diff, float(np.abs(scores - ref_scores).max()))
            agree += int((scores >= threshold).sum() == (ref_scores >= threshold).sum())
        print(
            f"| {name} | {len(photos)} | {kpt_diff:.1e} | {score_diff:.1e} | {agree}/{len(photos)} "
            f"| {unmasked_diff:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, action="append", required=True, help="repeat for several models")
    parser.add_argument("--input-size", type=int, nargs=2, help="override every checkpoint's letterbox size")
    parser.add_argument("--coco", type=Path, required=True, help="COCO-layout root whose val2017/ photographs are used")
    parser.add_argument("--per-class", type=int, default=5, help="photographs per aspect-ratio class")
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    images = [read_image(p) for p in sorted((args.coco / "val2017").glob("*.jpg"))]
    classes = _aspect_classes(images, args.per_class)
    for checkpoint in args.checkpoint:
        compare(checkpoint, tuple(args.input_size) if args.input_size else None, classes, args.threshold)


if __name__ == "__main__":
    main()
