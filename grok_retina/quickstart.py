"""The whole GROK pipeline on the phantom, offline and on CPU: data -> Stage I -> II -> III -> evaluation -> report.

Each stage writes into ``output_dir`` and is skipped when its output is already there, so an interrupted run
picks up where it stopped (Stage I resumes sample by sample, Stages II and III from their last checkpoint). The
options that shaped each started stage are recorded in ``quickstart_options.json``; a re-run with other values
for them is refused rather than mixing outputs.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from processing.labels import LABELS

from .evaluation.report import atomic_write_text

OPTIONS_FILE = "quickstart_options.json"


@dataclass
class QuickstartArguments:
    output_dir: str = field(default="outputs/quickstart", metadata={"help": "Where every stage writes."})
    n_train: int = field(default=320, metadata={"help": "Phantom eyes for training (Stages I-III)."})
    n_test: int = field(default=96, metadata={"help": "Held-out phantom eyes (other patients) for evaluation."})
    seed: int = field(default=0)
    align_epochs: int = field(default=8, metadata={"help": "Stage II epochs (tiny tower)."})
    sft_epochs: float = field(default=6.0, metadata={"help": "Stage III epochs (tiny backbone)."})
    biomarker_tokens: int = field(
        default=16, metadata={"help": "LM tokens projected from the biomarker vector (0: biomarkers as prompt text only)."}
    )
    diagnosis_questions: bool = field(
        default=True, metadata={"help": "Train on a short diagnosis question per eye besides its report."}
    )
    max_new_tokens: int = field(default=320, metadata={"help": "Report length limit at evaluation."})
    fresh: bool = field(default=False, metadata={"help": "Delete output_dir first instead of resuming."})


class _Stage:
    """Prints a banner, times the stage and records it for the summary."""

    def __init__(self, log: list[dict], number: int, name: str, output: Path):
        self.log, self.number, self.name, self.output = log, number, name, output

    def __enter__(self):
        print(f"\n=== Stage {self.number}/6: {self.name} -> {self.output}", flush=True)
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.log.append({"stage": self.name, "seconds": round(time.perf_counter() - self.started, 1), "output": str(self.output)})


def stage_options(args: QuickstartArguments) -> dict[str, dict]:
    """The options that shape each resumable stage's outputs (evaluation and the example report always rerun)."""
    return {
        "data": {"n_train": args.n_train, "n_test": args.n_test, "seed": args.seed},
        "instruct": {"seed": args.seed},
        "align": {"n_train": args.n_train, "seed": args.seed, "align_epochs": args.align_epochs},
        "sft": {"seed": args.seed, "sft_epochs": args.sft_epochs, "biomarker_tokens": args.biomarker_tokens,
                "diagnosis_questions": args.diagnosis_questions},
    }  # fmt: skip


def _recorded_options(out: Path) -> dict[str, dict]:
    path = out / OPTIONS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def check_options(out: Path, options: dict[str, dict]) -> None:
    """Refuse to resume in ``out`` when a stage already started there was run with other ``options``."""
    differing: dict[str, tuple] = {}
    for stage, recorded in _recorded_options(out).items():
        for name, value in options.get(stage, {}).items():
            if name in recorded and recorded[name] != value:
                differing[name] = (recorded[name], value)
    if differing:
        listed = ", ".join(f"--{name} {old!r} there, {new!r} now" for name, (old, new) in sorted(differing.items()))
        raise ValueError(
            f"{out} holds a quickstart run made with other options ({listed}); resuming would mix their outputs. "
            "Pass the same values to resume it, --fresh true to delete it and start over, or another --output_dir."
        )


def record_options(out: Path, stage: str, options: dict) -> None:
    """Note (atomically) the ``options`` a stage is about to write its outputs in ``out`` with."""
    recorded = _recorded_options(out)
    if recorded.get(stage) != options:
        atomic_write_text(out / OPTIONS_FILE, json.dumps({**recorded, stage: options}, indent=2) + "\n")


