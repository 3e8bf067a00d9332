"""Checks on what a person uploads: image files (type, size, decompression bombs, modality) and biomarkers.

Every failure is an `InputError` whose message says which input is wrong and what to upload instead; the app
shows it on the page.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from processing.biomarkers import BIOMARKER_NAMES, BiomarkerError, validate_biomarkers

ALLOWED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "TIFF": "TIFF", "BMP": "BMP", "WEBP": "WebP"}
FILE_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"]
MAX_PIXELS = 40_000_000  # a 6000 x 6000 fundus photo is 36 MP
MIN_SIDE = 32
SLOT_NAMES = {"cfp": "CFP (colour fundus photograph)", "oct": "OCT B-scan"}
# Mean chroma (max - min channel, 0..1) of the non-dark pixels: ~0 for grey, 0.3-0.6 for fundus photos.
GREY_CHROMA, COLOUR_CHROMA = 0.03, 0.10


class InputError(ValueError):
    """An input the app cannot use; the message is shown to the person as is."""


def max_upload_bytes() -> int:
    """The largest accepted file: ``GROK_MAX_UPLOAD_MB`` megabytes (default 20)."""
    return int(float(os.environ.get("GROK_MAX_UPLOAD_MB", "20")) * 1024 * 1024)


def chroma(image: Image.Image) -> float:
    """Mean chroma of the pixels brighter than 10% on a 256 px thumbnail (0 for a grey image)."""
    thumb = image.convert("RGB")
    thumb.thumbnail((256, 256))
    rgb = np.asarray(thumb, dtype=np.float32) / 255.0
    value, spread = rgb.max(axis=-1), rgb.max(axis=-1) - rgb.min(axis=-1)
    bright = value > 0.1
    return float(spread[bright].mean()) if bright.any() else 0.0


def check_modality(image: Image.Image, slot: str) -> None:
    """Reject a grey image in the CFP slot and a colour photograph in the OCT slot."""
    value = chroma(image)
    if slot == "cfp" and value < GREY_CHROMA:
        raise InputError(
            f"{SLOT_NAMES['cfp']}: this image is greyscale (it looks like an OCT B-scan or a red-free photo). "
            "Upload a colour fundus photograph here, and put an OCT B-scan in the OCT slot."
        )
    if slot == "oct" and value > COLOUR_CHROMA:
        raise InputError(
            f"{SLOT_NAMES['oct']}: this is a colour image (it looks like a fundus photograph). Upload a greyscale "
            "OCT B-scan here, and put a colour fundus photograph in the CFP slot."
        )


def _to_eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale scaled to 8 bits (their own range), other modes left as they are."""
    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "F"):
        return image
    array = np.asarray(image, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def load_image(path: str | os.PathLike | None, slot: str, *, max_bytes: int | None = None,
               max_pixels: int = MAX_PIXELS) -> Image.Image | None:
    """Open an uploaded file as the image for ``slot`` ("cfp" or "oct"): RGB for a CFP, greyscale for an OCT.

    The type is read from the file's bytes (not its name); empty, oversized, unreadable, truncated, multi-frame
    and decompression-bomb files and the wrong modality raise `InputError`. None (nothing uploaded) gives None.
    """
    if slot not in SLOT_NAMES:
        raise ValueError(f"slot must be 'cfp' or 'oct', got {slot!r}.")
    if path is None:
        return None
    what, name = SLOT_NAMES[slot], Path(path).name
    max_bytes = max_upload_bytes() if max_bytes is None else max_bytes
    size = os.path.getsize(path)
    if size == 0:
        raise InputError(f"{what}: '{name}' is empty; upload the image again.")
    if size > max_bytes:
        raise InputError(f"{what}: '{name}' is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.3g} MB. "
                         "Upload a smaller or compressed (PNG/JPEG) image.")
    formats = ", ".join(ALLOWED_FORMATS.values())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{what}: '{name}' declares an enormous image (a decompression bomb); it was not opened.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InputError(f"{what}: '{name}' is not a readable image file (it may be corrupt or not an image); "
                         f"upload a {formats} file.") from None
    if image.format not in ALLOWED_FORMATS:
        raise InputError(f"{what}: '{name}' is a {image.format or 'unknown'} file; upload a {formats} file.")
    width, height = image.size
    if width * height > max_pixels:
        raise InputError(f"{what}: '{name}' is {width} x {height} pixels ({width * height / 1e6:.3g} MP), over the "
                         f"{max_pixels / 1e6:.3g} MP limit that guards against decompression bombs; downscale it.")
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{what}: '{name}' is only {width} x {height} pixels; upload an image at least "
                         f"{MIN_SIDE} pixels on each side.")
    if getattr(image, "n_frames", 1) > 1:
        raise InputError(f"{what}: '{name}' holds {image.n_frames} frames; upload a single image "
                         "(for an OCT volume, its central foveal B-scan).")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError):
        raise InputError(f"{what}: '{name}' could not be decoded (the file is truncated or corrupt); "
                         "export the image again.") from None
    image = _to_eight_bit(image)
    check_modality(image, slot)
    return image.convert("RGB" if slot == "cfp" else "L")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _check(name: Any, value: Any, where: str, errors: list[str]) -> float | None:
    try:
        return validate_biomarkers({str(name).strip(): value}, where=where)[str(name).strip()]
    except BiomarkerError as error:
        message = str(error)
        errors.append(message if message.startswith(where) else f"{where}: {message}")
        return None


def parse_biomarkers(json_text: str | None, table: Any = None) -> tuple[dict[str, float], list[str]]:
    """Biomarkers from a JSON object (``{"rnfl": 28.5, ...}``) and/or a table with ``biomarker`` and ``value``
    columns (blank values skipped). Returns ``(values, errors)``: every problem is listed, nothing raised."""
    values: dict[str, float] = {}
    errors: list[str] = []
    if json_text and json_text.strip():
        try:
            data = json.loads(json_text)
        except json.JSONDecodeError as error:
            data = None
            errors.append(f"Biomarker JSON: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}). "
                          'Write an object such as {"rnfl": 28.5, "cup_to_disc_ratio": 0.4}.')
        if data is not None and not isinstance(data, dict):
            errors.append('Biomarker JSON: must be an object mapping biomarker names to numbers, e.g. {"rnfl": 28.5}.')
        for name, raw in (data.items() if isinstance(data, dict) else ()):
            value = _check(name, raw, "Biomarker JSON", errors)
            if value is not None:
                values[str(name).strip()] = value
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table or [])
    for number, row in enumerate(rows, start=1):
        name, raw = row.get("biomarker"), row.get("value")
        if _blank(raw) or _blank(name):
            continue
        value = _check(name, raw, f"Biomarker table, row {number}", errors)
        key = str(name).strip()
        if value is None:
            continue
        if key in values and not math.isclose(values[key], value):
            errors.append(f"{key} is {values[key]:g} in the JSON but {value:g} in the table; keep one of them.")
            continue
        values[key] = value
    return values, errors


def empty_biomarker_rows() -> list[list[Any]]:
    """Rows of the editable biomarker table: name, unit, normal range and an empty value."""
    from processing.biomarkers import BIOMARKERS_BY_NAME

    rows = []
    for name in BIOMARKER_NAMES:
        spec = BIOMARKERS_BY_NAME[name]
        rows.append([name, spec.unit or "ratio", f"{spec.normal[0]:g}-{spec.normal[1]:g}", None])
    return rows
