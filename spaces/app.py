"""GROK Space: upload a CFP and an OCT B-scan (optionally biomarkers), read a grounded report as it streams.

Run locally with ``python spaces/app.py [--host 127.0.0.1] [--port 7860]``. The model is ``GROK_MODEL`` (a folder
or Hub id), else the quickstart's output ``outputs/quickstart/model`` when it exists, else the first ``models``
entry of this folder's README.md (the published model), else ``grok-retina/grok-retina``.
"""

from __future__ import annotations

import argparse
import functools
import html
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from examples import build_examples, examples_dir
from panels import HIGHLIGHT_COLOURS, biomarker_table, grounding_summary, label_line, report_highlights
from validation import FILE_TYPES, MAX_PIXELS, InputError, empty_biomarker_rows, load_image, max_upload_bytes, parse_biomarkers

HERE = Path(__file__).resolve().parent
QUICKSTART_MODEL = Path("outputs/quickstart/model")
FALLBACK_MODEL = "grok-retina/grok-retina"
CSS = ".grok-error{color:#8a1c12;background:#fde2e1;padding:.5em 1em;border-radius:6px}"
log = logging.getLogger("grok-space")


def resolve_model() -> str:
    """The model to load: ``GROK_MODEL``, the quickstart's output, the README's ``models[0]``, or the default."""
    if os.environ.get("GROK_MODEL"):
        return os.environ["GROK_MODEL"]
    if QUICKSTART_MODEL.is_dir():
        return str(QUICKSTART_MODEL)
    readme = HERE / "README.md"
    if readme.is_file():
        from huggingface_hub import SpaceCard

        models = SpaceCard.load(readme).data.get("models") or []
        if models:
            return models[0]
    return FALLBACK_MODEL


def default_pipeline_factory() -> Any:
    from grok_retina.pipeline import GrokPipeline

    max_new_tokens = int(os.environ.get("GROK_MAX_NEW_TOKENS", "512"))
    return GrokPipeline.from_pretrained(resolve_model(), device="cpu", max_new_tokens=max_new_tokens)


class LazyPipeline:
    """Builds the pipeline on first use (once, whichever request comes first)."""

    def __init__(self, factory: Callable[[], Any]):
        self._factory, self._pipeline, self._lock = factory, None, threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._pipeline is None:
                self._pipeline = self._factory()
            return self._pipeline


def _status(kind: str, text: str | list[str]) -> str:
    lines = [text] if isinstance(text, str) else text
    body = "<br>".join(html.escape(line) for line in lines)
    role = ' role="alert"' if kind == "error" else ""
    return f'<div class="grok-{kind}"{role}>{body}</div>'


def generate(pipeline: LazyPipeline, cfp_file, oct_file, biomarker_json, biomarker_rows) -> Iterator[tuple]:
    """The submit handler: yields (status, report, label, biomarker table, highlighted report, grounding)."""
    blank = ("", "", "", None, "")
    errors, images = [], {}
    for slot, path in (("cfp", cfp_file), ("oct", oct_file)):
        try:
            images[slot] = load_image(path, slot)
        except InputError as error:
            errors.append(str(error))
    if not errors and images["cfp"] is None and images["oct"] is None:
        errors.append("Upload a colour fundus photograph (CFP), an OCT B-scan, or both.")
    given, biomarker_errors = parse_biomarkers(biomarker_json, biomarker_rows)
    errors += biomarker_errors
    if errors:
        yield (_status("error", errors), *blank)
        return
    try:
        pipe = pipeline.get()
        yield (_status("info", "Measuring the biomarkers that were not given…"), *blank)
        values, source = pipe.biomarkers_for(cfp=images["cfp"], oct=images["oct"], biomarkers=given)
        text = ""
        for chunk in pipe.stream(cfp=images["cfp"], oct=images["oct"], biomarkers=values, measure=False):
            text += chunk
            yield (_status("info", "Writing the report…"), text, "", "", None, "")
        report = pipe.report(text.strip(), values, source)
    except Exception as error:  # shown on the page; the server keeps running
        log.exception("report generation failed")
        yield (_status("error", f"The model failed: {type(error).__name__}: {error}"), *blank)
        return
    yield (
        _status("done", "Done. Research software — not a medical device; not for clinical decisions."),
        report.text,
        label_line(report.label),
        biomarker_table(report.biomarkers, report.assessments, report.biomarker_source),
        report_highlights(report.text, report.verification),
        grounding_summary(report.verification),
    )


