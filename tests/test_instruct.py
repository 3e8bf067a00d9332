"""Stage I runner: verify-retry-drop, the resumable JSONL store, the TRL dataset, and a SIGKILL-and-resume run."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from datasets import load_from_disk

from grok_retina.instruct import RECORDS_FILE, RecordStore, generate_instructions
from grok_retina.teachers import OpenAITeacher, RulesTeacher
from grok_retina.verifier import verify_report
from processing.labels import LABELS
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.stage1_samples import GroundedResponder, make_dataset, sample_of, user_text

REPO = Path(__file__).resolve().parents[1]
DATASET = make_dataset(14)


def teacher_for(server, **kwargs):
    return OpenAITeacher("fake", base_url=server.base_url, api_key="x", backoff_base=0.01, **kwargs)


def records(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / RECORDS_FILE).read_text().splitlines()]


def answer_for(dataset, index) -> dict:
    return json.loads(GroundedResponder(dataset).answers[user_text(sample_of(dataset[index]))])


def test_rules_run_writes_a_trl_prompt_completion_dataset(tmp_path):
    result = generate_instructions(DATASET, RulesTeacher(), tmp_path, concurrency=3, progress=False)
    assert result.column_names == ["id", "patient_id", "eye", "label", "biomarkers", "prompt", "completion", "images"]
    assert result["id"] == DATASET["id"]
    for index, row in enumerate(result):
        system, user = row["prompt"]
        assert system["role"] == "system" and user["role"] == "user"
        placeholders = [block["modality"] for block in user["content"] if block["type"] == "image"]
        assert placeholders == (["cfp", "oct"] if index % 5 else ["oct"])  # make_dataset drops every 5th CFP
        assert len(row["images"]) == len(placeholders)
        assert [image.mode for image in row["images"]] == (["RGB", "L"] if index % 5 else ["L"])
        assert row["images"][-1].getpixel((0, 0)) == index % 255  # the central B-scan, oct[0]
        assert user["content"][-1]["type"] == "text" and "Quantitative biomarkers:" in user["content"][-1]["text"]
        [message] = row["completion"]
        assert message["role"] == "assistant" and [b["type"] for b in message["content"]] == ["text"]
        report = message["content"][0]["text"]
        assert verify_report(report, row["biomarkers"], label=LABELS[row["label"]]).passed
    lines = records(tmp_path)
    assert [r["status"] for r in lines] == ["ok"] * len(DATASET)
    assert all(r["key"].startswith(f"{r['id']}:") and len(r["key"].split(":")[1]) == 16 for r in lines)


@pytest.mark.slow
def test_trl_accepts_the_dataset(tmp_path):
    from trl.data_utils import is_conversational, prepare_multimodal_messages

    result = generate_instructions(DATASET.select(range(6)), RulesTeacher(), tmp_path, progress=False)
    for row in result:
        assert is_conversational(row)
        prompt = prepare_multimodal_messages(row["prompt"], images=row["images"])
        assert [b["image"] for b in prompt[1]["content"] if b["type"] == "image"] == row["images"]
        prepare_multimodal_messages(row["completion"])


def test_invalid_json_shape_is_retried_with_the_reason_then_dropped(tmp_path):
    data = DATASET.select([1, 2])
    good = json.dumps(answer_for(data, 0))
    with FakeOpenAIServer(lambda request: Reply(content="{}")) as server:
        server.push(Reply(content='{"conclusion": 3}'), Reply(content=good))  # sample 1: bad, then good
        result = generate_instructions(data, teacher_for(server), tmp_path, concurrency=1, progress=False)
    by_id = {r["id"]: r for r in records(tmp_path)}
    assert by_id["s0001"]["status"] == "ok" and by_id["s0001"]["attempts"] == 2
    assert "required JSON shape" in server.requests[1]["messages"][-1]["content"]
    assert by_id["s0002"]["status"] == "dropped" and "biomarker_assessments" in by_id["s0002"]["reason"]
    assert by_id["s0002"]["usage"]["requests"] == 2
    assert result["id"] == ["s0001"]


def test_fabricated_number_is_retried_with_the_findings(tmp_path):
    data = DATASET.select([3])
    good = answer_for(data, 0)
    bad = dict(good, sub_inference=good["sub_inference"] + " About 240 cells are lost.")
    with FakeOpenAIServer(lambda request: Reply(content=json.dumps(good))) as server:
        server.push(Reply(content=json.dumps(bad)))
        generate_instructions(data, teacher_for(server), tmp_path / "a", progress=False)
        feedback = server.requests[1]["messages"][-1]
        assert feedback["role"] == "user" and "240 matches no measured biomarker" in feedback["content"]
        server.push(Reply(content=json.dumps(bad)), Reply(content=json.dumps(bad)))
        result = generate_instructions(data, teacher_for(server), tmp_path / "b", progress=False)
    assert records(tmp_path / "a")[0]["status"] == "ok"
    [dropped] = records(tmp_path / "b")
    assert dropped["status"] == "dropped" and "240 matches no measured biomarker" in dropped["reason"]
    assert "240" in dropped["report"] and len(result) == 0


def test_transport_failures_are_recorded_and_retried_on_resume(tmp_path):
    data = DATASET.select([0])
    with FakeOpenAIServer(lambda request: Reply(status=503)) as server:
        result = generate_instructions(data, teacher_for(server, max_retries=1), tmp_path, progress=False)
    [error] = records(tmp_path)
    assert error["status"] == "error" and "HTTP 503" in error["reason"] and len(result) == 0
    with FakeOpenAIServer(GroundedResponder(data)) as server:
        result = generate_instructions(data, teacher_for(server), tmp_path, progress=False)
    assert len(server.requests) == 1 and result["id"] == ["s0000"]


def test_resume_skips_finished_samples_and_drops_a_partial_last_line(tmp_path):
    responder = GroundedResponder(DATASET)
    with FakeOpenAIServer(responder) as server:
        generate_instructions(DATASET, teacher_for(server), tmp_path, limit=6, progress=False)
        with open(tmp_path / RECORDS_FILE, "ab") as f:
            f.write(b'{"key": "s0006:0123456789abcdef", "id": "s00')  # a line cut by a kill
        result = generate_instructions(DATASET, teacher_for(server), tmp_path, progress=False)
    asked = [responder.sample_id(request) for request in server.requests]
    assert sorted(asked) == sorted(DATASET["id"])  # every sample asked exactly once over both runs
    assert result["id"] == DATASET["id"] and len(records(tmp_path)) == len(DATASET)


def test_a_second_run_on_the_same_output_is_refused(tmp_path):
    with RecordStore(tmp_path / RECORDS_FILE):
        with pytest.raises(RuntimeError, match="used by another Stage I run"):
            RecordStore(tmp_path / RECORDS_FILE)


def test_sigkill_half_way_then_resume_gives_every_sample_once(tmp_path):
    data = make_dataset(40, seed=5)
    data.save_to_disk(str(tmp_path / "source"))
    out = tmp_path / "out"
    responder = GroundedResponder(data)
    command = [sys.executable, "-m", "recipes.generate_instructions", "--dataset", str(tmp_path / "source"),
               "--teacher", "openai", "--model", "fake", "--out", str(out), "--concurrency", "2"]
    env = {**os.environ, "OPENAI_API_KEY": "x", "PYTHONPATH": str(REPO)}
    with FakeOpenAIServer(responder, latency=0.1) as server:
        command += ["--base_url", server.base_url]
        log = open(tmp_path / "first.log", "w")  # noqa: SIM115
        first = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and first.poll() is None:
            path = out / RECORDS_FILE
            if path.exists() and path.read_bytes().count(b"\n") >= 15:
                break
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        log.close()
        assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-2000:]
        finished = {json.loads(line)["id"] for line in (out / RECORDS_FILE).read_bytes().split(b"\n")[:-1]}
        assert 15 <= len(finished) < len(data)
        asked_before = len(server.requests)

        second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr[-2000:]
        asked_after = [responder.sample_id(request) for request in server.requests[asked_before:]]

    assert not finished & set(asked_after), "a finished sample was sent to the teacher again"
    result = load_from_disk(str(out / "dataset"))
    assert sorted(result["id"]) == sorted(data["id"]) and len(set(result["id"])) == len(data)
    statuses = Counter(r["id"] for r in records(out) if r["status"] == "ok")
    assert set(statuses.values()) == {1}
