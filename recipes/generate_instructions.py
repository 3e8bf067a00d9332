"""Stage I: knowledge-guided instruction generation.

    grok-retina instruct --dataset phantom:200 --teacher rules --out outputs/instruct
    OPENAI_API_KEY=... grok-retina instruct --dataset data/manifest.csv --teacher openai --model o3 \
        --concurrency 16 --out outputs/instruct
    grok-retina instruct --dataset data/ --teacher openai --base_url http://localhost:8000/v1 \
        --model Qwen/Qwen2.5-VL-7B-Instruct --send_images --out outputs/instruct

Rerunning the same command resumes: finished samples are never sent to the teacher again.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal

from transformers import HfArgumentParser


@dataclass
class InstructArguments:
    dataset: str = field(
        metadata={"help": "A GROK dataset (manifest .csv/.jsonl, save_to_disk folder, Parquet, Hub id) or phantom:N."}
    )
    out: str = field(metadata={"help": "Output folder: records.jsonl (the resumable log) and dataset/ (the result)."})
    teacher: Literal["rules", "openai"] = field(
        default="rules", metadata={"help": "rules: offline guideline teacher; openai: any OpenAI-compatible endpoint."}
    )
    split: str | None = field(default=None, metadata={"help": "Split to use when the dataset has several."})
    model: str | None = field(default=None, metadata={"help": "Teacher model (default: $GROK_TEACHER_MODEL)."})
    base_url: str | None = field(
        default=None, metadata={"help": "Endpoint URL (default: $OPENAI_BASE_URL, then OpenAI). Key: $OPENAI_API_KEY."}
    )
    concurrency: int = field(default=8, metadata={"help": "Samples (and teacher requests) in flight."})
    limit: int | None = field(default=None, metadata={"help": "Only the first N samples."})
    send_images: bool = field(default=False, metadata={"help": "Send the CFP and central B-scan to a vision teacher."})
    max_retries: int = field(default=5, metadata={"help": "Retries per request on 429, 5xx, timeouts."})
    timeout: float = field(default=60.0, metadata={"help": "Seconds per teacher request."})
    price_per_1k_input: float | None = field(default=None, metadata={"help": "USD per 1k prompt tokens."})
    price_per_1k_output: float | None = field(default=None, metadata={"help": "USD per 1k completion tokens."})
    seed: int = field(default=0, metadata={"help": "Seed of the phantom and of the rules teacher's wording."})


def load_dataset_arg(spec: str, split: str | None, seed: int):
    """The ``--dataset`` (see `processing.sources.load_source`; a bare ``phantom:N`` uses ``--seed``) as one split."""
    from datasets import DatasetDict

    from processing.sources import load_source

    data = load_source(spec, split=split, default_seed=seed)
    if isinstance(data, DatasetDict):
        raise ValueError(f"--dataset {spec} has splits {list(data)}; choose one with --split.")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(InstructArguments, prog="grok-retina instruct", description=__doc__.splitlines()[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    from grok_retina.instruct import generate_instructions
    from grok_retina.teachers import OpenAITeacher, RulesTeacher, TeacherError

    try:
        dataset = load_dataset_arg(args.dataset, args.split, args.seed)
    except (FileNotFoundError, ValueError) as error:
        print(f"grok-retina instruct: {error}", file=sys.stderr)
        return 2
    if args.teacher == "rules":
        teacher = RulesTeacher(seed=args.seed)
    else:
        teacher = OpenAITeacher(
            args.model, base_url=args.base_url, concurrency=args.concurrency, max_retries=args.max_retries,
            timeout=args.timeout, send_images=args.send_images, price_per_1k_input=args.price_per_1k_input,
            price_per_1k_output=args.price_per_1k_output,
        )
    try:
        generate_instructions(dataset, teacher, args.out, concurrency=args.concurrency, limit=args.limit)
    except TeacherError as error:
        print(f"grok-retina instruct: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
