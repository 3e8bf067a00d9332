"""Image processors for GROK's two towers: colour fundus photographs (CFP) and OCT B-scans."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image
from transformers.image_processing_base import BatchFeature, ImageProcessingMixin

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_IMAGE_SIDE = 16


def _check_finite(array: np.ndarray, field: str) -> None:
    if not np.isfinite(array).all():
        raise ValueError(f"{field}: the image has NaN or infinite pixels; fix or drop the image.")


def _scale(array: np.ndarray, field: str) -> np.ndarray:
    """Array pixels as float32 in [0, 1]: uint8 / 255, uint16 / 65535; other numbers by their values: within
    [0, 1] as given, within [0, 255] as 8-bit values (/ 255). Anything else has no known bit depth (12-bit OCT
    stored as int16, say) and is refused rather than clipped."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    fix = "convert it to uint8 (0-255), or to float in [0, 1], e.g. array / array.max()"
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{field}: pixel type {array.dtype} is not supported; {fix}.")
    array = array.astype(np.float32)
    _check_finite(array, field)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < 0.0 or high > 255.0:
        raise ValueError(f"{field}: pixel values {low:g} to {high:g} have no known bit depth; {fix}.")
    return array if high <= 1.0 else array / 255.0


def _to_array(image: Any, field: str) -> np.ndarray:
    """An image as a float32 array in [0, 1], shape (H, W) or (H, W, C); errors name ``field``.

    PIL images are scaled by mode, numpy arrays and torch tensors by dtype (see `_scale`).
    """
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            array = np.asarray(image, dtype=np.float32)
            peak = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
            array = array / (peak if image.mode != "F" else max(float(array.max(initial=0)), 1.0))
        elif image.mode in ("L", "RGB"):
            array = np.asarray(image, dtype=np.float32) / 255.0
        elif image.mode in ("RGBA", "LA", "P", "CMYK", "YCbCr", "1"):
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        else:
            raise ValueError(f"{field}: unsupported PIL image mode {image.mode!r}; convert it to 'RGB' or 'L'.")
        _check_finite(array, field)
    elif hasattr(image, "detach") and hasattr(image, "cpu"):  # torch tensor, CHW or HW
        tensor = image.detach().cpu()
        array = _scale((tensor.float() if tensor.is_floating_point() else tensor).numpy(), field)
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = array.transpose(1, 2, 0)
    elif isinstance(image, np.ndarray):
        array = _scale(image, field)
    else:
        raise ValueError(f"{field}: expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}.")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise ValueError(
            f"{field}: expected a grayscale (H, W) or colour (H, W, 3) image, got an array of shape "
            f"{tuple(array.shape)}; an OCT volume goes in one OCT slot as a list of B-scans."
        )
    if min(array.shape[:2]) < MIN_IMAGE_SIDE:
        raise ValueError(
            f"{field}: the image is {array.shape[1]}x{array.shape[0]} px; at least {MIN_IMAGE_SIDE} px per side is needed."
        )
    return np.clip(array, 0.0, 1.0)


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize of a [0, 1] image to size x size."""
    channels = [array] if array.ndim == 2 else [array[..., c] for c in range(array.shape[-1])]
    resized = [
        np.asarray(Image.fromarray(channel.astype(np.float32), mode="F").resize((size, size), Image.BICUBIC))
        for channel in channels
    ]
    out = resized[0] if array.ndim == 2 else np.stack(resized, axis=-1)
    return np.clip(out, 0.0, 1.0)


def _normalize(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(H, W, 3) in [0, 1] -> (3, H, W) standardised."""
    return ((rgb - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1).astype(np.float32)


def fundus_bounding_box(rgb: np.ndarray, threshold: float = 0.06, min_fraction: float = 0.05) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the bright circular fundus field on its dark surround.

    Rows and columns count as inside the field where more than ``min_fraction`` of their pixels exceed
    ``threshold`` in the brightest channel; falls back to the whole image when no field stands out.
    """
    bright = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]) > threshold  # 10x rgb.max(-1)
    height, width = bright.shape
    rows = np.flatnonzero(bright.mean(axis=1) > min_fraction)
    cols = np.flatnonzero(bright.mean(axis=0) > min_fraction)
    if rows.size == 0 or cols.size == 0 or (rows[-1] - rows[0]) < height // 4 or (cols[-1] - cols[0]) < width // 4:
        return 0, height, 0, width
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


class GrokCFPImageProcessor(ImageProcessingMixin):
    """Colour fundus photographs: crop to the fundus field, pad to a square, resize, ImageNet mean/std.

    Returns ``pixel_values`` of shape (num_images, 3, size, size).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int = 224,
        crop_to_fundus: bool = True,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.size = int(size)
        self.crop_to_fundus = crop_to_fundus
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)

    def preprocess_one(self, image: Any, field: str = "cfp image") -> np.ndarray:
        array = _to_array(image, field)
        rgb = np.repeat(array[..., None], 3, axis=-1) if array.ndim == 2 else array
        if self.crop_to_fundus:
            top, bottom, left, right = fundus_bounding_box(rgb)
            rgb = rgb[top:bottom, left:right]
        height, width = rgb.shape[:2]
        side = max(height, width)
        square = np.zeros((side, side, 3), np.float32)
        square[(side - height) // 2 : (side - height) // 2 + height, (side - width) // 2 : (side - width) // 2 + width] = rgb
        return _normalize(_resize(square, self.size), self.image_mean, self.image_std)

    def __call__(self, images: Any, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        images = images if isinstance(images, (list, tuple)) else [images]
        pixel_values = [self.preprocess_one(image, f"cfp images[{i}]") for i, image in enumerate(images)]
        return BatchFeature({"pixel_values": np.stack(pixel_values)}, tensor_type=return_tensors)


class GrokOCTImageProcessor(ImageProcessingMixin):
    """OCT B-scans: grayscale replicated to 3 channels, resized to the tower's square input, ImageNet mean/std.

    Each image is one B-scan or a volume (a list of B-scans, or a (slices, H, W) array). Returns
    ``pixel_values`` (all B-scans, (total_slices, 3, size, size)) and ``slices_per_image``.
    """

    model_input_names = ["pixel_values", "slices_per_image"]

    def __init__(
        self,
        size: int = 224,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        max_slices: int = 64,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.size = int(size)
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.max_slices = int(max_slices)

    def slices(self, image: Any, field: str = "oct image") -> list[Any]:
        """The B-scans of one OCT image (one scan, a list of scans, or a 3-D array of scans)."""
        if isinstance(image, (list, tuple)):
            scans = list(image)
        elif isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] not in (1, 3, 4):
            scans = list(image)
        else:
            scans = [image]
        if not scans:
            raise ValueError(f"{field}: an OCT volume needs at least one B-scan.")
        if len(scans) > self.max_slices:
            raise ValueError(
                f"{field}: {len(scans)} B-scans exceed max_slices={self.max_slices}; pass the central slices "
                "or raise max_slices."
            )
        return scans

    def preprocess_one(self, scan: Any, field: str = "oct image") -> np.ndarray:
        array = _to_array(scan, field)
        gray = array if array.ndim == 2 else array @ np.asarray([0.299, 0.587, 0.114], np.float32)
        resized = _resize(gray, self.size)
        return _normalize(np.repeat(resized[..., None], 3, axis=-1), self.image_mean, self.image_std)

    def __call__(self, images: Any, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        images = images if isinstance(images, list) else [images]
        pixel_values, counts = [], []
        for i, image in enumerate(images):
            scans = self.slices(image, f"oct images[{i}]")
            pixel_values.extend(self.preprocess_one(scan, f"oct images[{i}]") for scan in scans)
            counts.append(len(scans))
        return BatchFeature(
            {"pixel_values": np.stack(pixel_values), "slices_per_image": np.asarray(counts, np.int64)},
            tensor_type=return_tensors,
        )


__all__ = ["GrokCFPImageProcessor", "GrokOCTImageProcessor"]