def _last_checkpoint(folder: Path) -> Path | None:
    """The newest ``checkpoint-<step>`` folder in ``folder``, if any."""
    from .alignment import list_checkpoints

    found = list_checkpoints(folder)
    return found[-1] if found else None


def _data(args: QuickstartArguments, folder: Path):
    from datasets import DatasetDict, load_from_disk

    from processing.grok_dataset import split_by_patient
    from processing.phantom import phantom_dataset

    if not (folder / "dataset_dict.json").is_file():
        total = args.n_train + args.n_test
        splits = split_by_patient(phantom_dataset(total, seed=args.seed), val_fraction=args.n_test / total, seed=args.seed)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        DatasetDict({"train": splits["train"], "test": splits["validation"]}).save_to_disk(tmp)
        tmp.rename(folder)
    return load_from_disk(folder)


def stage3_training_args(output_dir: str | Path, epochs: float, seed: int, diagnosis_questions: bool = True,
                         **overrides):
    """The quickstart's Stage III `GrokSFTConfig` (full fine-tuning of the tiny backbone on CPU, as
    `sft_tiny.yaml`); ``overrides`` replace any of its fields."""
    from .training import GrokSFTConfig

    settings = dict(
        output_dir=str(output_dir), num_train_epochs=epochs, per_device_train_batch_size=4, learning_rate=2e-3,
        projector_lr=2e-3, lr_scheduler_type="cosine", warmup_steps=0.03, logging_steps=20, save_strategy="epoch",
        save_total_limit=1, report_to=[], use_cpu=True, bf16=False, max_length=None, dataloader_num_workers=0,
        seed=seed, gradient_checkpointing=False, diagnosis_questions=diagnosis_questions,
        train_sampling_strategy="group_by_length" if diagnosis_questions else "random",
    )
    return GrokSFTConfig(**{**settings, **overrides})


