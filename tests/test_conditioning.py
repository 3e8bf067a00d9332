"""`conditioning_gap`: completion loss with each row's own inputs against another row's."""

import pytest

from grok_retina.evaluation.conditioning import conditioning_gap
from tests.tiny_components import fundus_image, messages, oct_image, tiny_model_and_processor


def _rows(n: int, same_inputs: bool) -> list[dict]:
    rows = []
    for i in range(n):
        seed = 0 if same_inputs else i
        rows.append({
            "prompt": messages(True, True, text="Assess the retina." if same_inputs else f"Assess eye {i} of the retina."),
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": f"Conclusion: case {i} glaucoma."}]}],
            "images": [fundus_image(seed=seed), oct_image(seed=seed)],
        })
    return rows


def test_identical_inputs_give_no_gap_and_different_inputs_do():
    model, processor = tiny_model_and_processor()
    same = conditioning_gap(model, processor, _rows(5, same_inputs=True), batch_size=2)
    assert same.n == 5 and same.own_loss == pytest.approx(same.other_loss, abs=1e-6)
    # a random model's predictions move with its inputs, so shifting them changes the loss
    different = conditioning_gap(model, processor, _rows(5, same_inputs=False), batch_size=2)
    assert abs(different.gap) > 1e-4
    assert different.to_dict()["gap"] == pytest.approx(different.other_loss - different.own_loss)


def test_training_mode_restored_and_one_row_refused():
    model, processor = tiny_model_and_processor()
    model.train()
    conditioning_gap(model, processor, _rows(2, same_inputs=False))
    assert model.training
    with pytest.raises(ValueError, match="at least 2 rows"):
        conditioning_gap(model, processor, _rows(1, same_inputs=False))


def test_shift_moves_the_biomarker_vector_with_the_prompt():
    model, processor = tiny_model_and_processor(num_biomarker_tokens=2)
    name = processor.biomarker_names[0]
    rows = _rows(4, same_inputs=True)
    for row in rows:
        row["prompt"] = messages(True, True, with_biomarkers=True)
    same = conditioning_gap(model, processor, [dict(r, biomarkers={name: 300.0}) for r in rows], batch_size=2)
    assert same.own_loss == pytest.approx(same.other_loss, abs=1e-6)
    # rows that differ only in their biomarker vector: the shift must carry it, or the gap would be 0
    different = conditioning_gap(model, processor, [dict(r, biomarkers={name: 200.0 + 50 * i}) for i, r in enumerate(rows)], batch_size=2)
    assert abs(different.gap) > 1e-5