def preview(path: str | None, slot: str) -> Any:
    """The uploaded image as the model will read it; nothing for an unusable file (submit explains why)."""
    try:
        return load_image(path, slot)
    except InputError:
        return None


def build_demo(pipeline_factory: Callable[[], Any] | None = None, examples: list[list] | None = None) -> gr.Blocks:
    """The Blocks app; ``pipeline_factory`` returns an object with GrokPipeline's ``biomarkers_for``, ``stream``
    and ``report`` (default: `GrokPipeline` on `resolve_model`), built at the first request."""
    pipeline = LazyPipeline(pipeline_factory or default_pipeline_factory)
    examples = build_examples() if examples is None else examples
    with gr.Blocks(title="GROK retinal report") as demo:
        gr.Markdown(
            "# GROK: grounded retinal report\nUpload a colour fundus photograph and an OCT B-scan; biomarkers you "
            "leave out are measured from the images. **Research software — not a medical device; not for "
            "clinical decisions.**"
        )
        with gr.Row():
            with gr.Column():
                cfp_file = gr.File(label="CFP (colour fundus photograph)", file_types=FILE_TYPES, elem_id="grok-cfp")
                cfp_preview = gr.Image(label="CFP as read", interactive=False, height=220, elem_id="grok-cfp-preview")
            with gr.Column():
                oct_file = gr.File(label="OCT B-scan (greyscale)", file_types=FILE_TYPES, elem_id="grok-oct")
                oct_preview = gr.Image(label="OCT as read", interactive=False, height=220, elem_id="grok-oct-preview")
        with gr.Accordion("Biomarkers (optional)", open=False, elem_id="grok-biomarker-inputs"):
            biomarker_json = gr.Textbox(label="As JSON", lines=4, elem_id="grok-biomarker-json",
                                        placeholder='{"rnfl": 28.5, "cup_to_disc_ratio": 0.45}')
            biomarker_rows = gr.Dataframe(
                value=empty_biomarker_rows(), headers=["biomarker", "unit", "normal range", "value"],
                datatype=["str", "str", "str", "number"], static_columns=[0, 1, 2], label="Or in the table",
                elem_id="grok-biomarker-table-input", max_height=300,
            )
        submit = gr.Button("Write the report", variant="primary", elem_id="grok-submit")
        status = gr.HTML(elem_id="grok-status")
        with gr.Row():
            with gr.Column(scale=3):
                report = gr.Textbox(label="Report", lines=14, max_lines=30, interactive=False, elem_id="grok-report")
            with gr.Column(scale=2):
                label = gr.Textbox(label="Predicted label", interactive=False, elem_id="grok-label")
                grounding = gr.HTML(elem_id="grok-grounding")
        highlights = gr.HighlightedText(label="Grounding check: numbers in the report", color_map=HIGHLIGHT_COLOURS,
                                        show_legend=True, elem_id="grok-highlights")
        table = gr.HTML(elem_id="grok-biomarkers")
        if examples:
            gr.Examples(examples, inputs=[cfp_file, oct_file, biomarker_json], label="Examples (phantom pairs, CC0 photo)")
        cfp_file.change(functools.partial(preview, slot="cfp"), cfp_file, cfp_preview)
        oct_file.change(functools.partial(preview, slot="oct"), oct_file, oct_preview)
        submit.click(
            functools.partial(generate, pipeline),
            inputs=[cfp_file, oct_file, biomarker_json, biomarker_rows],
            outputs=[status, report, label, table, highlights, grounding],
            concurrency_id="grok-model",
        )
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="GROK Gradio demo")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL refuses larger images wherever it opens one
    demo = build_demo()
    demo.queue(
        default_concurrency_limit=int(os.environ.get("GROK_CONCURRENCY", "1")),
        max_size=int(os.environ.get("GROK_QUEUE_SIZE", "16")),
    ).launch(
        server_name=args.host, server_port=args.port, max_file_size=max_upload_bytes(),
        allowed_paths=[str(examples_dir())], css=CSS,
    )


if __name__ == "__main__":
    main()
