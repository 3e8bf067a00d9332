"""Image-token pooling: SFT throughput and phantom macro-F1 at 196, 49 and 16 tokens per image.

    python benchmarks/bench_pooling.py [--n_train 256] [--n_test 48] [--epochs 2] [--seeds 0 1] \
        [--repeats 5] [--threads 1] [--work_dir outputs/bench_pooling] \
        [--out benchmarks/results/pooling.json] [--quick]

Towers: the tiny ViT (width 32, 2 blocks) at 224 px with 16 px patches, a 14 x 14 grid = 196 tokens,
average-pooled to 49 (7 x 7) or 16 (4 x 4); LM: the tiny Qwen2 backbone with a tokenizer fitted to the data
(`grok-retina quickstart`'s Stage III). Data: phantom eyes -> Stage I with the offline rules teacher, split
by patient. Throughput: a full SFT step (TRL collator batch of ``--batch`` samples, forward + backward +
AdamW step) of the three models alternating in one process. Macro-F1: per seed and setting, the same SFT
budget (``--epochs`` over ``--n_train`` samples, `GrokSFTTrainer`, full fine-tuning as the quickstart),
then the held-out completion loss and token accuracy (teacher forcing: meaningful even when a small budget
leaves reports unfinished) and greedy reports for the held-out eyes through `GrokPipeline`; the settings'
order alternates across seeds, and the trainer's end-to-end samples/s is recorded too.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report, timing  # noqa: E402
from modeling_grok import GrokForConditionalGeneration, GrokProcessor  # noqa: E402
from modeling_grok.configuration_grok import VIT_TINY_TEST  # noqa: E402

TOWER_224 = {**VIT_TINY_TEST, "img_size": 224}
SETTINGS = (196, 49, 16)


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

    return train_tokenizer(_chat_texts(train), vocab_size=2048)


def build(tokens: int, tokenizer, seed: int) -> tuple[GrokForConditionalGeneration, GrokProcessor]:
    """The quickstart's tiny backbone with 224 px tiny towers (on a copy of ``tokenizer``)."""
    from grok_retina.tiny_backbone import tiny_text_model

    tokenizer = copy.deepcopy(tokenizer)
    torch.manual_seed(seed)
    model = GrokForConditionalGeneration.from_components(
        tiny_text_model(tokenizer, seed=seed), tokenizer=tokenizer, cfp_vision_config=dict(TOWER_224),
        oct_vision_config=dict(TOWER_224), tokens_per_image=tokens,
    )
    model.freeze_vision_towers()
    return model, GrokProcessor.from_config(tokenizer, model.config)


def trainer_for(model, processor, train, output_dir: Path, epochs: float, batch: int, seed: int, test=None):
    """`GrokSFTTrainer` with the quickstart's Stage III settings (no checkpoints, no progress bars)."""
    from grok_retina.training import GrokSFTConfig, GrokSFTTrainer

    args = GrokSFTConfig(
        output_dir=str(output_dir), num_train_epochs=epochs, per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch, learning_rate=2e-3, projector_lr=2e-3, lr_scheduler_type="cosine",
        warmup_steps=0.03, logging_steps=50, save_strategy="no", report_to=[], use_cpu=True, max_length=None,
        dataloader_num_workers=0, seed=seed, disable_tqdm=True,
    )
    return GrokSFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=test, processing_class=processor)


def step_throughput(train, tokenizer, work_dir: Path, batch: int, repeats: int) -> dict:
    """Samples/s and tokens/s of one SFT step per setting, alternating the settings."""
    steps, sequence = {}, {}
    for tokens in SETTINGS:
        model, processor = build(tokens, tokenizer, seed=0)
        trainer = trainer_for(model.train(), processor, train, work_dir / "throughput", 1, batch, 0)
        inputs = trainer.data_collator([train[i] for i in range(batch)])
        inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "labels") or k.startswith(
            ("pixel_values", "oct_slices"))}
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        sequence[tokens] = int(inputs["attention_mask"].sum()) / batch

        def step(model=model, inputs=inputs, optimizer=optimizer) -> None:
            model(**inputs).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        steps[tokens] = step
    runs = timing.alternate({str(t): steps[t] for t in SETTINGS}, repeats=repeats, warmup=1)
    out = {}
    for tokens in SETTINGS:
        seconds = runs[str(tokens)]
        out[str(tokens)] = {
            "mean_tokens_per_sample": sequence[tokens],
            "step_s": timing.summarize(seconds),
            "samples_per_s": timing.summarize([batch / s for s in seconds]),
            "tokens_per_s": timing.summarize([batch * sequence[tokens] / s for s in seconds]),
            "speedup_over_196": timing.ratio(runs["196"], seconds),
        }
    return out


