"""The GROK dataset schema, users' manifests (CSV / JSONL) and `load_grok_dataset`."""

import csv
import json

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Value
from PIL import Image

import processing.dme_dr
import processing.phantom
from processing.biomarkers import BIOMARKER_NAMES
from processing.grok_dataset import (
    EYE_ALIASES,
    ManifestError,
    grok_features,
    load_grok_dataset,
    split_by_patient,
    validate_manifest,
)
from processing.labels import LABELS
from processing.measure.oct import normalise_eye
from processing.sources import load_source


@pytest.fixture
def images(tmp_path):
    """A folder with two fundus photos, three B-scans and a broken image file."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("f1.png", "f2.png"):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / name)
    for name in ("o1.png", "o2.png", "o3.png"):
        Image.fromarray(rng.integers(0, 255, (20, 32), dtype=np.uint8)).save(folder / name)
    (folder / "broken.png").write_bytes(b"this is not a PNG file")
    return tmp_path


def _row(**overrides):
    row = {"id": "a", "patient_id": "p1", "eye": "OD", "cfp": "images/f1.png", "oct": "images/o1.png;images/o2.png",
           "label": "Glaucoma", "report": "", "cup_to_disc_ratio": "0.7", "rnfl": ""}  # fmt: skip
    row.update(overrides)
    return row


def _write_csv(folder, rows, name="manifest.csv"):
    path = folder / name
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_jsonl(folder, rows, name="manifest.jsonl"):
    path = folder / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_features_hold_the_schema():
    features = grok_features({"dme": ClassLabel(names=["no", "yes"])})
    assert features["label"].names == list(LABELS)
    assert set(features["biomarkers"]) == set(BIOMARKER_NAMES)
    assert all(v == Value("float32") for v in features["biomarkers"].values())
    assert "dme" in features and features["oct"].feature.__class__.__name__ == "Image"
    with pytest.raises(ValueError, match="replace GROK columns"):
        grok_features({"label": Value("string")})


def test_csv_manifest_loads_into_the_schema(images):
    rows = [
        _row(),
        _row(id="b", patient_id="p2", eye="left", cfp="images/f2.png", oct="images/o3.png", label="normal"),
    ]
    dataset = load_grok_dataset(_write_csv(images, rows))
    assert isinstance(dataset, Dataset) and dataset.features == grok_features()
    first, second = dataset[0], dataset[1]
    assert first["label"] == LABELS.index("Glaucoma") and second["label"] == LABELS.index("Normal")
    assert second["eye"] == "OS" and len(first["oct"]) == 2 and len(second["oct"]) == 1
    assert first["biomarkers"]["cup_to_disc_ratio"] == pytest.approx(0.7) and first["biomarkers"]["rnfl"] is None
    assert np.array_equal(np.asarray(first["cfp"]), np.asarray(Image.open(images / "images" / "f1.png")))
    assert first["report"] is None and first["oct_axial_um_per_px"] is None


def test_jsonl_manifest_with_biomarker_object_and_oct_list(images):
    row = {"id": "a", "patient_id": "p1", "cfp": "images/f1.png", "oct": ["images/o2.png", "images/o1.png"],
           "label": "AMD", "biomarkers": {"rpe": 30.5, "av_ratio": None}, "oct_axial_um_per_px": 3.87}  # fmt: skip
    dataset = load_grok_dataset(_write_jsonl(images, [row]))
    got = dataset[0]
    assert got["biomarkers"]["rpe"] == pytest.approx(30.5) and got["biomarkers"]["av_ratio"] is None
    assert np.array_equal(np.asarray(got["oct"][0]), np.asarray(Image.open(images / "images" / "o2.png")))
    assert got["oct_axial_um_per_px"] == pytest.approx(3.87) and got["eye"] is None


@pytest.mark.parametrize(
    "override, field, words",
    [
        ({"cfp": "images/nowhere.png"}, "cfp", "not found"),
        ({"oct": "images/o1.png;images/broken.png"}, "oct", "unreadable image"),
        ({"label": "Cataract"}, "label", "not a GROK label"),
        ({"cup_to_disc_ratio": "1.4"}, "cup_to_disc_ratio", "plausible range"),
        ({"rnfl": "thin"}, "rnfl", "must be a number"),
        ({"eye": "middle"}, "eye", "OD (right) or OS (left)"),
        ({"patient_id": ""}, "patient_id", "is empty"),
    ],
)
def test_manifest_errors_name_the_row_and_field(images, override, field, words):
    for write in (_write_csv, _write_jsonl):
        path = write(images, [_row(id="ok"), _row(id="bad", **override)])
        with pytest.raises(ManifestError) as error:
            load_grok_dataset(path)
        assert f"row 2, field {field!r}" in str(error.value) and words in str(error.value)
        assert "row 1" not in str(error.value)


def test_unknown_biomarker_names_are_errors_with_a_suggestion(images):
    csv_path = _write_csv(images, [_row(cup_disc_ratio="0.5")])
    with pytest.raises(ManifestError, match=r"header, field 'cup_disc_ratio'.*cup_to_disc_ratio"):
        load_grok_dataset(csv_path)
    jsonl_path = _write_jsonl(images, [{**_row(), "biomarkers": {"cup_disc_ratio": 0.5}}])
    with pytest.raises(ManifestError, match=r"row 1, field 'cup_disc_ratio'"):
        load_grok_dataset(jsonl_path)
    dataset = load_grok_dataset(_write_csv(images, [_row(dme="yes")], "extra.csv"), extra_columns=["dme"])
    assert dataset[0]["dme"] == "yes"


def test_unknown_names_in_a_csv_biomarkers_cell_are_errors(images):
    path = _write_csv(images, [_row(biomarkers=json.dumps({"central_subfeld": 300, "rpe": 30}))])
    problems = validate_manifest(path).problems
    assert [(p.row, p.field) for p in problems] == [(1, "central_subfeld")]
    assert "central_subfield" in problems[0].message and "biomarkers object" in problems[0].message


def test_every_eye_spelling_is_accepted_by_manifests_and_measurement(images):
    spellings = [s for alias in EYE_ALIASES for s in (alias, alias.upper(), f" {alias.title()} ")]
    rows = [_row(id=f"r{i}", eye=spelling) for i, spelling in enumerate(spellings)]
    dataset = load_grok_dataset(_write_csv(images, rows))
    expected = [EYE_ALIASES[s.strip().lower()] for s in spellings]
    assert dataset["eye"] == expected == [normalise_eye(s) for s in spellings]
    assert {"RE", "LE", "OI", "right", "L"} <= set(spellings)
    with pytest.raises(ValueError, match="'middle' is not an eye; use OD .right. or OS .left."):
        normalise_eye("middle")


def test_out_of_range_is_flagged_not_clipped(images):
    path = _write_csv(images, [_row(cup_to_disc_ratio="1.4"), _row(id="b", cup_to_disc_ratio="0.3")])
    dataset = load_grok_dataset(path, on_out_of_range="flag")
    assert dataset[0]["biomarkers"]["cup_to_disc_ratio"] is None
    assert dataset[0]["flags"] == ["cup_to_disc_ratio=1.4 outside [0, 1]"]
    assert dataset[1]["biomarkers"]["cup_to_disc_ratio"] == pytest.approx(0.3) and dataset[1]["flags"] == []
    report = validate_manifest(path, on_out_of_range="flag")
    assert report.ok and [(p.row, p.field) for p in report.flagged] == [(1, "cup_to_disc_ratio")]


def test_validate_lists_every_problem_and_strict_stops_at_the_first(images):
    path = _write_csv(images, [_row(label="Cataract"), _row(id="a", cfp="images/nowhere.png")])
    report = validate_manifest(path)
    assert not report.ok and report.n_rows == 2
    assert [(p.row, p.field) for p in report.problems] == [(1, "label"), (2, "cfp"), (2, "id")]
    with pytest.raises(ManifestError, match="row 1, field 'label'") as error:
        validate_manifest(path, strict=True)
    assert "row 2" not in str(error.value)
    missing_column = _write_csv(images, [{k: v for k, v in _row().items() if k != "label"}], "nolabel.csv")
    assert [(p.row, p.field) for p in validate_manifest(missing_column).problems] == [(0, "label")]


def test_load_grok_dataset_reads_saved_parquet_and_manifest_folders(images, tmp_path):
    dataset = load_grok_dataset(_write_csv(images, [_row(), _row(id="b", patient_id="p2")]))
    splits = DatasetDict(train=dataset.select([0]), validation=dataset.select([1]))
    splits.save_to_disk(str(tmp_path / "saved"))
    loaded = load_grok_dataset(tmp_path / "saved")
    assert isinstance(loaded, DatasetDict) and loaded["validation"][0]["id"] == "b"
    assert load_grok_dataset(tmp_path / "saved", split="train")[0]["id"] == "a"
    with pytest.raises(ValueError, match="no split 'test'"):
        load_grok_dataset(tmp_path / "saved", split="test")

    dataset.to_parquet(str(tmp_path / "rows.parquet"))
    from_parquet = load_grok_dataset(tmp_path / "rows.parquet")
    assert from_parquet.features == grok_features() and from_parquet[1]["id"] == "b"
    assert load_grok_dataset(images)[0]["id"] == "a"  # a folder holding manifest.csv
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no GROK dataset"):
        load_grok_dataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="neither a local path nor a loadable Hub dataset"):
        load_grok_dataset("someone/missing-grok-dataset")


@pytest.mark.parametrize(
    "source", ["data/manifest.csv", "my_data/manifest.jsonl", "data.parquet", "rows.json", "./data", "../data", "~/x"]
)
def test_missing_local_looking_paths_are_not_tried_on_the_hub(source, monkeypatch):
    def hub(*args, **kwargs):
        raise AssertionError(f"{source} was looked up on the Hub")

    monkeypatch.setattr("datasets.load_dataset", hub)
    with pytest.raises(FileNotFoundError, match=f"No such file or folder: .*{source.lstrip('.~/')}"):
        load_grok_dataset(source)


def test_load_source_refuses_a_split_a_source_does_not_have(images, tmp_path, monkeypatch):
    single = load_grok_dataset(_write_csv(images, [_row(), _row(id="b", patient_id="p2")]))
    single.save_to_disk(str(tmp_path / "single"))
    assert len(load_source(str(tmp_path / "single"))) == len(load_source(str(tmp_path / "single"), split="train")) == 2
    with pytest.raises(ValueError, match=r"single has no splits, so no 'test' split: drop the split"):
        load_source(str(tmp_path / "single"), split="test")

    rendered = []
    monkeypatch.setattr(processing.phantom, "phantom_dataset", lambda n, seed, **kw: rendered.append(n) or single)
    assert load_source("phantom:2", split="train") is single and rendered == [2]
    with pytest.raises(ValueError, match="phantom:2 has no splits, so no 'test' split"):
        load_source("phantom:2", split="test")
    assert rendered == [2]  # refused before rendering

    monkeypatch.setattr(processing.dme_dr, "load_dme_dr", lambda: split_by_patient(single, 0.5))
    assert len(load_source("dme-dr", split="validation")) == 1
    with pytest.raises(ValueError, match=r"dme-dr has no split 'test'; it has \['train', 'validation'\]"):
        load_source("dme-dr", split="test")


def test_split_by_patient_keeps_patients_whole():
    rows = {"patient_id": [f"p{i // 3}" for i in range(90)], "label": [(i // 3) % 2 for i in range(90)]}
    dataset = Dataset.from_dict(rows)
    splits = split_by_patient(dataset, val_fraction=0.2, seed=1)
    train, validation = set(splits["train"]["patient_id"]), set(splits["validation"]["patient_id"])
    assert not train & validation and len(train | validation) == 30 and len(validation) == 6
    assert sorted(splits["validation"]["label"]).count(1) == 9  # stratified: 3 of each class's 15 patients
    assert split_by_patient(dataset, 0.2, seed=1)["validation"]["patient_id"] == splits["validation"]["patient_id"]
