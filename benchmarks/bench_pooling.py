"""Image-token pooling: SFT throughput and phantom macro-F1 at 196, 49 and 16 tokens per image.

    python benchmarks/bench_pooling.py [--n_train 320] [--n_test 96] [--epochs 6] [--batch 4] [--seeds 0 1] \
        [--repeats 15] [--threads 1] [--work_dir outputs/bench_pooling] \
        [--out benchmarks/results/pooling.json] [--quick]

The model is `grok-retina quickstart`'s Stage III model except for its towers: the tiny Qwen2 backbone with a
tokenizer fitted to the data, 16 biomarker tokens, and tiny ViTs (width 32, 2 blocks, random) at 224 px with
16 px patches, a 14 x 14 grid = 196 tokens, average-pooled to 49 (7 x 7) or 16 (4 x 4). Data: phantom eyes ->
Stage I with the offline rules teacher, split by patient, and one diagnosis question per eye beside its
report (`with_diagnosis_questions`), as the quickstart trains.

Throughput: a full SFT step (TRL collator batch of ``--batch`` rows, the forward and loss of
`SFTTrainer.compute_loss`, backward, AdamW step) on a batch of reports and on a batch of diagnosis questions, the
three models alternating in one process; the Stage III mix (one question per report) is their pair per round.
Quality: per seed and setting, the quickstart's SFT (``--epochs`` over the reports and questions of ``--n_train``
eyes, `GrokSFTTrainer`, length-grouped batches, full fine-tuning), then the held-out reports' completion loss and
token accuracy (teacher forcing) and the macro-F1 of the model's answers to the diagnosis question for the
held-out eyes (`GrokPipeline.diagnose`), with its permutation chance level and, against 196 tokens, the paired
bootstrap interval of the difference on the same eyes. The settings' order alternates across seeds. Each scored
run is saved under ``--work_dir`` and reused by a later run with the same budget (resume, or seeds run in parallel
processes and gathered by one more call).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report, timing  # noqa: E402
from grok_retina.diagnosis_questions import with_diagnosis_questions  # noqa: E402
from modeling_grok import GrokForConditionalGeneration, GrokProcessor  # noqa: E402
from modeling_grok.configuration_grok import VIT_TINY_TEST  # noqa: E402

TOWER_224 = {**VIT_TINY_TEST, "img_size": 224}
SETTINGS = (196, 49, 16)
BIOMARKER_TOKENS = 16  # the quickstart's
KINDS = ("report", "question")


def sft_data(work_dir: Path, n_train: int, n_test: int):
    """Stage I datasets (train, test) for phantom eyes, built once per size under ``work_dir``."""
    from datasets import load_from_disk

    from grok_retina.instruct import generate_instructions
    from grok_retina.teachers.rules_teacher import RulesTeacher
    from processing.grok_dataset import split_by_patient
    from processing.phantom import phantom_dataset

    folder = work_dir / f"data_{n_train}_{n_test}"
    if not (folder / "test" / "dataset").is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        total = n_train + n_test
        splits = split_by_patient(phantom_dataset(total, seed=0), val_fraction=n_test / total, seed=0)
        for name, split in (("train", "train"), ("test", "validation")):
            generate_instructions(splits[split], RulesTeacher(seed=0), folder / name, progress=False)
    return load_from_disk(folder / "train" / "dataset"), load_from_disk(folder / "test" / "dataset")


def fit_tokenizer(train):
    """The quickstart's tokenizer: a byte-level BPE fitted to the training conversations."""
    from grok_retina.sft import _chat_texts
    from grok_retina.tiny_backbone import train_tokenizer

    return train_tokenizer(_chat_texts(train), vocab_size=4096)


def build(tokens: int, tokenizer, seed: int) -> tuple[GrokForConditionalGeneration, GrokProcessor]:
    """The quickstart's tiny backbone and biomarker tokens with 224 px tiny towers (on a copy of ``tokenizer``)."""
    from grok_retina.sft import biomarker_token_config
    from grok_retina.tiny_backbone import tiny_text_model

    tokenizer = copy.deepcopy(tokenizer)
    torch.manual_seed(seed)
    model = GrokForConditionalGeneration.from_components(
        tiny_text_model(tokenizer, seed=seed), tokenizer=tokenizer, cfp_vision_config=dict(TOWER_224),
        oct_vision_config=dict(TOWER_224), tokens_per_image=tokens, **biomarker_token_config(BIOMARKER_TOKENS),
    )
    model.freeze_vision_towers()
    return model, GrokProcessor.from_config(tokenizer, model.config)