def train_and_score(tokens: int, seed: int, train, test, tokenizer, work_dir: Path, epochs: float, batch: int,
                    max_new_tokens: int) -> dict:
    """After the fixed SFT budget: the held-out completion loss and token accuracy (teacher forcing), and the
    macro-F1 of the diagnoses parsed from greedy reports for the held-out eyes."""
    from grok_retina.evaluation.classification import diagnosis_metrics
    from grok_retina.evaluation.gou import generate_reports, samples_from_dataset
    from grok_retina.pipeline import GrokPipeline
    from grok_retina.report_parsing import parse_label

    model, processor = build(tokens, tokenizer, seed)
    trainer = trainer_for(model, processor, train, work_dir / f"sft_{tokens}_{seed}", epochs, batch, seed, test)
    metrics = trainer.train().metrics
    heldout = trainer.evaluate()
    pipeline = GrokPipeline(model.eval(), processor, max_new_tokens=max_new_tokens, measure_missing=False)
    samples = samples_from_dataset(test)
    started = time.perf_counter()
    reports = generate_reports(pipeline, samples, batch_size=16, desc=f"{tokens} tokens, seed {seed}")
    scores = diagnosis_metrics([parse_label(r) for r in reports], [s.label for s in samples])
    return {"tokens_per_image": tokens, "seed": seed, "macro_f1": scores["macro_f1"], "accuracy": scores["accuracy"],
            "unparsed": scores["unparsed"], "heldout_loss": heldout["eval_loss"],
            "heldout_token_accuracy": heldout["eval_mean_token_accuracy"],
            "train_samples_per_s": metrics["train_samples_per_second"], "train_loss": metrics["train_loss"],
            "eval_reports_per_s": len(samples) / (time.perf_counter() - started)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_train", type=int, default=256)
    parser.add_argument("--n_test", type=int, default=48)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds of the throughput steps")
    parser.add_argument("--max_new_tokens", type=int, default=320)
    parser.add_argument("--work_dir", default="outputs/bench_pooling", help="data and trainer outputs (cached data)")
    timing.add_common_args(parser, "benchmarks/results/pooling.json", "4 train / 2 test eyes, 1 step, 1 seed")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test, args.epochs, args.batch, args.seeds = 4, 2, 0.5, 2, [0]
        args.repeats, args.max_new_tokens = 1, 4
    torch.set_num_threads(args.threads)
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    started = timing.machine()
    work_dir = Path(args.work_dir)
    train, test = sft_data(work_dir, args.n_train, args.n_test)
    tokenizer = fit_tokenizer(train)
    throughput = step_throughput(train, tokenizer, work_dir, args.batch, args.repeats)
    runs = []
    for index, seed in enumerate(args.seeds):
        for tokens in SETTINGS if index % 2 == 0 else reversed(SETTINGS):
            runs.append(train_and_score(tokens, seed, train, test, tokenizer, work_dir, args.epochs, args.batch,
                                        args.max_new_tokens))
            print(runs[-1], flush=True)
    quality = {str(t): {key: timing.summarize([r[key] for r in runs if r["tokens_per_image"] == t])
                        for key in ("macro_f1", "unparsed", "heldout_loss", "heldout_token_accuracy",
                                    "train_samples_per_s")} for t in SETTINGS}
    budget = {"n_train": len(train), "n_test": len(test), "epochs": args.epochs, "batch": args.batch,
              "seeds": args.seeds, "max_new_tokens": args.max_new_tokens}
    record = timing.save(args.out, {"benchmark": "pooling", "tower": TOWER_224, "budget": budget,
                                    "throughput": throughput, "quality": quality, "runs": runs}, started)
    print(report.render("pooling", record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
