"""The paired DME/DR set: pairing by eye, label mapping and a split by patient, on the real set when it is
available and on a small fake one always."""

import csv
from collections import defaultdict

import pytest
from datasets import Image as ImageFeature
from datasets import List
from PIL import Image

from processing.dme_dr import ENV_ROOT, dme_dr_records, load_dme_dr, resolve_root
from processing.grok_dataset import EYE_ALIASES
from processing.labels import dr_dme_label


@pytest.fixture(scope="module")
def root():
    try:
        return resolve_root()
    except FileNotFoundError as missing:
        pytest.skip(f"DME/DR paired set not available: {missing}")


@pytest.fixture(scope="module")
def splits(root):
    return load_dme_dr(val_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def eye_labels(root):
    """(patient, eye) -> set of (DME, DR) pairs, read straight from labels.csv."""
    labels = defaultdict(set)
    with (root / "labels.csv").open(newline="") as handle:
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


def _fake_root(folder, rows, header=("file", "modality", "patient", "eye", "DME", "DR")):
    """A labels.csv and images/ with one fundus photo (RGB) and one B-scan (L) per (patient, eye, DME, DR) row."""
    (folder / "images").mkdir()
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for patient, eye, dme, dr in rows:
            for modality, mode in (("f", "RGB"), ("o", "L")):
                name = f"{patient}_{eye}_{modality}.png"
                Image.new(mode, (8, 8)).save(folder / "images" / name)
                writer.writerow([name, modality, patient, eye, dme, dr])
    return folder


def test_every_eye_spelling_of_the_schema_is_read(tmp_path):
    spellings = [s for alias in EYE_ALIASES for s in (alias, alias.upper())]
    root = _fake_root(tmp_path, [(str(i), eye, "0", "0") for i, eye in enumerate(spellings)])
    eyes = {record["patient_id"]: record["eye"] for record in dme_dr_records(root)}
    assert [eyes[str(i)] for i in range(len(spellings))] == [EYE_ALIASES[s.lower()] for s in spellings]
    assert {"RE", "LE", "OI", "right"} <= set(spellings)


def test_labels_of_a_fake_set_follow_the_grade_and_dme(tmp_path):
    root = _fake_root(tmp_path, [("1", "OD", "0", "0"), ("2", "OD", "0", "NPDR"), ("3", "OI", "1", "-"),
                                 ("4", "OD", "0", "-"), ("5", "OS", "1", "0")])  # fmt: skip
    got = {r["patient_id"]: (r["label"], r["dr_grade"], r["dme"]) for r in dme_dr_records(root)}
    assert got == {"1": ("Normal", "0", "no"), "2": ("DiabeticRetinopathy", "NPDR", "no"),
                   "3": ("DiabeticRetinopathy", None, "yes"), "5": ("DiabeticRetinopathy", "0", "yes")}  # fmt: skip


@pytest.mark.parametrize(
    "grade, dme, label",
    [("0", "no", "Normal"), ("0", "yes", "DiabeticRetinopathy"), ("NPDR", "no", "DiabeticRetinopathy"),
     ("PDR", "no", "DiabeticRetinopathy"), (None, "yes", "DiabeticRetinopathy"), (None, "no", None)],
)  # fmt: skip
def test_dr_dme_label(grade, dme, label):
    assert dr_dme_label(grade, dme) == label


def test_a_label_file_without_the_columns_is_named(tmp_path):
    root = _fake_root(tmp_path, [("1", "OD", "0", "0")], header=("file", "modality", "patient_id", "eye", "DME", "DR"))
    with pytest.raises(ValueError, match=r"labels.csv lacks the column\(s\) \['patient'\]"):
        dme_dr_records(root)