def trainer_for(model, processor, train, output_dir: Path, epochs: float, batch: int, seed: int, test=None):
    """`GrokSFTTrainer` with the quickstart's Stage III settings (``train`` already holds the diagnosis questions;
    no checkpoints, no progress bars)."""
    from grok_retina.quickstart import stage3_training_args
    from grok_retina.training import GrokSFTTrainer

    args = stage3_training_args(
        output_dir, epochs, seed, per_device_train_batch_size=batch, per_device_eval_batch_size=batch,
        logging_steps=50, save_strategy="no", disable_tqdm=True,
    )
    return GrokSFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=test, processing_class=processor)


def step_throughput(train, n_reports: int, tokenizer, work_dir: Path, batch: int, repeats: int) -> dict:
    """Samples/s and tokens/s of one SFT step on ``batch`` reports and on ``batch`` diagnosis questions (``train``:
    the reports, then their questions from row ``n_reports``), all settings and kinds alternating."""
    first = {"report": 0, "question": n_reports}
    steps, sequence = {}, {}
    for tokens in SETTINGS:
        model, processor = build(tokens, tokenizer, seed=0)
        trainer = trainer_for(model.train(), processor, train, work_dir / "throughput", 1, batch, 0)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        for kind in KINDS:
            rows = [train[first[kind] + i] for i in range(batch)]  # fresh rows: the collator fills them in
            inputs = trainer.data_collator(rows)
            sequence[tokens, kind] = int(inputs["attention_mask"].sum()) / batch

            def step(trainer=trainer, model=model, inputs=inputs, optimizer=optimizer) -> None:
                trainer.compute_loss(model, dict(inputs)).backward()  # TRL's loss, as the trainer's step runs it
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            steps[f"{tokens}/{kind}"] = step
    runs = timing.alternate(steps, repeats=repeats, warmup=1)
    runs.update({f"{t}/mix": [r + q for r, q in zip(runs[f"{t}/report"], runs[f"{t}/question"])] for t in SETTINGS})
    out = {}
    for tokens in SETTINGS:
        out[str(tokens)] = {}
        for kind in (*KINDS, "mix"):
            seconds, rows_per_step = runs[f"{tokens}/{kind}"], batch * (2 if kind == "mix" else 1)
            per_sample = (sum(sequence[tokens, k] for k in KINDS) / 2 if kind == "mix" else sequence[tokens, kind])
            out[str(tokens)][kind] = {
                "mean_tokens_per_sample": per_sample,
                "step_s": timing.summarize(seconds),
                "samples_per_s": timing.summarize([rows_per_step / s for s in seconds]),
                "tokens_per_s": timing.summarize([rows_per_step * per_sample / s for s in seconds]),
                "speedup_over_196": timing.ratio(runs[f"196/{kind}"], seconds),
            }
    return out


def train_and_score(tokens: int, seed: int, train, test, tokenizer, work_dir: Path, epochs: float,
                    batch: int) -> dict:
    """After the fixed SFT budget: the held-out reports' completion loss and token accuracy (teacher forcing), and
    the diagnoses the model answers to the diagnosis question for the held-out eyes."""
    from grok_retina.evaluation.classification import diagnosis_metrics
    from grok_retina.evaluation.gou import diagnosis_answers, samples_from_dataset
    from grok_retina.pipeline import GrokPipeline

    model, processor = build(tokens, tokenizer, seed)
    trainer = trainer_for(model, processor, train, work_dir / f"sft_{tokens}_{seed}", epochs, batch, seed, test)
    metrics = trainer.train().metrics
    heldout = trainer.evaluate()
    pipeline = GrokPipeline(model.eval(), processor, measure_missing=False)
    samples = samples_from_dataset(test)
    started = time.perf_counter()
    answers = diagnosis_answers(pipeline, samples)
    scores = diagnosis_metrics(answers, [s.label for s in samples])
    return {"tokens_per_image": tokens, "seed": seed, "answers": answers, "references": [s.label for s in samples],
            **{k: scores[k] for k in ("macro_f1", "accuracy", "unparsed", "chance_macro_f1", "p_value_vs_chance")},
            "heldout_loss": heldout["eval_loss"], "heldout_token_accuracy": heldout["eval_mean_token_accuracy"],
            "train_samples_per_s": metrics["train_samples_per_second"], "train_loss": metrics["train_loss"],
            "train_runtime_s": metrics["train_runtime"],
            "answers_per_s": len(samples) / (time.perf_counter() - started)}


