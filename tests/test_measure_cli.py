"""``grok-retina biomarkers``: fills only missing values, records reasons and quality, writes atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .measure_synthetic import synthetic_bscan, synthetic_fundus

GIVEN_CENTRAL = 123.0


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from datasets import Dataset

    from processing.biomarkers import BIOMARKER_NAMES
    from processing.grok_dataset import grok_features

    scan, photo = synthetic_bscan(), synthetic_fundus()
    given = dict.fromkeys(BIOMARKER_NAMES)
    given["central_subfield"] = GIVEN_CENTRAL
    rows = [
        {"id": "a", "patient_id": "p1", "eye": "OD", "cfp": photo.image, "oct": [scan.image], "biomarkers": given,
         "label": "Normal", "report": None, "oct_axial_um_per_px": scan.axial_um_per_px,
         "oct_lateral_um_per_px": scan.lateral_um_per_px, "cfp_um_per_px": 26.5},
        {"id": "b", "patient_id": "p2", "eye": "OS", "cfp": photo.image, "oct": [], "biomarkers": dict.fromkeys(BIOMARKER_NAMES),
         "label": "Normal", "report": None, "oct_axial_um_per_px": None, "oct_lateral_um_per_px": None, "cfp_um_per_px": None},
    ]
    folder = tmp_path_factory.mktemp("tiny") / "in"
    Dataset.from_list(rows, features=grok_features()).save_to_disk(str(folder))
    return folder


def _run(*argv: str) -> int:
    from grok_retina.cli import main

    return main(["biomarkers", *argv])


def test_fills_only_missing_values_with_reasons_and_quality(tiny_dataset, tmp_path):
    from datasets import load_from_disk

    out = tmp_path / "measured"
    overlays = tmp_path / "overlays"
    assert _run("--dataset", str(tiny_dataset), "--out", str(out), "--overlays", str(overlays)) == 0
    a, b = load_from_disk(str(out))
    assert a["biomarkers"]["central_subfield"] == pytest.approx(GIVEN_CENTRAL)  # given: kept
    assert "central_subfield" not in a["biomarkers_measured"]
    assert a["biomarkers"]["inner_nasal"] is not None and "inner_nasal" in a["biomarkers_measured"]
    assert a["biomarkers"]["cup_to_disc_ratio"] is not None
    reasons_a = json.loads(a["biomarker_reasons"])
    assert "horizontal B-scan" in reasons_a["inner_superior"] and "central_subfield" not in reasons_a
    assert a["fluid_intraretinal"] is False and a["fluid_intraretinal_area_mm2"] == 0.0
    assert 0.0 <= a["biomarker_quality"]["oct"] <= 1.0 and a["biomarker_quality"]["oct_flag"]
    assert json.loads(a["biomarker_extra"])["vessel_density"] > 0
    # row b: no OCT and no scales
    reasons_b = json.loads(b["biomarker_reasons"])
    assert b["biomarkers"]["central_subfield"] is None and reasons_b["central_subfield"] == "no OCT B-scan given"
    assert b["biomarker_quality"]["oct"] is None and b["fluid_intraretinal"] is None
    assert b["biomarkers"]["vertical_disc_diameter"] is None and "scale unknown" in reasons_b["vertical_disc_diameter"]
    assert b["biomarkers"]["cup_to_disc_ratio"] is not None
    assert sorted(p.name for p in overlays.iterdir()) == ["a_cfp.png", "a_oct.png", "b_cfp.png"]


def test_overwrite_replaces_given_values(tiny_dataset, tmp_path):
    from datasets import load_from_disk

    out = tmp_path / "measured"
    assert _run("--dataset", str(tiny_dataset), "--out", str(out), "--overwrite") == 0
    central = load_from_disk(str(out))[0]["biomarkers"]["central_subfield"]
    assert central != pytest.approx(GIVEN_CENTRAL) and 150.0 < central < 350.0


def test_output_is_atomic(tiny_dataset, tmp_path, monkeypatch, capsys):
    import datasets

    out = tmp_path / "measured"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _run("--dataset", str(tiny_dataset), "--out", str(out)) == 2
    assert "already exists" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"

    real_save = datasets.Dataset.save_to_disk

    def output_save_fails(self, path, **kwargs):  # the measured chunks save; the final output does not
        if ".partial-" not in Path(path).name:
            return real_save(self, path, **kwargs)
        (Path(path) / "half-written.arrow").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", output_save_fails)
    fresh = tmp_path / "fresh"
    with pytest.raises(OSError, match="disk full"):
        _run("--dataset", str(tiny_dataset), "--out", str(fresh))
    assert not fresh.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".fresh")] == [".fresh.chunks"]  # kept to resume


def test_unknown_dataset_is_an_error(tmp_path, capsys):
    assert _run("--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")) == 2
    assert "--dataset" in capsys.readouterr().err


def test_a_stopped_run_resumes_from_its_saved_chunks(tiny_dataset, tmp_path, monkeypatch, capsys):
    from datasets import load_from_disk

    import recipes.measure_biomarkers as recipe

    measured_ids, real_measure_row = [], recipe.measure_row

    def stops_at_b(row, **kwargs):
        if row["id"] == "b":
            raise KeyboardInterrupt  # the user stops the job while row b is measured
        measured_ids.append(row["id"])
        return real_measure_row(row, **kwargs)

    out = tmp_path / "measured"
    monkeypatch.setattr(recipe, "measure_row", stops_at_b)
    with pytest.raises(KeyboardInterrupt):
        _run("--dataset", str(tiny_dataset), "--out", str(out), "--chunk_rows", "1")
    assert not out.exists() and (recipe.chunk_folder(out) / "train" / f"{0:09d}").is_dir()

    def counts(row, **kwargs):
        measured_ids.append(row["id"])
        return real_measure_row(row, **kwargs)

    monkeypatch.setattr(recipe, "measure_row", counts)
    assert _run("--dataset", str(tiny_dataset), "--out", str(out), "--chunk_rows", "2") == 2  # other options
    assert "other options (chunk_rows: 1" in capsys.readouterr().err
    assert _run("--dataset", str(tiny_dataset), "--out", str(out), "--chunk_rows", "1") == 0
    assert measured_ids == ["a", "b"]  # row a once, before the stop; row b once, after it
    assert not recipe.chunk_folder(out).exists()
    resumed = load_from_disk(str(out))
    fresh = tmp_path / "fresh"
    assert _run("--dataset", str(tiny_dataset), "--out", str(fresh)) == 0
    assert resumed.to_list() == load_from_disk(str(fresh)).to_list()


def test_overlays_of_an_id_with_a_slash(tiny_dataset, tmp_path):
    from datasets import load_from_disk

    from recipes.measure_biomarkers import measure_row

    row = {**load_from_disk(str(tiny_dataset))[0], "id": "site/eye 1"}
    measure_row(row, overlays=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site%2Feye%201_cfp.png", "site%2Feye%201_oct.png"]
