"""The Space's input checks, result panels, submit handler and Blocks construction (no server, no model)."""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from grok_retina.pipeline import GrokPipeline
from processing.biomarkers import BIOMARKER_NAMES, validate_biomarkers
from tests.tiny_components import fundus_image, oct_image

SPACES = Path(__file__).resolve().parents[1] / "spaces"
sys.path.insert(0, str(SPACES))  # the Space's modules import each other as top-level modules, as on the Hub

import app  # noqa: E402
import panels  # noqa: E402
import validation  # noqa: E402
from validation import InputError, load_image, parse_biomarkers  # noqa: E402

REPORT = (
    "Biomarker Assessments: Macular RNFL thickness is 18.5 µm, thinned. Central subfield thickness 262.0 µm, "
    "within normal limits. Vertical cup-to-disc ratio 0.74, enlarged.\n"
    "Sub-inference: cupping with nerve fibre loss suggests glaucomatous optic neuropathy.\n"
    "Conclusion: consistent with glaucoma."
)
GIVEN = {"rnfl": 28.0, "central_subfield": 262.0, "cup_to_disc_ratio": 0.74}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, side: int = 50_000) -> Path:
    """A 200-byte PNG whose header declares side x side pixels (2.5 GP): a decompression bomb."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + _png_chunk(b"IEND", b""))
    return path


def saved(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


class FakePipeline:
    """GrokPipeline's interface (biomarkers_for, stream, report) with a fixed report streamed in chunks."""

    report = GrokPipeline.report  # the real parsing and verification

    def __init__(self, text: str = REPORT):
        self.text, self.calls = text, []

    def biomarkers_for(self, cfp=None, oct=None, biomarkers=None):
        self.calls.append(("biomarkers_for", cfp, oct, dict(biomarkers or {})))
        values = validate_biomarkers(biomarkers)
        return values, {k: "given" for k, v in values.items() if v is not None}

    def stream(self, cfp=None, oct=None, biomarkers=None, measure=None):
        assert measure is False, "the app measures once (biomarkers_for), never again while streaming"
        self.calls.append(("stream", cfp, oct, biomarkers))
        for start in range(0, len(self.text), 25):
            yield self.text[start : start + 25]


# ----------------------------------------------------------------------------------------------- images


def test_valid_pair_loads_in_the_right_modes(tmp_path):
    cfp = load_image(saved(fundus_image(), tmp_path / "cfp.jpg", quality=90), "cfp")
    scan = load_image(saved(oct_image(), tmp_path / "oct.png"), "oct")
    assert (cfp.mode, cfp.size) == ("RGB", (96, 96))
    assert (scan.mode, scan.size) == ("L", (96, 64))
    assert load_image(None, "oct") is None


def test_file_type_is_read_from_the_bytes_not_the_name(tmp_path):
    corrupt = tmp_path / "scan.png"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match=r"OCT B-scan: 'scan.png' is not a readable image file"):
        load_image(corrupt, "oct")
    gif = saved(fundus_image(), tmp_path / "photo.png", format="GIF")  # a GIF named .png
    with pytest.raises(InputError, match=r"'photo.png' is a GIF file; upload a PNG, JPEG, TIFF, BMP, WebP file"):
        load_image(gif, "cfp")
    renamed = saved(fundus_image(), tmp_path / "photo.dat", format="PNG")  # a PNG under any name is fine
    assert load_image(renamed, "cfp").mode == "RGB"


def test_size_limits(tmp_path, monkeypatch):
    path = saved(fundus_image(size=256), tmp_path / "cfp.png")
    with pytest.raises(InputError, match=r"MB; the limit is"):
        load_image(path, "cfp", max_bytes=1000)
    monkeypatch.setenv("GROK_MAX_UPLOAD_MB", "0.001")
    with pytest.raises(InputError, match=r"the limit is 0.000999 MB"):
        load_image(path, "cfp")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        load_image(empty, "cfp")
    with pytest.raises(InputError, match="at least 32 pixels"):
        load_image(saved(fundus_image(size=16), tmp_path / "tiny.png"), "cfp")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 300
    with pytest.raises(InputError, match="decompression bomb"):
        load_image(bomb, "cfp")
    big = saved(Image.new("RGB", (300, 200), (200, 80, 40)), tmp_path / "big.png")
    with pytest.raises(InputError, match=r"300 x 200 pixels \(0.06 MP\), over the 0.05 MP limit"):
        load_image(big, "cfp", max_pixels=50_000)


