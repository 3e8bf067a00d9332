"""``grok-retina data``: the phantom command writes a loadable dataset atomically; validate's exit codes."""

import csv

import numpy as np
import pytest
from datasets import DatasetDict
from PIL import Image

from grok_retina.cli import main as grok_retina
from processing.grok_dataset import load_grok_dataset
from processing.phantom import RetinaPhantom
from recipes.data import main


def test_phantom_command_round_trips_through_load_grok_dataset(tmp_path):
    out = tmp_path / "phantom"
    assert grok_retina(["data", "phantom", "--n", "20", "--out", str(out), "--seed", "3"]) == 0
    splits = load_grok_dataset(out)
    assert isinstance(splits, DatasetDict) and set(splits) == {"train", "validation"}
    assert sum(len(s) for s in splits.values()) == 20
    assert not set(splits["train"]["patient_id"]) & set(splits["validation"]["patient_id"])
    phantom = RetinaPhantom(seed=3)
    row = splits["validation"][0]
    index = int(row["id"].rsplit("-", 1)[1])
    assert row["biomarkers"]["rnfl"] == pytest.approx(phantom.subject(index).biomarkers["rnfl"], rel=1e-6)
    assert np.array_equal(np.asarray(row["oct"][0]), np.asarray(phantom[index]["oct"][0]))
    assert [p.name for p in tmp_path.iterdir()] == ["phantom"]  # no temporary folders left behind


def test_parquet_format_and_refusing_to_overwrite(tmp_path, capsys):
    out = tmp_path / "pq"
    assert main(["phantom", "--n", "4", "--out", str(out), "--format", "parquet", "--val_fraction", "0"]) == 0
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    assert len(load_grok_dataset(out, split="train")) == 4
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["phantom", "--n", "2", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == before


def test_an_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(RetinaPhantom, "to_dataset", fail)
    with pytest.raises(KeyboardInterrupt):
        main(["phantom", "--n", "4", "--out", str(tmp_path / "half")])
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def manifest(tmp_path):
    Image.new("RGB", (16, 16), "red").save(tmp_path / "f.png")
    Image.new("L", (16, 8)).save(tmp_path / "o.png")

    def write(label="AMD", cfp="f.png"):
        path = tmp_path / "manifest.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "patient_id", "cfp", "oct", "label", "rpe"])
            writer.writerow(["a", "p", cfp, "o.png", label, "25"])
            writer.writerow(["b", "q", "f.png", "o.png", "Normal", "2000"])
        return path

    return write


def test_validate_exit_codes(manifest, tmp_path, capsys):
    assert grok_retina(["data", "validate", str(manifest()), "--on_out_of_range", "flag"]) == 0
    assert "0 problem(s), 1 flagged" in capsys.readouterr().out
    assert main(["validate", str(manifest(label="Cataract", cfp="gone.png"))]) == 1
    err = capsys.readouterr().err
    assert "row 1, field 'cfp'" in err and "row 1, field 'label'" in err and "row 2, field 'rpe'" in err
    assert main(["validate", str(manifest(label="Cataract")), "--strict"]) == 1
    assert "row 2" not in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "absent.csv")]) == 2
