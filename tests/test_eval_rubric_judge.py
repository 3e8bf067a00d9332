"""The rubric's validation and the judge against a local OpenAI-compatible server (tests/fake_openai.py)."""

import asyncio
import json

import pytest

from grok_retina.evaluation.judge import JudgeSample, RubricJudge, summarise_judgements
from grok_retina.evaluation.rubric import (
    RUBRIC_ITEMS,
    JudgementError,
    build_judge_messages,
    parse_judgement_text,
    validate_judgement,
)
from tests.fake_openai import FakeOpenAIServer, Reply

SCORES = {
    "DiagnosisAccuracy": 20,
    "QuantitativeAccuracy": 15,
    "QualitativeAccuracy": 12,
    "EvidenceGrounding": 8,
    "ReasoningConsistency": 10,
    "CoverageCompleteness": 7,
    "ImageBiomarkerAlignment": 6,
    "ErrorSeverityPenalty": -5,
}  # total 20+15+12+8+10+7+6-5 = 73


def judgement_json(scores=SCORES, drop=()):
    return json.dumps({k: {"score": v, "rationale": f"{k} ok"} for k, v in scores.items() if k not in drop})


def test_rubric_has_eight_items_totalling_100_and_a_15_point_penalty():
    assert [i.name for i in RUBRIC_ITEMS] == list(SCORES)
    assert sum(i.high for i in RUBRIC_ITEMS) == 100
    assert [i.max_points for i in RUBRIC_ITEMS] == [20, 20, 15, 10, 15, 10, 10, 15]
    assert RUBRIC_ITEMS[-1].low == -15 and RUBRIC_ITEMS[-1].high == 0


def test_validate_judgement_valid_and_integer_ish():
    j = validate_judgement(json.loads(judgement_json()))
    assert j.total == 73 and j.scores["ErrorSeverityPenalty"] == -5
    loose = {k: {"score": str(v) if k == "DiagnosisAccuracy" else float(v), "rationale": ""} for k, v in SCORES.items()}
    loose["Total"] = 73  # extra keys are ignored
    assert validate_judgement(loose).total == 73
    floor = {k: {"score": 0, "rationale": ""} for k in SCORES} | {
        "ErrorSeverityPenalty": {"score": -15, "rationale": "x"}
    }
    assert validate_judgement(floor).total == 0  # floored at 0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("EvidenceGrounding"), "missing items: EvidenceGrounding"),
        (
            lambda d: d.update(DiagnosisAccuracy={"score": 21, "rationale": ""}),
            "DiagnosisAccuracy.score must be between 0 and 20, got 21",
        ),
        (
            lambda d: d.update(ErrorSeverityPenalty={"score": 5, "rationale": ""}),
            "ErrorSeverityPenalty.score must be between -15 and 0",
        ),
        (
            lambda d: d.update(QualitativeAccuracy={"score": 7.5, "rationale": ""}),
            "QualitativeAccuracy.score must be an integer",
        ),
        (
            lambda d: d.update(QualitativeAccuracy={"score": True, "rationale": ""}),
            "QualitativeAccuracy.score must be an integer",
        ),
        (lambda d: d.update(CoverageCompleteness={"score": 5}), "CoverageCompleteness.rationale must be a string"),
        (lambda d: d.update(CoverageCompleteness=5), "CoverageCompleteness must be an object"),
    ],
)
def test_validate_judgement_names_the_item(mutate, message):
    data = json.loads(judgement_json())
    mutate(data)
    with pytest.raises(JudgementError, match=message.replace(".", r"\.")):
        validate_judgement(data)


def test_parse_judgement_text_fences_prose_and_garbage():
    assert parse_judgement_text(f"```json\n{judgement_json()}\n```").total == 73
    assert parse_judgement_text(f"Here is my grading: {judgement_json()} Thanks.").total == 73
    with pytest.raises(JudgementError, match="not valid JSON"):
        parse_judgement_text(judgement_json()[:-40])
    with pytest.raises(JudgementError, match="no JSON object"):
        parse_judgement_text("I cannot grade this.")
    with pytest.raises(JudgementError, match="empty"):
        parse_judgement_text(None)


def test_judge_prompt_holds_report_reference_biomarkers_and_label():
    system, user = build_judge_messages("REPORT TEXT", "REFERENCE TEXT", {"cup_to_disc_ratio": 0.72}, "Glaucoma")
    assert all(item.name in system["content"] for item in RUBRIC_ITEMS)
    content = user["content"]
    assert "REPORT TEXT" in content and "REFERENCE TEXT" in content
    assert "Vertical cup-to-disc ratio: 0.720" in content
    assert "Glaucoma (glaucoma)" in content
    assert "not available" in build_judge_messages("r")[1]["content"]


