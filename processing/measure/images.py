"""Turn user images (PIL, numpy, paths) into float arrays in [0, 1]; errors name the field and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

ImageLike = Union[Image.Image, np.ndarray, str, Path]


class UnusableImageError(ValueError):
    """The image was read but holds nothing measurable (blank, saturated, no retina); the message says why."""


def _open(image: ImageLike, field: str) -> Image.Image | np.ndarray:
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{field}: no image file at {path}; give a PIL image, an array or an existing path.")
        return Image.open(path)
    if isinstance(image, (Image.Image, np.ndarray)):
        return image
    raise TypeError(f"{field}: expected a PIL image, a numpy array or a path, got {type(image).__name__}.")


def _scale(array: np.ndarray, field: str) -> np.ndarray:
    if array.size == 0:
        raise ValueError(f"{field}: the image is empty.")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise TypeError(f"{field}: the array must be real numbers (uint8 0-255 or float 0-1), got dtype {array.dtype}.")
    if np.issubdtype(array.dtype, np.integer):
        top = 65535.0 if array.max(initial=0) > 255 else 255.0
        return array.astype(np.float32) / top
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{field}: the image holds NaN or infinite values; give finite pixels.")
    if array.min() < 0 or array.max() > 1:
        raise ValueError(f"{field}: a float image must lie in [0, 1] (got {array.min():g}..{array.max():g}); divide by 255.")
    return array


def as_gray(image: ImageLike, field: str = "oct") -> np.ndarray:
    """A 2-D float32 array in [0, 1] from a grayscale image ("L", "I;16", or an RGB scan read as gray)."""
    image = _open(image, field)
    if isinstance(image, Image.Image):
        if image.mode not in {"L", "I;16", "I", "F"}:
            image = image.convert("L")
        array = np.asarray(image)
    else:
        array = image
        if array.ndim == 3 and array.shape[2] in (3, 4):
            array = array[..., :3].mean(axis=2).astype(array.dtype)
    if array.ndim != 2:
        raise ValueError(f"{field}: expected a 2-D grayscale B-scan (rows x columns), got shape {array.shape}.")
    if min(array.shape) < 32:
        raise ValueError(f"{field}: the B-scan is {array.shape[0]}x{array.shape[1]} px; at least 32x32 is needed.")
    return _scale(np.asarray(array), field)


def as_rgb(image: ImageLike, field: str = "cfp") -> np.ndarray:
    """An (H, W, 3) float32 array in [0, 1] from a colour fundus photograph; refuses grayscale input."""
    image = _open(image, field)
    if isinstance(image, Image.Image):
        if image.mode in {"L", "I", "I;16", "F", "1"}:
            raise ValueError(f"{field}: a colour fundus photograph is needed, got a {image.mode!r} (grayscale) image; "
                             "give the RGB photograph (image.convert('RGB') only if it really is colour).")
        array = np.asarray(image.convert("RGB"))
    else:
        array = image
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"{field}: expected an RGB image of shape (H, W, 3), got shape {array.shape}.")
    if min(array.shape[:2]) < 64:
        raise ValueError(f"{field}: the photograph is {array.shape[0]}x{array.shape[1]} px; at least 64x64 is needed.")
    return _scale(np.asarray(array[..., :3]), field)
