"""Stage II training and probing: the OCT tensor cache, the ridge probe, resuming, refusing to overwrite an earlier
run, a 2-process launch, and a tiny alignment that beats the unaligned tower on the probe."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import set_seed

from grok_retina.alignment import AlignmentArguments, OCTPairDataset, prepare_oct_pairs, train_aligner
from grok_retina.probe import compare_towers, fit_ridge_probe, format_probe_table
from modeling_grok.image_processing_grok import GrokOCTImageProcessor
from modeling_grok.modeling_aligner import GrokAligner, load_oct_tower
from processing.grok_dataset import grok_features
from tests.aligner_fixtures import synthetic_dataset, synthetic_grok_rows, tiny_aligner_config

ROOT = Path(__file__).resolve().parents[1]


def _grok_dataset(n: int, seed: int = 0):
    from datasets import Dataset

    return Dataset.from_list(synthetic_grok_rows(n, seed), features=grok_features())


def _train(output_dir, train, val, resume=None, epochs=2, lr=1e-3, batch=16, overwrite=False):
    set_seed(0)
    model = GrokAligner(tiny_aligner_config())
    args = AlignmentArguments(
        output_dir=str(output_dir), learning_rate=lr, per_device_train_batch_size=batch, num_train_epochs=epochs,
        save_total_limit=2, logging_steps=1000, resume_from_checkpoint=resume, overwrite_output_dir=overwrite,
    )  # fmt: skip
    return train_aligner(model, train, val, args)


def _records(output_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]


def _steps(output_dir) -> dict[int, dict]:
    return {line["step"]: line for line in _records(output_dir) if "loss" in line}


def test_oct_pairs_go_through_the_oct_processor_and_are_cached(tmp_path):
    dataset = _grok_dataset(6)
    names = tiny_aligner_config().biomarker_names
    pairs = prepare_oct_pairs(dataset, 32, names, cache_dir=tmp_path)
    processor = GrokOCTImageProcessor(size=32)
    items = OCTPairDataset(pairs, processor.image_mean, processor.image_std)
    expected = processor([row["oct"][0] for row in dataset])["pixel_values"]
    torch.testing.assert_close(torch.stack([items[i]["pixel_values"] for i in range(6)]), expected, atol=5e-3, rtol=0)
    assert pairs.biomarkers.shape == (6, 31)
    assert pairs.biomarkers[2, names.index("rpe")] == pytest.approx(dataset[2]["biomarkers"]["rpe"], rel=1e-6)
    (cache_file,) = tmp_path.glob("oct_pairs-*.pt")
    stored = torch.load(cache_file, weights_only=True)
    stored["scans"].zero_()
    torch.save(stored, cache_file)  # a second call must read the cache, not redo the image work
    assert float(prepare_oct_pairs(dataset, 32, names, cache_dir=tmp_path).scans.abs().max()) == 0.0
    assert len(list(tmp_path.glob("oct_pairs-*.pt"))) == 1
    prepare_oct_pairs(dataset, 48, names, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("oct_pairs-*.pt"))) == 2


def test_ridge_probe_recovers_a_linear_map_and_skips_missing_targets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)) * rng.uniform(0.1, 10.0, 8) + 3.0
    weight = rng.normal(size=(8, 3))
    y = x @ weight + np.array([1.0, -2.0, 5.0]) + 0.01 * rng.normal(size=(400, 3))
    y[::5, 1] = np.nan
    probe = fit_ridge_probe(x, y)
    np.testing.assert_allclose(probe.weight, weight, atol=0.01)
    x_new = rng.normal(size=(50, 8))
    np.testing.assert_allclose(probe.predict(x_new), x_new @ weight + [1.0, -2.0, 5.0], atol=0.1)
    # Pure noise on many features: the validation split picks a strong penalty (predictions near the mean).
    noisy = fit_ridge_probe(rng.normal(size=(200, 100)), rng.normal(size=(200, 1)))
    assert noisy.alpha[0] >= 1.0 > 100 * probe.alpha.max()


def test_resume_continues_the_step_count_and_matches_an_uninterrupted_run(tmp_path):
    train, val = synthetic_dataset(64, seed=0, missing=0.1), synthetic_dataset(32, seed=1)
    full = _train(tmp_path / "full", train, val)
    part_dir = tmp_path / "part"
    _train(part_dir, train, val)
    assert sorted(p.name for p in part_dir.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    shutil.rmtree(part_dir / "checkpoint-8")  # as if the run had stopped late in epoch 2, its steps logged
    with (part_dir / "metrics.jsonl").open("a") as log:
        log.write('{"step": 9, "lo')  # a record torn by the stop
    resumed = _train(part_dir, train, val, resume=str(part_dir / "checkpoint-4"))
    assert full.global_step == resumed.global_step == 8
    # Epoch 1's records are kept, the steps after checkpoint-4 are logged once, by the resumed run.
    records = _records(part_dir)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [r["step"] for r in records if "val_cosine" in r] == [4, 8]
    steps_full, steps_resumed = _steps(tmp_path / "full"), _steps(part_dir)
    for step in steps_resumed:
        for key in ("loss", "image_std", "biomarker_std", "lr"):
            assert steps_resumed[step][key] == pytest.approx(steps_full[step][key], rel=1e-5), (step, key)
    final_resumed = load_file(part_dir / "checkpoint-8/model.safetensors")
    for key, value in load_file(tmp_path / "full/checkpoint-8/model.safetensors").items():
        torch.testing.assert_close(final_resumed[key], value, msg=key)
    assert resumed.best_metric == pytest.approx(full.best_metric, rel=1e-6)


def test_a_fresh_run_refuses_a_folder_with_an_earlier_runs_checkpoints(tmp_path):
    train, val = synthetic_dataset(64, seed=0), synthetic_dataset(32, seed=1)
    _train(tmp_path, train, val, epochs=2)
    checkpoints = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    metrics = (tmp_path / "metrics.jsonl").read_bytes()
    weights = (tmp_path / "checkpoint-8/model.safetensors").read_bytes()
    refusal = r"checkpoint-4, checkpoint-8.*--resume_from_checkpoint latest.*--overwrite_output_dir"
    with pytest.raises(FileExistsError, match=refusal):
        _train(tmp_path, train, val, epochs=1, lr=5e-3)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == checkpoints == ["checkpoint-4", "checkpoint-8"]
    assert (tmp_path / "metrics.jsonl").read_bytes() == metrics
    assert (tmp_path / "checkpoint-8/model.safetensors").read_bytes() == weights
    # The recipe refuses before loading any data.
    from recipes import align_oct

    with pytest.raises(FileExistsError, match="--overwrite_output_dir"):
        align_oct.main(["--preset", "tiny", "--dataset", str(tmp_path / "no-such-data"), "--output_dir", str(tmp_path)])
    # Asked to overwrite: the earlier checkpoints go (checkpoint-8 would otherwise pass for the newest).
    result = _train(tmp_path, train, val, epochs=1, overwrite=True)
    assert [p.name for p in tmp_path.glob("checkpoint-*")] == ["checkpoint-4"] and result.global_step == 4
    assert [r["step"] for r in _records(tmp_path)] == [1, 2, 3, 4, 4]


def test_tiny_alignment_beats_the_unaligned_tower_on_the_probe(tmp_path):
    train, val = synthetic_dataset(256, seed=0, missing=0.1), synthetic_dataset(64, seed=1)
    test = synthetic_dataset(128, seed=2)
    result = _train(tmp_path, train, val, epochs=12, lr=2e-3, batch=32)
    steps = _steps(tmp_path)
    assert len(steps) == result.global_step == 12 * 8
    assert all(line["image_std"] > 0 and line["biomarker_std"] > 0 for line in steps.values())
    assert np.mean([steps[s]["loss"] for s in range(89, 97)]) < np.mean([steps[s]["loss"] for s in range(1, 9)]) - 0.5
    config = tiny_aligner_config()
    towers = {"unaligned": load_oct_tower(result.initial_oct_tower_dir), "aligned": load_oct_tower(result.oct_tower_dir)}
    results = compare_towers(towers, train, test, config.biomarker_names, config.biomarker_center, config.biomarker_scale)
    aligned, unaligned = (results["towers"][k]["overall_normalised"]["mae"] for k in ("aligned", "unaligned"))
    assert aligned < 0.9 * unaligned, (aligned, unaligned)
    assert results["mae_reduction"]["overall_normalised"] == pytest.approx(1 - aligned / unaligned)
    table = format_probe_table(results)
    assert "| **overall** | normal SD |" in table and "central_subfield" in table


def test_two_process_accelerate_launch_trains_and_probes(tmp_path):
    _grok_dataset(64, seed=0).save_to_disk(str(tmp_path / "train"))
    _grok_dataset(16, seed=1).save_to_disk(str(tmp_path / "test"))
    out = tmp_path / "align"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "recipes/configs/accelerate_cpu_2proc.yaml"), str(ROOT / "recipes/align_oct.py"),
        "--preset", "tiny", "--dataset", str(tmp_path / "train"), "--validation_fraction", "0.25",
        "--output_dir", str(out), "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
        "--cache_dir", str(tmp_path / "cache"), "--also_probe", str(tmp_path / "test"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    # 48 training pairs in global batches of 2 x 8: 3 steps (a lone process would take 6), RNG saved per rank.
    (checkpoint,) = out.glob("checkpoint-*")
    assert checkpoint.name == "checkpoint-3" and sorted(_steps(out)) == [1, 2, 3]
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    assert (out / "oct_tower/oct_tower.safetensors").is_file() and (out / "config.json").is_file()
    probe = json.loads((out / "probe.json").read_text())
    assert set(probe["towers"]) == {"aligned", "unaligned"} and probe["n_test"] == 16
    assert "MAE reduction" in result.stdout


def test_held_out_sources_with_splits_need_their_split_named(tmp_path, capsys):
    """A held-out source with splits is never read as its train split by default: the recipes ask for the split."""
    from datasets import DatasetDict

    from recipes import align_oct, probe_biomarkers

    DatasetDict(train=_grok_dataset(8, seed=0), validation=_grok_dataset(4, seed=1)).save_to_disk(str(tmp_path / "both"))
    out = tmp_path / "align"
    common = ["--preset", "tiny", "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache")]
    assert align_oct.main([*common, "--dataset", str(tmp_path / "both"), "--also_probe", str(tmp_path / "both")]) == 2
    assert "has splits ['train', 'validation']; choose one with --also_probe_split" in capsys.readouterr().err
    assert align_oct.main([*common, "--dataset", str(tmp_path / "both"), "--eval_dataset", str(tmp_path / "both")]) == 2
    assert "choose one with --eval_dataset_split" in capsys.readouterr().err
    assert not out.exists()  # refused before any training
    assert probe_biomarkers.main(["--aligned", str(out), "--train_dataset", str(tmp_path / "both"),
                                  "--test_dataset", str(tmp_path / "both")]) == 2
    assert "choose one with --test_split" in capsys.readouterr().err