def run_judge(server, samples, **kwargs):
    judge = RubricJudge("judge-model", base_url=server.base_url, api_key="test", **kwargs)
    return judge, asyncio.run(judge.judge_many(samples))


def test_judge_valid_reply_and_usage():
    with FakeOpenAIServer(
        lambda request: Reply(content=judgement_json(), prompt_tokens=300, completion_tokens=90)
    ) as server:
        judge, outcomes = run_judge(
            server, [JudgeSample("r1", "ref", {"rnfl": 20.0}, "Glaucoma", id="s1"), JudgeSample("r2")]
        )
    assert [o.judgement.total for o in outcomes] == [73, 73]
    assert outcomes[0].id == "s1" and outcomes[0].attempts == 1 and outcomes[0].error is None
    assert (judge.usage.requests, judge.usage.prompt_tokens, judge.usage.completion_tokens) == (2, 600, 180)
    assert server.requests[0]["model"] == "judge-model"
    assert server.requests[0]["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("first", "feedback"),
    [
        (judgement_json()[:-30], "not valid JSON"),  # invalid (truncated) JSON
        (
            judgement_json(drop=("ReasoningConsistency", "ErrorSeverityPenalty")),
            "missing items: ReasoningConsistency, ErrorSeverityPenalty",
        ),
    ],
)
def test_judge_retries_with_the_validation_error_fed_back(first, feedback):
    with FakeOpenAIServer() as server:
        server.push(Reply(content=first), Reply(content=judgement_json()))
        judge, [outcome] = run_judge(server, [JudgeSample("report")])
    assert outcome.judgement.total == 73 and outcome.attempts == 2
    retry = server.requests[1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": first}
    assert feedback in retry[-1]["content"]
    assert judge.usage.invalid_replies == 1


def test_judge_records_a_failure_and_carries_on():
    def responder(request):
        report = request["messages"][1]["content"]
        return Reply(content="not json at all" if "BAD REPORT" in report else judgement_json())

    with FakeOpenAIServer(responder) as server:
        judge, outcomes = run_judge(
            server,
            [JudgeSample("good one"), JudgeSample("BAD REPORT", id="bad"), JudgeSample("good two")],
            max_retries=2,
        )
    good1, bad, good2 = outcomes
    assert good1.judgement and good2.judgement
    assert bad.judgement is None and bad.attempts == 3
    assert bad.error == "invalid judgement after 3 attempts: the reply contains no JSON object."
    summary = summarise_judgements(outcomes)
    assert (summary["n"], summary["judged"], summary["failed"], summary["total"]) == (3, 2, 1, 73)
    assert summary["DiagnosisAccuracy"] == 20 and summary["ErrorSeverityPenalty"] == -5
    assert summary["failures"] == [{"index": 1, "id": "bad", "reason": bad.error}]
    assert summary["usage"]["requests"] == 5


def test_judge_transport_retry_then_request_errors_are_recorded_not_raised():
    seen = []

    def responder(request):
        report = request["messages"][1]["content"].rsplit("\n", 1)[-1]
        seen.append(report)
        if report == "second":
            return Reply(status=400)  # not retried
        return (
            Reply(status=429, headers={"Retry-After": "0"})
            if seen.count("first") == 1
            else Reply(content=judgement_json())
        )

    with FakeOpenAIServer(responder) as server:
        judge, outcomes = run_judge(server, [JudgeSample("first"), JudgeSample("second")])
    assert outcomes[0].judgement.total == 73 and outcomes[0].usage.requests == 2 and outcomes[0].attempts == 1
    assert (
        outcomes[1].judgement is None
        and outcomes[1].error.startswith("request failed: ")
        and "HTTP 400" in outcomes[1].error
    )


def test_a_fatal_endpoint_error_stops_sending_but_records_every_sample():
    with FakeOpenAIServer(lambda request: Reply(status=401)) as server:
        _, outcomes = run_judge(server, [JudgeSample(f"r{i}") for i in range(3)], concurrency=1)
        assert len(server.requests) == 1
    assert "HTTP 401" in outcomes[0].error
    assert all(o.judgement is None and o.error.startswith("not sent: ") for o in outcomes[1:])


def test_judge_rejects_bad_inputs_before_any_request():
    with FakeOpenAIServer(lambda request: Reply(content=judgement_json())) as server:
        with pytest.raises(ValueError, match="rnfl"):
            run_judge(server, [JudgeSample("r", biomarkers={"rnfl": "thin"})])
        assert server.requests == []
    with pytest.raises(ValueError, match="concurrency >= 1"):
        RubricJudge("m", base_url=server.base_url, concurrency=0)
    with pytest.raises(ValueError, match="max_retries must be >= 0"):
        RubricJudge("m", base_url=server.base_url, max_retries=-1)
