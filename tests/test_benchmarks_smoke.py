"""Each benchmark script runs with --quick at the tiniest sizes and writes JSON of the expected shape
(no timing assertions: timings belong in the benchmarks), and report.py renders them all. The scripts run
in this process (their ``main``) to share one import of torch and transformers."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import bench_generation, bench_pooling, bench_sft_throughput, bench_train_step, report
from modeling_grok import GrokForConditionalGeneration

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    threads = torch.get_num_threads()
    try:
        bench_train_step.main(["--quick", "--no-memory", "--out", str(out / "train_step.json")])
        bench_generation.main(["--quick", "--out", str(out / "generation.json")])
        bench_pooling.main(["--quick", "--work_dir", str(out / "work"), "--out", str(out / "pooling.json")])
        for options in (["--gradient_checkpointing", "--dtype", "bfloat16"], []):  # the paper's step; replaced
            bench_sft_throughput.main(["--quick", *options, "--out", str(out / "sft_throughput.json")])
    finally:
        torch.set_num_threads(threads)  # the scripts set their own thread count
    return out


def test_train_step_json(results):
    data = json.loads((results / "train_step.json").read_text())
    (row,) = data["results"]
    assert row["preset"] == "tiny" and set(row["full_s"]) == set(row["image_path_s"]) == {"grok", "llava"}
    assert {"median", "q1", "q3", "min", "max"} <= set(row["text_only_grok_over_llava"])
    assert {"cpu", "cores", "torch", "load_average_1min"} <= set(data["machine"]) and data["command"]


def test_generation_json(results):
    data = json.loads((results / "generation.json").read_text())
    assert [r["batch"] for r in data["results"]] == [1, 4]
    for row in data["results"]:
        assert set(row["decode_tokens_per_s"]) == set(row["prefill_s"]) == {"lm", "grok", "grok_unregistered"}
        assert row["decode_grok_over_lm"]["median"] > 0 and row["decode_grok_unregistered_over_lm"]["median"] > 0
    assert GrokForConditionalGeneration._auto_class == "AutoModelForImageTextToText"  # registration restored


def test_pooling_json(results):
    data = json.loads((results / "pooling.json").read_text())
    assert set(data["throughput"]) == set(data["quality"]) == {"196", "49", "16"}
    for kind in ("report", "question", "mix"):
        tokens = {t: data["throughput"][t][kind]["mean_tokens_per_sample"] for t in ("196", "16")}
        assert tokens["196"] - tokens["16"] == 2 * (196 - 16)  # two images per row, nothing else changed
    assert data["throughput"]["196"]["question"]["mean_tokens_per_sample"] < data["throughput"]["196"]["report"][
        "mean_tokens_per_sample"]
    assert [r["tokens_per_image"] for r in data["runs"]] == [196, 49, 16]
    assert all(0 <= r["macro_f1"] <= 1 and len(r["answers"]) == len(r["references"]) == 2 for r in data["runs"])
    assert [d["seed"] for d in data["macro_f1_vs_196"]["49"]] == [0]


def test_sft_throughput_json(results):
    data = json.loads((results / "sft_throughput.json").read_text())
    (row,) = data["results"]  # one row per preset and device: the second run replaced the first
    assert row["preset"] == "tiny" and row["device"] == "cpu" and not row["gradient_checkpointing"]
    assert row["dtype"] == "float32"
    assert row["sequence"] == 2 * 196 + 16 + 64 and row["image_tokens"] == 2 * 196
    assert row["tokens_per_s"]["max"] == pytest.approx(row["batch"] * row["sequence"] / row["step_s"]["min"])
    assert row["flops_per_step"] > 0 and row["mfu"]["median"] > 0 and row["peak_tflops"] > 0
    assert 0 < row["trainable_parameters"] < row["parameters"]


def test_sft_throughput_keeps_other_presets_and_devices(tmp_path):
    out = tmp_path / "sft.json"
    out.write_text(json.dumps({"results": [{"preset": "paper", "device": "NVIDIA H100 80GB HBM3"},
                                           {"preset": "tiny", "device": "cpu", "old": True}]}))
    kept = bench_sft_throughput.kept_results(str(out), {"preset": "tiny", "device": "cpu"})
    assert kept == [{"preset": "paper", "device": "NVIDIA H100 80GB HBM3"}, {"preset": "tiny", "device": "cpu"}]


def test_sft_throughput_paper_preset_asks_for_a_gpu(tmp_path):
    threads = torch.get_num_threads()
    try:
        with pytest.raises(ValueError, match="--preset paper .* needs a GPU"):
            bench_sft_throughput.main(["--preset", "paper", "--device", "cpu", "--out", str(tmp_path / "sft.json")])
    finally:
        torch.set_num_threads(threads)
    assert not (tmp_path / "sft.json").exists()


def test_sft_throughput_counts_model_flops_without_recomputation():
    preset = dataclasses.replace(bench_sft_throughput.PRESETS["tiny"], gradient_checkpointing=True)
    model = bench_sft_throughput.build(preset, torch.device("cpu"))
    inputs = bench_sft_throughput.report_rows(model.config, 2, 32, torch.device("cpu"))
    flops = bench_sft_throughput.step_flops(model, inputs, "float32")
    base = model.get_base_model()
    assert bench_sft_throughput.checkpointing_on(base)  # restored after counting
    with FlopCounterMode(display=False) as counter:  # the whole batch, checkpointing on: recomputes the LM forward
        bench_sft_throughput.sft_loss(model, inputs).backward()
    recomputed = counter.get_total_flops()
    bench_sft_throughput.set_checkpointing(base, False)
    with FlopCounterMode(display=False) as counter:
        bench_sft_throughput.sft_loss(model, inputs).backward()
    assert counter.get_total_flops() == 2 * flops  # equal rows: the count scales with the batch
    assert recomputed > 2 * flops


def test_memory_child_reports_peak_rss():
    threads = torch.get_num_threads()
    memory = bench_train_step.memory_child("tiny", "grok", threads=threads)
    assert memory["peak_rss_mib"] >= memory["rss_before_step_mib"] > 0


def test_report_gathers_every_json(results):
    (results / "stage1.json").write_text((ROOT / "benchmarks" / "results" / "stage1.json").read_text())
    (results / "other.json").write_text(json.dumps({"pairs_per_s": 1.5}))
    report.main(["--results", str(results), "--out", str(results / "REPORT.md")])
    text = (results / "REPORT.md").read_text()
    for heading in ("Target figures", "Training step", "Generation", "Image-token pooling", "Stage III SFT throughput",
                    "Stage I", "## other", "Machine:"):
        assert heading in text
