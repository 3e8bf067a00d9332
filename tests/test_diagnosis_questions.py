"""Diagnosis questions beside the reports: the prompt, the rows added to a Stage I set, the length-bucketed
batches they train in, and `GrokPipeline.diagnose`."""

import pytest
from datasets import Dataset

from grok_retina.diagnosis_questions import with_diagnosis_questions
from grok_retina.pipeline import GrokDiagnosis, GrokPipeline
from grok_retina.prompts import DIAGNOSIS_QUESTION, build_diagnosis_messages, build_student_messages, diagnosis_answer
from grok_retina.report_parsing import parse_dme, parse_dr_grade, parse_label
from grok_retina.training import GrokSFTConfig, GrokSFTTrainer, LengthBucketSampler, conversation_length
from processing.labels import DME_STATUSES, DR_GRADES, LABELS
from tests.tiny_components import fundus_image, oct_image, tiny_model_and_processor

BIOMARKERS = {"central_subfield": 340.0, "cup_to_disc_ratio": 0.72}


def test_diagnosis_messages_hold_the_placeholders_and_the_question_but_no_table():
    user = build_diagnosis_messages(has_cfp=True, has_oct=False)[-1]["content"]
    assert [b["type"] for b in user] == ["image", "biomarkers", "text"] and user[0]["modality"] == "cfp"
    assert user[-1]["text"] == DIAGNOSIS_QUESTION and "Quantitative biomarkers" not in user[-1]["text"]


@pytest.mark.parametrize("label", LABELS)
def test_every_answer_names_its_label(label):
    assert parse_label(diagnosis_answer(label)) == label


@pytest.mark.parametrize(
    ("grade", "dme"), [(g, d) for g in (*DR_GRADES, None) for d in DME_STATUSES if (g, d) != (None, "no")]
)
def test_dr_dme_answers_name_grade_and_oedema(grade, dme):
    label = "Normal" if grade == "0" and dme == "no" else "DiabeticRetinopathy"
    answer = diagnosis_answer(label, grade, dme)
    assert parse_dme(answer) == dme and parse_dr_grade(answer) == grade
    assert parse_label(answer) == label  # "No diabetic retinopathy and no macular oedema." is a healthy eye


def _stage1(n=6):
    rows = {"id": [], "label": [], "biomarkers": [], "prompt": [], "completion": [], "images": []}
    for i in range(n):
        rows["id"].append(f"eye{i}")
        rows["label"].append(i % len(LABELS))
        rows["biomarkers"].append({**BIOMARKERS, "central_subfield": 300.0 + i})
        rows["prompt"].append(build_student_messages(rows["biomarkers"][-1], has_cfp=True, has_oct=i != 0))
        rows["completion"].append([{"role": "assistant", "content": [{"type": "text", "text": f"Biomarker Assessments:\n- x\n"
                                    f"Sub-inference:\nx\nConclusion: {LABELS[i % len(LABELS)]}."}]}])
        rows["images"].append([fundus_image(seed=i)] + ([oct_image(seed=i)] if i else []))
    return Dataset.from_list([dict(zip(rows, values)) for values in zip(*rows.values())])


def test_with_diagnosis_questions_adds_one_question_per_eye():
    stage1 = _stage1()
    mixed = with_diagnosis_questions(stage1)
    assert len(mixed) == 2 * len(stage1)
    for report, question in zip(mixed.select(range(6)), mixed.select(range(6, 12))):
        assert report["prompt"] == stage1[int(report["id"][3:])]["prompt"]
        assert question["id"] == report["id"] and question["images"] == report["images"]
        modalities = [b["modality"] for b in question["prompt"][-1]["content"] if b["type"] == "image"]
        assert modalities == (["cfp", "oct"] if len(report["images"]) == 2 else ["cfp"])
        assert question["prompt"][-1]["content"][-1]["text"] == DIAGNOSIS_QUESTION
        assert parse_label(question["completion"][0]["content"][0]["text"]) == LABELS[question["label"]]
        lengths = [conversation_length(row["prompt"], row["completion"]) for row in (question, report)]
        assert 0 < lengths[0] < lengths[1] // 3
    with pytest.raises(ValueError, match=r"\['label'\]"):
        with_diagnosis_questions(stage1.remove_columns("label"))


def test_length_buckets_make_even_batches_in_a_new_order_each_epoch():
    lengths = [100 if i % 3 else 3000 for i in range(240)]
    sampler = LengthBucketSampler(lengths, batch_size=4, seed=1, group=30)  # two runs of 120
    first = list(sampler)
    assert sorted(first) == list(range(240))
    batches = [first[i : i + 4] for i in range(0, 240, 4)]
    assert sum(len({lengths[i] for i in b}) > 1 for b in batches) <= 2  # at most where a run turns long
    kinds = [lengths[b[0]] for b in batches]
    switches = sum(a != b for a, b in zip(kinds, kinds[1:]))
    assert switches >= 12  # batches shuffled: ~27 expected; sorted runs (transformers' order) switch <= 4 times
    assert list(sampler) == first  # same epoch, same order (resume skips the batches already seen)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_trainer_uses_length_buckets_for_group_by_length(tmp_path):
    model, processor = tiny_model_and_processor()
    args = GrokSFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to=[],
                         use_cpu=True, max_length=None, save_strategy="no", train_sampling_strategy="group_by_length")
    for data in (with_diagnosis_questions(_stage1(8)), _stage1(8)):  # with questions, and reports only
        trainer = GrokSFTTrainer(model=model, args=args, train_dataset=data, processing_class=processor)
        sampler = trainer._get_train_sampler()
        assert isinstance(sampler, LengthBucketSampler)
        assert sampler.lengths == [conversation_length(p, c) for p, c in zip(data["prompt"], data["completion"])]
    explicit = _stage1(8).add_column("length", list(range(8, 0, -1)))  # a length column wins, as in transformers
    trainer = GrokSFTTrainer(model=model, args=args, train_dataset=explicit, processing_class=processor,
                             eval_dataset=_stage1(3))
    assert trainer._get_train_sampler().lengths == list(range(8, 0, -1))
    trainer.train()  # the length column reaches the sampler but not the model
    assert trainer.state.global_step == 2
    assert trainer.evaluate()["eval_loss"] > 0  # evaluation is not length-grouped (transformers' needs input_ids)


@pytest.fixture(scope="module")
def pipe():
    model, processor = tiny_model_and_processor(num_biomarker_tokens=2)
    return GrokPipeline(model, processor, max_new_tokens=12, measure_missing=False)


def test_diagnose_asks_the_short_question_batched(pipe):
    text, images = pipe._prompt(fundus_image(), oct_image(), BIOMARKERS, question=True)
    assert "Quantitative biomarkers" not in text and len(images) == 2
    assert len(pipe.processor.tokenizer(text)["input_ids"]) < len(pipe.processor.tokenizer(pipe._prompt(
        fundus_image(), oct_image(), BIOMARKERS)[0])["input_ids"]) // 3
    one = pipe.diagnose(cfp=fundus_image(), oct=oct_image(), biomarkers=BIOMARKERS, max_new_tokens=6)
    assert isinstance(one, GrokDiagnosis) and one.label == parse_label(one.text)
    batch = pipe.diagnose(cfp=[fundus_image(), None], oct=[oct_image(), oct_image(seed=1)],
                          biomarkers=[BIOMARKERS, None], max_new_tokens=6)
    assert batch[0].text == one.text and len(batch) == 2
