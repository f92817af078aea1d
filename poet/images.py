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
        raise ImageError(f"{source}: expected a numpy array (HxWx3 uint8), got {type(image).__name__}")
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"{source}: expected an HxW or HxWxC image with non-zero size, got shape {image.shape}")
    if image.dtype == np.uint16:
        logger.warning("%s is 16-bit; scaling to 8-bit", source)
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"{source}: expected uint8 pixels (0-255), got dtype {image.dtype}")
    if image.ndim == 2 or image.shape[2] == 1:
        logger.warning("%s is grayscale; replicating it to three channels", source)
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels == 4:
        logger.warning("%s has an alpha channel; ignoring it", source)
        image = image[..., :3]
    elif channels != 3:
        raise ImageError(f"{source}: expected 1, 3 or 4 channels, got {channels}")
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


ImageInput = str | Path | np.ndarray


def load_images(images: ImageInput | Sequence[ImageInput], rgb: bool = False) -> tuple[list[np.ndarray], bool]:
    """Paths and arrays -> checked BGR uint8 arrays, and whether a single image (not a list) was given.

    What every predictor (PyTorch or the runtime) accepts: a path, an array as OpenCV gives it
    (``rgb=True`` for RGB arrays), or a list of them.
    """
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