def against_196(runs: list[dict]) -> dict[str, dict]:
    """Per pooled setting and seed: its answers' macro-F1 minus 196 tokens' on the same held-out eyes, with the
    paired bootstrap 95% interval."""
    from grok_retina.evaluation.classification import macro_f1_difference
    from processing.labels import LABELS

    full = {r["seed"]: r for r in runs if r["tokens_per_image"] == 196}
    return {str(t): [{"seed": r["seed"], **macro_f1_difference(full[r["seed"]]["answers"], r["answers"],
                                                              r["references"], LABELS)}
                     for r in runs if r["tokens_per_image"] == t] for t in SETTINGS[1:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_train", type=int, default=320, help="training eyes (the quickstart's)")
    parser.add_argument("--n_test", type=int, default=96, help="held-out eyes (the quickstart's)")
    parser.add_argument("--epochs", type=float, default=6.0, help="over reports and questions (the quickstart's)")
    parser.add_argument("--batch", type=int, default=4, help="rows per step (the quickstart's)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--repeats", type=int, default=15, help="alternating rounds of the throughput steps")
    parser.add_argument("--work_dir", default="outputs/bench_pooling", help="data, trainer outputs and scored runs (reused)")
    timing.add_common_args(parser, "benchmarks/results/pooling.json", "4 train / 2 test eyes, 1 step, 1 seed")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test, args.epochs, args.batch, args.seeds, args.repeats = 4, 2, 0.5, 2, [0], 1
    torch.set_num_threads(args.threads)
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    started = timing.machine()
    work_dir = Path(args.work_dir)
    reports, test = sft_data(work_dir, args.n_train, args.n_test)
    tokenizer = fit_tokenizer(reports)
    train = with_diagnosis_questions(reports)
    throughput = step_throughput(train, len(reports), tokenizer, work_dir, args.batch, args.repeats)
    runs = []
    for index, seed in enumerate(args.seeds):
        for tokens in SETTINGS if index % 2 == 0 else reversed(SETTINGS):
            # each scored run is kept: a rerun with the same budget (or another process's seeds) reuses it
            done = work_dir / f"score_{len(reports)}_{len(test)}_{args.epochs:g}ep_b{args.batch}_{tokens}_{seed}.json"
            if done.is_file():
                runs.append(json.loads(done.read_text()))
            else:
                runs.append(train_and_score(tokens, seed, train, test, tokenizer, work_dir, args.epochs, args.batch))
                partial = done.with_suffix(".partial")
                partial.write_text(json.dumps(runs[-1]))
                os.replace(partial, done)
            print({k: v for k, v in runs[-1].items() if k not in ("answers", "references")}, flush=True)
    quality = {str(t): {key: timing.summarize([r[key] for r in runs if r["tokens_per_image"] == t])
                        for key in ("macro_f1", "chance_macro_f1", "unparsed", "heldout_loss",
                                    "heldout_token_accuracy", "train_samples_per_s")} for t in SETTINGS}
    budget = {"n_train": len(reports), "n_test": len(test), "epochs": args.epochs, "batch": args.batch,
              "seeds": args.seeds, "biomarker_tokens": BIOMARKER_TOKENS, "diagnosis_questions": True}
    record = timing.save(args.out, {"benchmark": "pooling", "tower": TOWER_224, "budget": budget,
                                    "throughput": throughput, "quality": quality,
                                    "macro_f1_vs_196": against_196(runs), "runs": runs}, started)
    print(report.render("pooling", record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