def test_truncated_and_multiframe_files(tmp_path):
    whole = saved(fundus_image(size=128), tmp_path / "whole.png").read_bytes()
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match="could not be decoded"):
        load_image(truncated, "cfp")
    stack = tmp_path / "volume.tif"
    oct_image().save(stack, save_all=True, append_images=[oct_image(seed=1)])
    with pytest.raises(InputError, match="holds 2 frames"):
        load_image(stack, "oct")


def test_wrong_modality_in_a_slot(tmp_path):
    with pytest.raises(InputError, match=r"^CFP .*greyscale.*OCT B-scan"):
        load_image(saved(oct_image(), tmp_path / "oct.png"), "cfp")
    with pytest.raises(InputError, match=r"^OCT B-scan: this is a colour image"):
        load_image(saved(fundus_image(), tmp_path / "cfp.png"), "oct")
    grey_as_rgb = saved(oct_image().convert("RGB"), tmp_path / "oct_rgb.jpg")  # a B-scan exported as RGB JPEG
    assert load_image(grey_as_rgb, "oct").mode == "L"


def test_sixteen_bit_oct_is_scaled_not_clipped(tmp_path):
    deep = (np.asarray(oct_image(), dtype=np.uint16) * 200).astype(np.uint16)  # values up to ~51000
    scan = load_image(saved(Image.fromarray(deep), tmp_path / "oct16.png"), "oct")
    pixels = np.asarray(scan)
    assert pixels.max() == 255 and len(np.unique(pixels)) > 50


# ----------------------------------------------------------------------------------------------- biomarkers


def test_biomarker_json_errors_are_listed_not_raised():
    values, errors = parse_biomarkers('{"rnfl": 28.5,', None)
    assert values == {} and errors[0].startswith("Biomarker JSON: not valid JSON") and "line 1" in errors[0]
    values, errors = parse_biomarkers("[1, 2]", None)
    assert errors == ['Biomarker JSON: must be an object mapping biomarker names to numbers, e.g. {"rnfl": 28.5}.']
    values, errors = parse_biomarkers('{"rnf": 28.5, "av_ratio": 9, "inl": "thick", "rpe": 21}', None)
    assert values == {"rpe": 21.0}
    assert len(errors) == 3
    assert "Did you mean rnfl?" in errors[0]
    assert "av_ratio=9 is outside the plausible range" in errors[1]
    assert "inl must be a number" in errors[2]


def test_biomarker_table_and_json_merge():
    table = pd.DataFrame(validation.empty_biomarker_rows(), columns=["biomarker", "unit", "normal range", "value"])
    assert list(table["biomarker"]) == list(BIOMARKER_NAMES)
    table.loc[table["biomarker"] == "rnfl", "value"] = 30.0
    table.loc[table["biomarker"] == "av_ratio", "value"] = 0.7
    values, errors = parse_biomarkers('{"gc_ipl": 70}', table)
    assert errors == [] and values == {"gc_ipl": 70.0, "rnfl": 30.0, "av_ratio": 0.7}
    values, errors = parse_biomarkers('{"rnfl": 25}', table)
    assert errors == ["rnfl is 25 in the JSON but 30 in the table; keep one of them."]
    table.loc[table["biomarker"] == "rpe", "value"] = -4
    _, errors = parse_biomarkers("", table)
    row = list(BIOMARKER_NAMES).index("rpe") + 1
    assert errors == [f"Biomarker table, row {row}: rpe=-4 µm is outside the plausible range [0, 1000] µm; "
                      "check the unit and the measurement, or leave it empty when unknown."]


# ----------------------------------------------------------------------------------------------- panels


def test_panels_mark_unsupported_numbers_and_out_of_range_values():
    report = FakePipeline().report(REPORT, validate_biomarkers(GIVEN), {k: "given" for k in GIVEN})
    spans = panels.report_highlights(report.text, report.verification)
    assert "".join(chunk for chunk, _ in spans) == REPORT
    assert [(c, t) for c, t in spans if t] == [("18.5 µm", "unsupported"), ("262.0 µm", "supported"), ("0.74", "supported")]
    summary = panels.grounding_summary(report.verification)
    assert "did not pass" in summary and "1 unsupported number(s)" in summary and "18.5 µm" in summary
    table = panels.biomarker_table(report.biomarkers, report.assessments, report.biomarker_source)
    out_rows = [row for row in table.split("<tr") if 'class="grok-out"' in row]
    assert len(out_rows) == 1 and "Vertical cup-to-disc ratio" in out_rows[0] and "▲ high" in out_rows[0]
    assert "1 of 37 biomarkers outside the normal range" in table
    assert panels.label_line(report.label) == "Glaucoma (glaucoma)"
    assert panels.label_line(None).startswith("No diagnosis")


