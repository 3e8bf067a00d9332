"""Built-in examples: retinal phantom pairs (with and without biomarkers) and scikit-image's CC0 fundus photo."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from processing.biomarkers import BIOMARKERS_BY_NAME

PHANTOM_SEED = 0
PHANTOM_INDICES = (0, 3)  # two patients, two different labels


def examples_dir() -> Path:
    """Where example files are written (``GROK_EXAMPLES_DIR``, default a folder in the temp dir)."""
    return Path(os.environ.get("GROK_EXAMPLES_DIR") or Path(tempfile.gettempdir()) / "grok-space-examples")


def _save(image, path: Path) -> str:
    """Save a PNG atomically (temp file + rename) unless it exists; returns the path."""
    if not path.is_file():
        tmp = path.with_suffix(".tmp.png")
        image.save(tmp)
        os.replace(tmp, path)
    return str(path)


def _biomarker_json(values: dict) -> str:
    rounded = {k: round(v, BIOMARKERS_BY_NAME[k].decimals) for k, v in values.items() if v is not None}
    return json.dumps(rounded, indent=1)


def build_examples(folder: Path | None = None) -> list[list[str | None]]:
    """Rows ``[cfp_path, oct_path, biomarker_json]`` for ``gr.Examples``; images are rendered once and reused."""
    from PIL import Image
    from skimage import data

    from processing.phantom import RetinaPhantom

    folder = folder or examples_dir()
    folder.mkdir(parents=True, exist_ok=True)
    phantom = RetinaPhantom(seed=PHANTOM_SEED)
    rows: list[list[str | None]] = []
    for position, index in enumerate(PHANTOM_INDICES):
        cfp_path, oct_path = folder / f"phantom-{index}-cfp.png", folder / f"phantom-{index}-oct.png"
        sample = phantom[index] if not (cfp_path.is_file() and oct_path.is_file()) else None
        biomarkers = phantom.subject(index).biomarkers
        if sample is not None:
            _save(sample["cfp"], cfp_path)
            _save(sample["oct"][0], oct_path)
        # the first pair comes with its biomarkers, the second leaves them to be measured from the images
        rows.append([str(cfp_path), str(oct_path), _biomarker_json(biomarkers) if position == 0 else ""])
    retina = _save(Image.fromarray(data.retina()), folder / "skimage-retina-cfp.png")  # CC0, scikit-image
    rows.append([retina, None, ""])  # a real photograph: no OCT of the same eye exists
    return rows
