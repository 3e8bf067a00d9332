"""The main job: the whole GROK pipeline on the phantom, offline, in minutes on a CPU.

    grok-retina quickstart [--output_dir outputs/quickstart] [--n_train 640] [--fresh true]
"""

from __future__ import annotations

from transformers import HfArgumentParser

from grok_retina.quickstart import QuickstartArguments, run_quickstart


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(QuickstartArguments).parse_args_into_dataclasses(args=argv)
    run_quickstart(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
