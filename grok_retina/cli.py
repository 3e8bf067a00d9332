"""The ``grok-retina`` command: each subcommand is a recipe module's ``main(argv)``."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, one-line help). Modules are imported only when their subcommand runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("recipes.quickstart", "the whole pipeline on the phantom, offline, ending in a report"),
    "report": ("recipes.report", "a grounded report for your own CFP + OCT images"),
    "data": ("recipes.data", "phantom generation and manifest validation (data phantom|validate)"),
    "biomarkers": ("recipes.measure_biomarkers", "stage 0: measure the 37 biomarkers from the images"),
    "instruct": ("recipes.generate_instructions", "stage I: knowledge-guided instruction generation"),
    "align": ("recipes.align_oct", "stage II: contrastive OCT-biomarker alignment"),
    "probe": ("recipes.probe_biomarkers", "stage II: linear-probe biomarker regression"),
    "sft": ("recipes.sft_grok", "stage III: TRL SFT + PEFT LoRA"),
    "evaluate": ("recipes.evaluate_gou", "the Grounded Ophthalmic Understanding benchmark"),
    "publish": ("recipes.publish", "push a model, dataset or Space to the Hugging Face Hub"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())
    return f"usage: grok-retina <command> [options]\n\ncommands:\n{rows}\n\n'grok-retina <command> --help' for a command's options."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"grok-retina: unknown command {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
