"""Reading images and checking arrays before they reach the model (torch-free, shared with the runtime).

Every image is brought to what POET was trained on: 8-bit, three channels. Grayscale, alpha and
16-bit inputs are converted with a logged warning; anything else gets an :class:`ImageError`
naming the image and what was expected.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from poet.errors import ImageError

logger = logging.getLogger("poet")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def to_bgr_uint8(image: np.ndarray, source: str = "image", rgb: bool = False) -> np.ndarray:
    """Validate an array and return it as HxWx3 uint8 BGR; ``rgb=True`` says the input channels are RGB."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{source}: expected {EXPECTED_IMAGE}; got {_describe(image)}")
    problem = _array_problem(image)
    if problem is not None:
        raise ImageError(f"{source} is {_describe(image)}: {problem}")
    if image.dtype == np.uint16:
        logger.warning("%s is 16-bit; scaling to 8-bit", source)
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        logger.warning("%s is grayscale; replicating it to three channels", source)
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        logger.warning("%s has an alpha channel; ignoring it", source)
        image = image[..., :3]
    return np.ascontiguousarray(image[..., ::-1] if rgb else image)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 BGR (OpenCV's order)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image {path} not found")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageError(f"{path} is not a readable image (expected a JPEG, PNG, BMP, WebP or TIFF file)")
    return to_bgr_uint8(image, source=str(path))


def read_or_skip(path: Path, skipped: list[Path]) -> np.ndarray | None:
    """:func:`read_image`, or None for an unreadable file, logged as skipped and added to ``skipped``.

    The one rule for a folder that holds a file that is not an image, in every tool that reads folders
    (``poet-run``, ``poet-predict``, ``poet-eval``, calibration): skip it with a warning naming it, go on with
    the rest, count it in the summary (:func:`skipped_note`), and fail only when no image is left
    (:func:`no_image_left`).
    """
    try:
        return read_image(path)
    except ImageError as error:
        logger.warning("skipping %s", error)
        skipped.append(path)
        return None


def skipped_note(skipped: Sequence[Path]) -> str:
    """The summary's word on the skipped images: "" or "; 2 unreadable images skipped"."""
    count = len(skipped)
    return f"; {count} unreadable image{'' if count == 1 else 's'} skipped" if count else ""


def no_image_left(skipped: Sequence[Path], where: str) -> ImageError:
    """The error once every image of ``where`` was skipped as unreadable."""
    return ImageError(f"none of the {len(skipped)} images in {where} could be read (first: {skipped[0]})")


ImageInput = str | Path | np.ndarray

EXPECTED_IMAGE = "an HxWx3 uint8 BGR array (as cv2.imread gives it) or a path"


def _describe(value: object) -> str:
    """What was given instead of an image, in a few words: its type, and an array's shape and dtype."""
    if value is None:
        return "None (what cv2.imread gives for a file it cannot read: check the path)"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"type {type(value).__name__}"


def _array_problem(image: np.ndarray) -> str | None:
    """Why ``image`` is no image :func:`to_bgr_uint8` can take or convert, or None if it is one."""
    if image.ndim == 4:
        return "a batch of images? pass a list of HxWx3 arrays"
    if image.ndim not in (2, 3):
        return "expected 3 dimensions (height, width, channels)"
    if image.shape[0] == 0 or image.shape[1] == 0:
        return "it has no pixels (expected a non-zero size)"
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        return f"expected 3 channels (BGR), got {image.shape[2]}; 1 (grayscale) and 4 (alpha) are converted"
    if image.dtype.kind == "f":
        return (
            "the pixels are floats; scale them to 0-255 first (expected uint8 pixels), "
            "e.g. (image * 255).clip(0, 255).astype(np.uint8)"
        )
    if image.dtype not in (np.uint8, np.uint16):
        return f"expected uint8 pixels, 0-255 ({image.dtype} is not an image type; 16-bit is converted)"
    return None


def check_image_input(images: object) -> None:
    """Refuse what a predictor's ``predict`` cannot take, in one line naming what was given and why.

    What it can take is read and converted (grayscale, alpha, 16-bit, with a warning) by :func:`load_images`.
    """
    items: list[tuple[str, object]]
    if isinstance(images, (str, Path, np.ndarray)):
        items = [("image", images)]
    elif isinstance(images, Sequence) and not isinstance(images, (bytes, bytearray, memoryview)):
        items = [(f"image {index} of the list", item) for index, item in enumerate(images)]
    else:
        raise ImageError(f"predict expected {EXPECTED_IMAGE}, or a list of them; got {_describe(images)}")
    for said, item in items:
        if isinstance(item, np.ndarray):
            problem = _array_problem(item)
            if problem is not None:
                raise ImageError(f"predict expected {EXPECTED_IMAGE}; {said} is {_describe(item)}: {problem}")
        elif isinstance(item, (str, Path)):
            if Path(item).is_dir():
                raise ImageError(f"{said} {item} is a folder; expected an image file (poet-run takes folders)")
        else:
            raise ImageError(f"predict expected {EXPECTED_IMAGE}; {said} is {_describe(item)}")


def check_arrays(images: Sequence[np.ndarray]) -> None:
    """A predictor's ``predict_arrays`` takes HxWx3 BGR uint8 arrays only; anything else is one clear error."""
    if isinstance(images, np.ndarray) or not isinstance(images, Sequence):
        raise ImageError(f"predict_arrays expected a list of HxWx3 uint8 BGR arrays; got {_describe(images)}")
    for index, image in enumerate(images):
        if not (
            isinstance(image, np.ndarray)
            and image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
            and image.shape[0] > 0
            and image.shape[1] > 0
        ):
            raise ImageError(
                f"predict_arrays expected HxWx3 uint8 BGR arrays (predict converts paths, grayscale, alpha and "
                f"16-bit images); image {index} is {_describe(image)}"
            )


def load_images(images: ImageInput | Sequence[ImageInput], rgb: bool = False) -> tuple[list[np.ndarray], bool]:
    """Paths and arrays -> checked BGR uint8 arrays, and whether a single image (not a list) was given.

    What every predictor (PyTorch or the runtime) accepts: a path, an array as OpenCV gives it
    (``rgb=True`` for RGB arrays), or a list of them; anything else is refused by :func:`check_image_input`.
    """
    check_image_input(images)
    single = isinstance(images, (str, Path, np.ndarray))
    items: Sequence[ImageInput] = [images] if isinstance(images, (str, Path, np.ndarray)) else images
    arrays = [
        read_image(item) if isinstance(item, (str, Path)) else to_bgr_uint8(item, f"image {i}", rgb=rgb)
        for i, item in enumerate(items)
    ]
    return arrays, single


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"image folder {folder} not found")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
