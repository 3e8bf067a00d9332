"""The real paired DME/DR set: pairing by eye, label mapping and a split by patient."""

import csv
from collections import defaultdict

import pytest
from datasets import Image as ImageFeature
from datasets import List
from PIL import Image

from processing.dme_dr import ENV_ROOT, load_dme_dr, resolve_root

try:
    ROOT = resolve_root()
except FileNotFoundError as missing:
    pytest.skip(f"DME/DR paired set not available: {missing}", allow_module_level=True)


@pytest.fixture(scope="module")
def splits():
    return load_dme_dr(val_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def eye_labels():
    """(patient, eye) -> set of (DME, DR) pairs, read straight from labels.csv."""
    labels = defaultdict(set)
    with (ROOT / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            eye = "OS" if row["eye"] == "OI" else row["eye"]
            labels[(row["patient"], eye)].add((row["DME"], row["DR"]))
    return labels


def test_split_is_by_patient(splits):
    train, validation = set(splits["train"]["patient_id"]), set(splits["validation"]["patient_id"])
    assert train and validation and not train & validation
    assert 0.1 < len(validation) / len(train | validation) < 0.3
    again = load_dme_dr(val_fraction=0.2, seed=0)
    assert again["validation"]["id"] == splits["validation"]["id"]


def test_each_fundus_is_paired_with_the_octs_of_the_same_eye(splits):
    for split in splits.values():
        raw = split.cast_column("cfp", ImageFeature(decode=False)).cast_column("oct", List(ImageFeature(decode=False)))
        for row in raw:
            assert Image.open(row["cfp"]["path"]).mode == "RGB"
            assert row["oct"], row["id"]
            for scan in row["oct"]:
                assert Image.open(scan["path"]).mode == "L"
                patient, eye = scan["path"].rsplit("/", 1)[1].split("_")[:2]
                assert patient == row["patient_id"] and {"OD": "OD", "OI": "OS"}[eye] == row["eye"]


def test_labels_follow_the_dr_grade_and_dme(splits, eye_labels):
    for split in splits.values():
        grades = split.features["dr_grade"].names
        for row in split.select_columns(["patient_id", "eye", "label", "dr_grade", "dme"]):
            grade = None if row["dr_grade"] is None else grades[row["dr_grade"]]
            dme = row["dme"] == 1
            expected = "DiabeticRetinopathy" if dme or grade in ("NPDR", "PDR") else "Normal"
            assert split.features["label"].names[row["label"]] == expected
            known = {dr for _, dr in eye_labels[(row["patient_id"], row["eye"])] if dr in grades}
            assert grade in known or (grade is None and not known)
            assert dme == any(d == "1" for d, _ in eye_labels[(row["patient_id"], row["eye"])])


def test_biomarkers_and_scales_are_unknown(splits):
    row = splits["train"].select_columns(["biomarkers", "oct_axial_um_per_px", "cfp_um_per_px"])[0]
    assert set(row["biomarkers"].values()) == {None}
    assert row["oct_axial_um_per_px"] is None and row["cfp_um_per_px"] is None


def test_a_missing_folder_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_ROOT, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=ENV_ROOT):
        resolve_root()
