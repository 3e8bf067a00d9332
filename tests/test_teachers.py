"""Stage I teachers: the offline rules teacher, and the OpenAI-compatible teacher against a real local server."""

import asyncio
import json
import random
import re

import pytest
from PIL import Image

from grok_retina.prompts import (
    DIAGNOSIS_CONCLUSION,
    MAX_REPORT_WORDS,
    REPORT_SECTIONS,
    TEACHER_SYSTEM_PROMPT,
    parse_teacher_answer,
    render_report,
)
from grok_retina.teachers import OpenAITeacher, RulesTeacher, TeacherError, TeacherFormatError, TeacherSample
from grok_retina.verifier import LEAK_PATTERNS, verify_report
from processing.biomarkers import validate_biomarkers
from processing.labels import LABEL_DISPLAY, LABELS
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.stage1_samples import make_biomarkers

RNG = random.Random(7)
SAMPLES = [
    TeacherSample(f"{label}-{i}", validate_biomarkers(make_biomarkers(label, RNG, missing=("rpe",) * (i == 1))), label)
    for label in LABELS
    for i in range(4)
]
GOOD = json.dumps(RulesTeacher().answer(SAMPLES[4]))  # a grounded Glaucoma answer


def fast_teacher(server, **kwargs):
    kwargs = {"model": "fake", "base_url": server.base_url, "api_key": "x", "backoff_base": 0.01, **kwargs}
    return OpenAITeacher(**kwargs)


async def generate(teacher, sample=SAMPLES[4], feedback=None):
    try:
        return await teacher.generate(sample, feedback)
    finally:
        await teacher.aclose()


# --- rules teacher ---------------------------------------------------------------------------------------
def test_rules_reports_pass_the_verifier_for_every_label():
    teacher = RulesTeacher(seed=0)
    for sample in SAMPLES:
        output = asyncio.run(teacher.generate(sample))
        result = verify_report(output.text, sample.biomarkers, label=sample.label)
        assert result.passed, f"{sample.id}:\n{output.text}\n{result.findings()}"
        assert len(output.text.split()) <= MAX_REPORT_WORDS
        assert parse_teacher_answer(json.dumps(output.report_json)) == output.report_json
        assert render_report(output.report_json) == output.text
        assert not re.search("|".join(LEAK_PATTERNS), output.text, re.IGNORECASE)
        assert not re.search(r"\b(?:given|provided|label|prompt|B-?scan|slice)\b", output.text, re.IGNORECASE)


def test_rules_wording_varies_across_samples_and_is_deterministic_per_id():
    teacher = RulesTeacher(seed=0)
    same = [TeacherSample(f"id{i}", SAMPLES[4].biomarkers, "Glaucoma") for i in range(12)]
    texts = [asyncio.run(teacher.generate(s)).text for s in same]
    assert len(set(texts)) >= 6
    assert len({t.split("Conclusion:")[1] for t in texts}) >= 3
    assert asyncio.run(RulesTeacher(seed=0).generate(same[0])).text == texts[0]
    reseeded = [asyncio.run(RulesTeacher(seed=1).generate(s)).text for s in same]
    assert reseeded != texts


# --- OpenAI-compatible teacher ---------------------------------------------------------------------------
def test_the_rules_teacher_and_the_dme_probe_share_the_conclusion_sentence():
    from grok_retina.evaluation.gou import DME_PROBE

    assert DME_PROBE == f"{REPORT_SECTIONS[2]}: {DIAGNOSIS_CONCLUSION}"
    conclusions = {RulesTeacher().answer(s)["conclusion"] for s in SAMPLES}
    assert DIAGNOSIS_CONCLUSION.format(d=LABEL_DISPLAY["Glaucoma"]) in conclusions


def test_normal_answer_and_usage_accounting():
    with FakeOpenAIServer(lambda request: Reply(content=GOOD, prompt_tokens=1000, completion_tokens=200)) as server:
        teacher = fast_teacher(server, price_per_1k_input=0.002, price_per_1k_output=0.008)
        output = asyncio.run(generate(teacher))
    assert output.report_json == json.loads(GOOD) and output.text.startswith("Biomarker Assessments:")
    request = server.requests[0]
    assert request["model"] == "fake" and request["response_format"] == {"type": "json_object"}
    assert request["messages"][0] == {"role": "system", "content": TEACHER_SYSTEM_PROMPT}
    assert "glaucoma" in request["messages"][1]["content"]
    assert (output.usage.requests, output.usage.prompt_tokens, output.usage.completion_tokens) == (1, 1000, 200)
    assert teacher.cost() == pytest.approx(0.002 + 0.0016)
    assert "1 requests (0 retries), 1,000 prompt + 200 completion tokens, cost $0.0036" in teacher.summary()