def run_quickstart(args: QuickstartArguments) -> dict:
    """Run (or resume) every stage; returns the summary that is also written to ``output_dir/summary.json``."""
    from trl import ModelConfig, ScriptArguments

    from recipes import align_oct

    from .evaluation.gou import evaluate_model, samples_from_dataset
    from .instruct import generate_instructions
    from .pipeline import GrokPipeline
    from .sft import GrokComponentArguments, run_sft
    from .teachers.rules_teacher import RulesTeacher

    out = Path(args.output_dir)
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    options = stage_options(args)
    check_options(out, options)
    log: list[dict] = []

    with _Stage(log, 1, "phantom data (paired CFP + OCT, 37 ground-truth biomarkers)", out / "data"):
        record_options(out, "data", options["data"])
        data = _data(args, out / "data")
        print(f"{len(data['train'])} training and {len(data['test'])} held-out eyes (disjoint patients).")

    with _Stage(log, 2, "Stage I: knowledge-guided instructions (offline rules teacher)", out / "instruct"):
        record_options(out, "instruct", options["instruct"])
        teacher = RulesTeacher(seed=args.seed)
        train_sft = generate_instructions(data["train"], teacher, out / "instruct")
        test_sft = generate_instructions(data["test"], teacher, out / "instruct_test")

    align_dir = out / "align"
    with _Stage(log, 3, "Stage II: OCT-biomarker contrastive alignment (tiny tower)", align_dir):
        if not (align_dir / "oct_tower").is_dir():
            record_options(out, "align", options["align"])
            resume = ["--resume_from_checkpoint", "latest"] if _last_checkpoint(align_dir) else []
            align_oct.main([
                "--preset", "tiny", "--dataset", str(out / "data"), "--dataset_split", "train",
                "--num_train_epochs", str(args.align_epochs), "--output_dir", str(align_dir), "--seed", str(args.seed),
                "--per_device_train_batch_size", str(min(32, max(2, args.n_train // 4))),  # the preset's 32, or less
                *resume,
            ])
        else:
            print("aligned tower found; skipping")

    model_dir = out / "model"
    with _Stage(log, 4, "Stage III: SFT of the tiny backbone (TRL SFTTrainer)", model_dir):
        if not (model_dir / "config.json").is_file():
            record_options(out, "sft", options["sft"])
            training = stage3_training_args(out / "sft", args.sft_epochs, args.seed, args.diagnosis_questions)
            components = GrokComponentArguments(
                text_model="tiny", towers="tiny", tokens_per_image=16, tiny_vocab_size=4096,
                biomarker_tokens=args.biomarker_tokens,
                oct_encoder=str(align_dir / "oct_tower"),
                merged_output_dir=str(model_dir),
            )
            last = _last_checkpoint(out / "sft")
            training.resume_from_checkpoint = str(last) if last else None
            run_sft(ScriptArguments(dataset_name=str(out / "instruct" / "dataset")), training,
                    ModelConfig(use_peft=False), components)
        else:
            print("trained model found; skipping")

    pipeline = GrokPipeline.from_pretrained(model_dir, device="cpu", max_new_tokens=args.max_new_tokens, measure_missing=False)
    with _Stage(log, 5, "evaluation: Grounded Ophthalmic Understanding on held-out eyes", out / "eval"):
        result, _ = evaluate_model(
            pipeline, samples_from_dataset(test_sft), model_name=str(model_dir), dataset_name="grok-retina phantom",
            split="test", out_dir=out / "eval", embeddings=False,
            conditioning_rows=test_sft.select(range(min(32, len(test_sft)))),
            diagnosis_question=args.diagnosis_questions,
        )
        print(result.to_markdown())
        gap = result.sections["conditioning"]
        print(f"Conditioning: completion loss {gap['own_loss']:.3f} nats/token with each eye's own inputs, "
              f"{gap['other_loss']:.3f} with another eye's (gap {gap['gap']:.3f}; near 0 = the model ignores its inputs).")

    with _Stage(log, 6, "a report for a new CFP + OCT pair", out / "example_report.json"):
        from processing.phantom import RetinaPhantom

        new = RetinaPhantom(seed=args.seed + 1000)[0]
        report = pipeline(cfp=new["cfp"], oct=new["oct"][0], biomarkers=new["biomarkers"])
        atomic_write_text(out / "example_report.json",
                          json.dumps({"true_label": LABELS[new["label"]], **report.to_dict()}, indent=2, default=str))
        print(report.text)
        print(f"\nPredicted: {report.label}   true: {LABELS[new['label']]}   grounding score: {report.verification.grounding:.2f}")

    summary = {
        "stages": log,
        **{
            name: {key: result.sections[section][key]
                   for key in ("macro_f1", "chance_macro_f1", "p_value_vs_chance", "accuracy")}
            for name, section in (("report_diagnosis", "diagnosis"), ("diagnosis_question", "diagnosis_question"))
            if section in result.sections
        },
        "conditioning": gap,
        "model": str(model_dir),
        "train_examples": len(train_sft),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    _print_summary(summary)
    return summary


def _print_summary(summary: dict) -> None:
    print("\n=== Summary")
    width = max(len(s["stage"]) for s in summary["stages"])
    for s in summary["stages"]:
        print(f"{s['stage']:<{width}}  {s['seconds']:>7.1f} s  {s['output']}")
    total = sum(s["seconds"] for s in summary["stages"])
    print(f"{'total':<{width}}  {total:>7.1f} s")
    for name, what in (("diagnosis_question", "short answers to the diagnosis question"),
                       ("report_diagnosis", "diagnoses named by the reports' conclusions")):
        if name in summary:
            d = summary[name]
            print(f"Held-out macro-F1 of the {what}: {d['macro_f1']:.3f} (chance for these predictions "
                  f"{d['chance_macro_f1']:.3f}, permutation p = {d['p_value_vs_chance']:.3f}), accuracy {d['accuracy']:.3f}.")
    print(f"Load the model with AutoModelForImageTextToText.from_pretrained({summary['model']!r}) "
          "or GrokPipeline.from_pretrained(...).")
