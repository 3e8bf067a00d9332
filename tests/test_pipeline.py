"""GrokPipeline: batched inference, streaming, structured and verified output."""

import re
import time

import pytest

from grok_retina.pipeline import GrokPipeline, GrokReport
from grok_retina.report_parsing import parse_label
from processing.biomarkers import BIOMARKER_NAMES, BiomarkerError
from tests.tiny_components import fundus_image, oct_image, tiny_model_and_processor


@pytest.fixture(scope="module")
def pipe():
    model, processor = tiny_model_and_processor()
    return GrokPipeline(model, processor, max_new_tokens=12, measure_missing=False)


BIOMARKERS = {"central_subfield": 340.0, "cup_to_disc_ratio": 0.72}


def test_single_report_is_structured_and_verified(pipe):
    report = pipe(cfp=fundus_image(), oct=oct_image(), biomarkers=BIOMARKERS)
    assert isinstance(report, GrokReport) and report.text
    assert report.label == parse_label(report.text)
    assert set(report.assessments) == set(BIOMARKER_NAMES)
    assert report.assessments["cup_to_disc_ratio"].status == "high"
    assert report.biomarker_source == {"central_subfield": "given", "cup_to_disc_ratio": "given"}
    assert 0.0 <= report.verification.grounding <= 1.0
    assert report.to_dict()["verification"]["passed"] == report.verification.passed


def test_batch_equals_one_by_one(pipe):
    cfps = [fundus_image(seed=0), None, fundus_image(seed=2)]
    octs = [oct_image(seed=0), oct_image(seed=1), None]
    marks = [BIOMARKERS, None, {"rnfl": 20.0}]
    batched = pipe(cfp=cfps, oct=octs, biomarkers=marks)
    for c, o, b, report in zip(cfps, octs, marks, batched):
        assert pipe(cfp=c, oct=o, biomarkers=b).text == report.text


def test_stream_yields_the_same_text(pipe):
    streamed = "".join(pipe.stream(cfp=fundus_image(), oct=oct_image(), biomarkers=BIOMARKERS)).strip()
    assert streamed == pipe(cfp=fundus_image(), oct=oct_image(), biomarkers=BIOMARKERS).text


def test_stream_reraises_a_generation_error_promptly(pipe, monkeypatch):
    def out_of_memory(**kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(pipe.model, "generate", out_of_memory)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="out of memory"):  # not queue.Empty after the timeout
        list(pipe.stream(cfp=fundus_image(), oct=oct_image(), biomarkers=BIOMARKERS, timeout=5))
    assert time.monotonic() - start < 5


def test_oct_volume_and_bad_biomarkers(pipe):
    volume = [oct_image(seed=s) for s in range(3)]
    assert pipe(cfp=None, oct=volume, biomarkers=None).text is not None
    with pytest.raises(BiomarkerError, match="Unknown biomarker name 'cdr'"):
        pipe(cfp=fundus_image(), oct=oct_image(), biomarkers={"cdr": 0.5})
    with pytest.raises(ValueError, match="same length"):
        pipe(cfp=[fundus_image()], oct=[oct_image(), oct_image()], biomarkers=None)


def test_images_without_biomarkers_are_measured(pipe):
    from processing.phantom import RetinaPhantom

    eye = RetinaPhantom(seed=3)[0]
    values, source = pipe.biomarkers_for(cfp=eye["cfp"], oct=eye["oct"][0], biomarkers=None, measure=True)
    measured = [name for name, how in source.items() if how == "measured"]
    assert "cup_to_disc_ratio" in measured and "av_ratio" in measured
    assert abs(values["cup_to_disc_ratio"] - eye["biomarkers"]["cup_to_disc_ratio"]) < 0.1
    assert values["central_subfield"] is None  # µm thickness needs the pixel scales
    scales = {k: eye[k] for k in ("oct_axial_um_per_px", "oct_lateral_um_per_px", "cfp_um_per_px")}
    report = pipe(cfp=eye["cfp"], oct=eye["oct"][0], biomarkers={"rnfl": 30.0}, measure=True,
                  acquisition={"eye": eye["eye"], **scales})
    assert report.biomarker_source["rnfl"] == "given" and report.biomarker_source["cup_to_disc_ratio"] == "measured"
    truth = eye["biomarkers"]["central_subfield"]
    assert abs(report.biomarkers["central_subfield"] - truth) / truth < 0.05


@pytest.mark.parametrize(
    "content,problem",
    [
        ('{"rnfl": 28.5,', r" is not valid JSON \(.*line 1.*\); it must hold one JSON object mapping biomarker names"),
        ("[28.5, 0.7]", r" holds an array, not an object; it must hold one JSON object mapping biomarker names"),
        ('{"rnfl": "thin"}', r": rnfl must be a number in µm"),
    ],
)
def test_report_cli_names_a_bad_biomarkers_file(tmp_path, content, problem):
    from recipes.report import main

    scan, path = tmp_path / "oct.png", tmp_path / "b.json"
    oct_image().save(scan)
    path.write_text(content)
    with pytest.raises(SystemExit, match=rf"^grok-retina report: {re.escape(f'--biomarkers {path}')}{problem}"):
        main(["--model", str(tmp_path / "no-model"), "--oct", str(scan), "--biomarkers", str(path)])
