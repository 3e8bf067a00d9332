"""``grok-retina publish model|dataset|space --repo-id ORG/NAME [--private] [--dry-run DIR]``.

The token comes from ``HF_TOKEN`` or ``huggingface-cli login``; ``--dry-run DIR`` writes the exact tree
that would be uploaded and contacts nothing.
"""

from __future__ import annotations

import argparse
import sys

from grok_retina.publish import publish
from hub_cards.cards import DEFAULT_BASE_MODEL, DEFAULT_MODEL_REPO

DEFAULT_MODEL_DIR = "outputs/quickstart/model"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="grok-retina publish", description=__doc__.split("\n\n")[0])
    kinds = top.add_subparsers(dest="kind", required=True, metavar="model|dataset|space")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repo-id", required=True, help="target repo, 'org/name'")
    common.add_argument("--private", action="store_true", help="create the repo private (if it does not exist)")
    common.add_argument("--dry-run", metavar="DIR", help="write the tree to DIR (new or empty) and upload nothing")
    common.add_argument("--license", default="apache-2.0", help="Hub license id (default: apache-2.0)")

    model = kinds.add_parser("model", parents=[common], help="weights, processor, remote code and model card")
    model.add_argument("--model-dir", default=DEFAULT_MODEL_DIR, help=f"saved GROK folder (default: {DEFAULT_MODEL_DIR})")
    model.add_argument("--results", help="evaluation results JSON (fills the card's model-index)")
    model.add_argument("--base-model", default=DEFAULT_BASE_MODEL, help=f"base model id (default: {DEFAULT_BASE_MODEL})")
    model.add_argument("--dataset", action="append", dest="datasets", metavar="ID",
                       help="training dataset id (repeatable; default: the evaluated dataset)")

    dataset = kinds.add_parser("dataset", parents=[common], help="Parquet shards and dataset card")
    dataset.add_argument("--source", required=True, help="manifest, save_to_disk folder or Parquet files")
    dataset.add_argument("--provenance", required=True, choices=("phantom", "real"),
                         help="synthetic phantom samples, or real images (the card then asks for consent checks)")
    dataset.add_argument("--model-repo-id", default=DEFAULT_MODEL_REPO, help="model trained on it (linked in the card)")
    dataset.add_argument("--max-shard-rows", type=int, default=500, help="rows per Parquet shard (default: 500)")

    space = kinds.add_parser("space", parents=[common], help="the Gradio demo")
    space.add_argument("--model-id", default=DEFAULT_MODEL_REPO, help=f"model the Space loads (default: {DEFAULT_MODEL_REPO})")
    space.add_argument("--package-spec", help="pip requirement for grok-retina (default: a wheel uploaded into the Space)")
    space.add_argument("--spaces-dir", help="folder with app.py (default: the checkout's spaces/)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    options: dict = {"license": args.license}
    if args.kind == "model":
        source = args.model_dir
        options.update(results=args.results, base_model=args.base_model, datasets=args.datasets)
    elif args.kind == "dataset":
        source = args.source
        options.update(synthetic=args.provenance == "phantom", model_repo_id=args.model_repo_id,
                       max_shard_rows=args.max_shard_rows)
    else:
        source = args.spaces_dir
        options.update(model_id=args.model_id, package_spec=args.package_spec)
    try:
        result = publish(args.kind, args.repo_id, source, private=args.private, dry_run_dir=args.dry_run, **options)
    except (ValueError, FileNotFoundError) as error:  # PublishError, CardError, ResultsFileError, ManifestError, bad repo ids
        print(f"grok-retina publish {args.kind}: {error}", file=sys.stderr)
        return 2
    where = f"dry run: {len(result.files)} files in {result.tree}" if result.dry_run else f"uploaded {len(result.files)} files to {result.url}"
    print(f"{args.kind} {args.repo_id}: {where}")
    for name in result.files:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