# ----------------------------------------------------------------------------------------------- app


def test_generate_streams_then_fills_every_panel(tmp_path):
    fake = FakePipeline()
    cfp, scan = saved(fundus_image(), tmp_path / "cfp.png"), saved(oct_image(), tmp_path / "oct.png")
    updates = list(app.generate(app.LazyPipeline(lambda: fake), str(cfp), str(scan), '{"rnfl": 28.0}', None))
    streamed = [u[1] for u in updates if "Writing" in u[0]]
    assert len(streamed) > 3 and all(REPORT.startswith(s) for s in streamed) and streamed[-1] == REPORT
    status, text, label, table, spans, grounding = updates[-1]
    assert "grok-done" in status and text == REPORT and label == "Glaucoma (glaucoma)"
    assert "grok-biomarker-table" in table and ("18.5 µm", "unsupported") in spans and "did not pass" in grounding
    kind, cfp_in, oct_in, given = fake.calls[0]
    assert kind == "biomarkers_for" and given == {"rnfl": 28.0} and cfp_in.mode == "RGB" and oct_in.mode == "L"


def test_generate_shows_input_errors_without_running_the_model(tmp_path):
    factory_calls = []
    pipeline = app.LazyPipeline(lambda: factory_calls.append(1))
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"not an image at all")
    (status, *rest), = list(app.generate(pipeline, str(corrupt), None, '{"rnfl": "x"}', None))
    assert 'class="grok-error" role="alert"' in status
    assert "&#x27;broken.png&#x27; is not a readable image file" in status and "rnfl must be a number" in status
    (status, *_), = list(app.generate(pipeline, None, None, "", None))
    assert "Upload a colour fundus photograph (CFP), an OCT B-scan, or both." in status
    assert factory_calls == []


def test_model_resolution_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GROK_MODEL", "org/from-env")
    assert app.resolve_model() == "org/from-env"
    monkeypatch.delenv("GROK_MODEL")
    assert app.resolve_model() == "grok-retina/grok-retina"  # spaces/README.md's models[0]
    (tmp_path / "outputs/quickstart/model").mkdir(parents=True)
    assert app.resolve_model() == "outputs/quickstart/model"


def test_build_demo_with_examples(tmp_path, monkeypatch):
    import gradio as gr

    monkeypatch.setenv("GROK_EXAMPLES_DIR", str(tmp_path / "examples"))
    from examples import build_examples

    rows = build_examples()
    assert len(rows) == 3 and rows[2][1] is None and Path(rows[2][0]).name == "skimage-retina-cfp.png"
    for cfp, scan, biomarkers in rows:  # every example passes the app's own checks
        assert load_image(cfp, "cfp").mode == "RGB"
        assert scan is None or load_image(scan, "oct").mode == "L"
        assert parse_biomarkers(biomarkers, None)[1] == []
    assert len(parse_biomarkers(rows[0][2], None)[0]) == 37
    demo = app.build_demo(FakePipeline, examples=rows)
    assert isinstance(demo, gr.Blocks)
    ids = {block.elem_id for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    assert {"grok-cfp", "grok-oct", "grok-submit", "grok-report", "grok-label", "grok-status", "grok-biomarkers",
            "grok-grounding", "grok-highlights"} <= ids


def test_main_queues_requests_and_guards_pixels(monkeypatch):
    import gradio as gr

    launched = {}
    demo = app.build_demo(FakePipeline, examples=[])
    monkeypatch.setattr(app, "build_demo", lambda: demo)
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs, demo=self))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    monkeypatch.setenv("GROK_CONCURRENCY", "2")
    monkeypatch.setenv("GROK_MAX_UPLOAD_MB", "5")
    app.main(["--host", "127.0.0.1", "--port", "7999"])
    assert launched["demo"] is demo and (launched["server_name"], launched["server_port"]) == ("127.0.0.1", 7999)
    assert launched["max_file_size"] == 5 * 1024 * 1024
    assert demo._queue.default_concurrency_limit == 2 and demo._queue.max_size == 16
    assert Image.MAX_IMAGE_PIXELS == validation.MAX_PIXELS
