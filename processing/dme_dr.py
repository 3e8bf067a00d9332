"""The real paired set: fundus photos and OCT B-scans of the same eyes with DR grade and DME labels.

Source: "OCT-AND-EYE-FUNDUS-DATASET" (Hughes Cano, Olivares Pinto & Thébault), as prepared in
``../shared/data/dme-dr-paired`` (see its README.md); it is read in place, never copied.

Mapping into the GROK schema:

- **pairing**: one row per fundus photo, with *all* OCT B-scans of the same eye (patient + eye) as its
  ``oct`` list, in file order; eyes lacking either modality are left out;
- **modality** is decided by the image itself (RGB = fundus, greyscale = OCT): ``labels.csv`` lists two
  files under both modalities and three file names carry the other modality's letter;
- **labels per eye**: ``dr_grade`` (ClassLabel "0", "NPDR", "PDR"; None when unknown) and ``dme``
  (ClassLabel "no", "yes"). Rows of one eye are merged: a known grade wins over an unknown one ("-" or
  empty), and conflicting known values take the more severe one (with a warning);
- **label** from the grade and DME by `processing.labels.dr_dme_label`; an eye with an unknown grade and no
  DME has no GROK label and is left out (with a warning);
- **eye**: "OD" stays, "OI" (ojo izquierdo) becomes "OS" (`processing.grok_dataset.normalise_eye`);
- ``biomarkers`` are all None (to be measured, stage 0) and ``report`` None; the pixel scales are None:
  the device is not documented (the README only says the B-scans were halved from 1408x573 to 704x288,
  so one OCT pixel is two original pixels on each axis);
- **split** by patient (`processing.grok_dataset.split_by_patient`, stratified by label): no patient has
  images in both splits.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import defaultdict
from pathlib import Path

from PIL import Image

from .biomarkers import BIOMARKER_NAMES
from .grok_dataset import grok_features, normalise_eye, split_by_patient
from .labels import DME_STATUSES, DR_GRADES, dr_dme_label

logger = logging.getLogger(__name__)

ENV_ROOT = "GROK_DME_DR_ROOT"
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dme-dr-paired"
LABEL_COLUMNS: tuple[str, ...] = ("file", "patient", "eye", "DME", "DR")


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root``, else ``$GROK_DME_DR_ROOT``, else ``../shared/data/dme-dr-paired`` from the
    project root. Raises FileNotFoundError naming where it looked."""
    path = Path(root or os.environ.get(ENV_ROOT) or DEFAULT_ROOT).expanduser().resolve()
    if not (path / "labels.csv").is_file() or not (path / "images").is_dir():
        raise FileNotFoundError(
            f"The DME/DR paired set is not at {path} (no labels.csv and images/); pass root=... or set {ENV_ROOT}."
        )
    return path


def dme_dr_features():
    """`grok_features` plus the ``dme`` and ``dr_grade`` columns."""
    from datasets import ClassLabel

    return grok_features({"dme": ClassLabel(names=list(DME_STATUSES)), "dr_grade": ClassLabel(names=list(DR_GRADES))})


def _eye(value: str) -> str:
    """'OD'/'OS' for a known spelling (`processing.grok_dataset.EYE_ALIASES`), else the value as written (such
    eyes are grouped as written and stored with eye None)."""
    try:
        return normalise_eye(value)
    except ValueError:
        return value.strip()


def _merge(values: list[str], order: tuple[str, ...], what: str, eye: tuple[str, str]) -> str | None:
    known = sorted({v for v in values if v in order}, key=order.index)
    if len(known) > 1:
        logger.warning("Patient %s eye %s has conflicting %s %s; keeping the most severe.", *eye, what, known)
    return known[-1] if known else None


def dme_dr_records(root: str | os.PathLike | None = None) -> list[dict]:
    """One record per fundus photo (see the module docstring), with absolute image paths."""
    root = resolve_root(root)
    with (root / "labels.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in LABEL_COLUMNS if name not in reader.fieldnames]
        if missing:
            raise ValueError(
                f"{root / 'labels.csv'} lacks the column(s) {missing}; its header must name {list(LABEL_COLUMNS)} "
                f"(it has {reader.fieldnames})."
            )
        rows = list(reader)
    by_eye: dict[tuple[str, str], dict[str, list]] = defaultdict(
        lambda: {"fundus": [], "oct": [], "dme": [], "dr": []}
    )
    seen: set[str] = set()
    for row in rows:
        eye = (row["patient"].strip(), _eye(row["eye"]))
        entry = by_eye[eye]
        entry["dme"].append(row["DME"].strip())
        entry["dr"].append(row["DR"].strip())
        name = row["file"].strip()
        if name in seen:
            continue
        seen.add(name)
        path = root / "images" / name
        if not path.is_file():
            logger.warning("%s is listed in labels.csv but missing; skipped.", path)
            continue
        with Image.open(path) as image:  # reads the header only
            modality = "fundus" if image.mode == "RGB" else "oct"
        entry[modality].append(path)

    records, unlabelled, unpaired = [], 0, 0
    for (patient, eye), entry in sorted(by_eye.items()):
        if not entry["fundus"] or not entry["oct"]:
            unpaired += 1
            continue
        grade = _merge(entry["dr"], DR_GRADES, "DR grades", (patient, eye))
        dme = DME_STATUSES[int(_merge(entry["dme"], ("0", "1"), "DME labels", (patient, eye)) == "1")]
        label = dr_dme_label(grade, dme)
        if label is None:
            unlabelled += 1
            continue
        octs = [str(p) for p in sorted(entry["oct"], key=lambda p: p.name)]
        for fundus in sorted(entry["fundus"], key=lambda p: p.name):
            records.append({
                "id": fundus.stem,
                "patient_id": patient,
                "eye": eye if eye in ("OD", "OS") else None,
                "cfp": str(fundus),
                "oct": octs,
                "biomarkers": dict.fromkeys(BIOMARKER_NAMES),
                "label": label,
                "report": None,
                "oct_axial_um_per_px": None,
                "oct_lateral_um_per_px": None,
                "cfp_um_per_px": None,
                "dme": dme,
                "dr_grade": grade,
            })  # fmt: skip
    if unpaired:
        logger.info("%d eyes lack a fundus photo or an OCT B-scan and are left out.", unpaired)
    if unlabelled:
        logger.warning("%d eyes have neither a DR grade nor DME and are left out.", unlabelled)
    return records


def load_dme_dr(root: str | os.PathLike | None = None, val_fraction: float = 0.2, seed: int = 0):
    """The paired DME/DR set as a `datasets.DatasetDict` (train, validation) split by patient."""
    from datasets import Dataset

    dataset = Dataset.from_list(dme_dr_records(root), features=dme_dr_features())
    return split_by_patient(dataset, val_fraction=val_fraction, seed=seed)