def test_429_retry_after_is_honoured():
    with FakeOpenAIServer(lambda request: Reply(content=GOOD)) as server:
        server.push(Reply(status=429, headers={"Retry-After": "0.6"}))
        output = asyncio.run(generate(fast_teacher(server)))
    assert output.usage.requests == 2 and output.usage.retries == 1
    assert server.request_times[1] - server.request_times[0] >= 0.55


def test_500s_then_success():
    with FakeOpenAIServer(lambda request: Reply(content=GOOD)) as server:
        server.push(Reply(status=500), Reply(status=503), Reply(status=502))
        output = asyncio.run(generate(fast_teacher(server)))
    assert output.usage.requests == 4 and output.usage.retries == 3


def test_timeout_then_success():
    with FakeOpenAIServer(lambda request: Reply(content=GOOD)) as server:
        server.push(Reply(content=GOOD, delay=1.5))
        output = asyncio.run(generate(fast_teacher(server, timeout=0.3)))
    assert output.usage.requests == 2


def test_malformed_body_is_retried_then_given_up():
    with FakeOpenAIServer(lambda request: Reply(content=GOOD)) as server:
        server.push(Reply(raw="{not json"))
        assert asyncio.run(generate(fast_teacher(server))).usage.requests == 2
        server.push(*[Reply(raw="<html>bad gateway</html>")] * 3)
        with pytest.raises(TeacherError, match="no answer after 3 request") as info:
            asyncio.run(generate(fast_teacher(server, max_retries=2)))
    assert not info.value.fatal and "malformed response body" in str(info.value)
    assert info.value.usage.requests == 3


def test_invalid_json_shape_raises_format_error():
    with FakeOpenAIServer(lambda request: Reply(content='{"biomarker_assessments": []}')) as server:
        with pytest.raises(TeacherFormatError, match="non-empty list") as info:
            asyncio.run(generate(fast_teacher(server)))
    assert info.value.content == '{"biomarker_assessments": []}' and info.value.usage.requests == 1


def test_feedback_is_sent_as_a_final_user_turn():
    with FakeOpenAIServer(lambda request: Reply(content=GOOD)) as server:
        asyncio.run(generate(fast_teacher(server), feedback="- GC-IPL: quote the measured value."))
    last = server.requests[0]["messages"][-1]
    assert last["role"] == "user" and "- GC-IPL: quote the measured value." in last["content"]


def test_auth_errors_are_fatal_and_400_is_not_retried():
    with FakeOpenAIServer(lambda request: Reply(status=401)) as server:
        with pytest.raises(TeacherError) as info:
            asyncio.run(generate(fast_teacher(server)))
    assert info.value.fatal and len(server.requests) == 1
    with FakeOpenAIServer(lambda request: Reply(status=400)) as server:
        with pytest.raises(TeacherError, match="HTTP 400") as info:
            asyncio.run(generate(fast_teacher(server)))
    assert not info.value.fatal and len(server.requests) == 1


def test_concurrency_is_bounded():
    async def many(teacher):
        try:
            await asyncio.gather(*(teacher.generate(SAMPLES[4]) for _ in range(12)))
        finally:
            await teacher.aclose()

    with FakeOpenAIServer(lambda request: Reply(content=GOOD), latency=0.05) as server:
        asyncio.run(many(fast_teacher(server, concurrency=3)))
    assert len(server.requests) == 12 and 2 <= server.max_in_flight <= 3


def test_images_are_sent_base64_when_asked():
    sample = TeacherSample("img", SAMPLES[4].biomarkers, "Glaucoma", cfp=Image.new("RGB", (2048, 1024)),
                           oct=Image.new("L", (64, 32)))
    with FakeOpenAIServer(lambda request: Reply(content=GOOD)) as server:
        asyncio.run(generate(fast_teacher(server, send_images=True), sample))
    content = server.requests[0]["messages"][1]["content"]
    urls = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
    assert urls[0].startswith("data:image/jpeg;base64,") and urls[1].startswith("data:image/png;base64,")


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("GROK_TEACHER_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    teacher = OpenAITeacher()
    assert (teacher.model, teacher.base_url, teacher.api_key, teacher.name) == (
        "env-model", "http://127.0.0.1:9/v1", "env-key", "openai:env-model")
    monkeypatch.delenv("GROK_TEACHER_MODEL")
    with pytest.raises(ValueError, match="GROK_TEACHER_MODEL"):
        OpenAITeacher()
