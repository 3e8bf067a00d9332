"""GrokProcessor and the CFP / OCT image processors."""

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_grok import GrokCFPImageProcessor, GrokOCTImageProcessor
from modeling_grok.image_processing_grok import fundus_bounding_box
from tests.tiny_components import fundus_image, messages, oct_image, tiny_model_and_processor


@pytest.fixture(scope="module")
def processor():
    return tiny_model_and_processor()[1]


def test_chat_template_renders_each_modality_placeholder(processor):
    text = processor.apply_chat_template(messages(True, True), add_generation_prompt=True, tokenize=False)
    assert text.index("<cfp_image>") < text.index("<oct_image>")
    assert text.endswith("<|im_start|>assistant\n")
    only_oct = processor.apply_chat_template(messages(False, True), tokenize=False)
    assert "<cfp_image>" not in only_oct and only_oct.count("<oct_image>") == 1


def test_image_item_without_modality_is_rejected(processor):
    bad = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
    with pytest.raises(Exception, match="modality"):
        processor.apply_chat_template(bad, tokenize=False)


def test_images_are_routed_in_placeholder_order_and_expanded(processor):
    oct_first = [{"role": "user", "content": [{"type": "image", "modality": "oct"}, {"type": "image", "modality": "cfp"}]}]
    text = processor.apply_chat_template(oct_first, tokenize=False)
    fundus, scan = fundus_image(), oct_image()
    out = processor(text=[text], images=[[scan, fundus]], return_tensors="pt")
    ids = out["input_ids"][0]
    assert int((ids == processor.cfp_token_id).sum()) == processor.cfp_num_tokens
    assert int((ids == processor.oct_token_id).sum()) == processor.oct_num_tokens
    expected_cfp = processor.cfp_image_processor(fundus)["pixel_values"]
    torch.testing.assert_close(out["pixel_values_cfp"], expected_cfp)
    assert out["oct_slices_per_image"].tolist() == [1]


def test_oct_volume_is_one_image_with_many_slices(processor):
    text = processor.apply_chat_template(messages(False, True), tokenize=False)
    volume = [oct_image(seed=s) for s in range(5)]
    out = processor(text=[text], images=[[volume]], return_tensors="pt")
    assert out["pixel_values_oct"].shape[0] == 5 and out["oct_slices_per_image"].tolist() == [5]
    stacked = np.stack([np.asarray(v) for v in volume])
    out_array = processor(text=[text], images=[[stacked]], return_tensors="pt")
    torch.testing.assert_close(out_array["pixel_values_oct"], out["pixel_values_oct"])


@pytest.mark.parametrize("n_images", [0, 2])
def test_placeholder_image_count_mismatch(processor, n_images):
    text = processor.apply_chat_template(messages(True, False), tokenize=False)
    with pytest.raises(ValueError, match=rf"1 image placeholders .* but {n_images} images"):
        processor(text=[text], images=[[fundus_image()] * n_images])


def test_images_without_placeholders(processor):
    text = processor.apply_chat_template(messages(False, False), tokenize=False)
    with pytest.raises(ValueError, match="0 image placeholders"):
        processor(text=[text], images=[[fundus_image()]])


def test_truncation_that_cuts_placeholders_is_an_error(processor):
    text = processor.apply_chat_template(messages(True, True), tokenize=False)
    with pytest.raises(ValueError, match="truncation cut"):
        processor(text=[text], images=[[fundus_image(), oct_image()]], truncation=True, max_length=20)


@pytest.mark.parametrize(
    "image,match",
    [
        (np.full((32, 32, 3), np.nan, np.float32), "NaN or infinite"),
        (np.full((32, 32), np.inf, np.float32), "NaN or infinite"),
        (np.zeros((8, 8, 3), np.uint8), "at least 16 px"),
        (np.zeros((32, 32, 2), np.uint8), r"expected a grayscale \(H, W\) or colour \(H, W, 3\)"),
        (Image.new("HSV", (32, 32)), "unsupported PIL image mode"),
        ("not an image", "expected a PIL image"),
    ],
)
def test_bad_images_get_clear_errors(image, match):
    with pytest.raises(ValueError, match=match):
        GrokCFPImageProcessor(size=32)(image)


def test_sixteen_bit_oct_is_scaled_like_eight_bit():
    scan8 = np.asarray(oct_image())
    scan16 = (scan8.astype(np.uint16) * 257)
    processor = GrokOCTImageProcessor(size=32)
    torch.testing.assert_close(processor(scan16)["pixel_values"], processor(scan8)["pixel_values"], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "scan,match",
    [
        (np.full((32, 32), 4095, np.int16), "pixel values 4095 to 4095 have no known bit depth"),  # 12-bit OCT
        (np.full((32, 32), 4095.0, np.float32), "pixel values 4095 to 4095 have no known bit depth"),
        (np.full((32, 32), -0.5, np.float64), "pixel values -0.5 to -0.5 have no known bit depth"),
        (torch.full((32, 32), 4095, dtype=torch.int16), "pixel values 4095 to 4095 have no known bit depth"),
        (np.zeros((32, 32), bool), "pixel type bool is not supported"),
    ],
)
def test_arrays_of_unknown_scale_are_refused_not_rescaled(scan, match):
    with pytest.raises(ValueError, match=rf"^oct images\[0\]: {match}.*convert it to uint8 \(0-255\), or to float in \[0, 1\]"):
        GrokOCTImageProcessor(size=32)(scan)


def test_arrays_and_tensors_in_known_ranges_match_the_pil_image():
    scan = oct_image()
    processor = GrokOCTImageProcessor(size=32)
    expected = processor(scan)["pixel_values"]
    pixels = np.array(scan)
    for same in (pixels, pixels / 255.0, pixels.astype(np.float32), pixels.astype(np.int64),  # 8-bit values in
                 torch.from_numpy(pixels), torch.from_numpy(pixels / 255.0).half()):  # a wider type read as 8-bit
        torch.testing.assert_close(processor(same)["pixel_values"], expected, atol=2e-3, rtol=0)


def test_cfp_crop_finds_the_fundus_field():
    rgb = np.zeros((100, 160, 3), np.float32)
    yy, xx = np.mgrid[:100, :160]
    rgb[(yy - 50) ** 2 + (xx - 90) ** 2 < 40**2] = 0.6
    top, bottom, left, right = fundus_bounding_box(rgb)
    assert abs(top - 10) <= 2 and abs(bottom - 90) <= 2 and abs(left - 50) <= 2 and abs(right - 130) <= 2
    # The cropped fundus fills the processed frame: corners are background, centre is fundus.
    pixels = GrokCFPImageProcessor(size=64)(Image.fromarray((rgb * 255).astype(np.uint8)), return_tensors=None)["pixel_values"][0]
    assert pixels[:, 32, 32].mean() > pixels[:, 1, 1].mean() + 1.0


def test_outputs_match_trl_collator_expectations(processor):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    collator = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    examples = [
        {
            "prompt": messages(True, True),
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": "Conclusion: Glaucoma."}]}],
            "images": [fundus_image(), oct_image()],
        },
        {
            "prompt": messages(False, True),
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": "Conclusion: Normal."}]}],
            "images": [oct_image(seed=1)],
        },
    ]
    batch = collator(examples)
    assert batch["pixel_values_cfp"].shape[0] == 1 and batch["pixel_values_oct"].shape[0] == 2
    supervised = batch["input_ids"][batch["labels"] != -100]
    text = processor.tokenizer.decode(supervised)
    assert "Conclusion" in text and "Assess the retina" not in text
    assert not torch.isin(supervised, torch.tensor([processor.cfp_token_id, processor.oct_token_id])).any()


def test_biomarker_placeholder_expands_to_the_models_tokens_or_to_none():
    _, with_tokens = tiny_model_and_processor(num_biomarker_tokens=4)
    _, text_only = tiny_model_and_processor()
    for proc, expected in ((with_tokens, 4), (text_only, 0)):
        text = proc.apply_chat_template(messages(False, False, with_biomarkers=True), tokenize=False)
        assert proc.biomarker_token in text
        ids = proc(text=[text], biomarkers=[{"central_subfield": 300.0}])["input_ids"][0]
        bare = proc(text=[proc.apply_chat_template(messages(False, False), tokenize=False)])["input_ids"][0]
        assert len(ids) - len(bare) == expected  # a text-only model's prompt is unchanged by the item
    assert "biomarker_values" not in text_only(text=[text], biomarkers=[{"central_subfield": 300.0}])


def test_truncation_that_cuts_biomarker_placeholders_is_an_error():
    _, processor = tiny_model_and_processor(num_biomarker_tokens=4)
    text = processor.apply_chat_template(messages(False, False, with_biomarkers=True), tokenize=False)
    ids = processor(text=[text])["input_ids"][0]
    first = ids.index(processor.biomarker_token_id)
    kept = processor(text=[text], truncation=True, max_length=first + 4)["input_ids"][0]  # all 4 kept: no error
    assert kept.count(processor.biomarker_token_id) == 4
    with pytest.raises(ValueError, match="truncation cut biomarker placeholders"):
        processor(text=[text], truncation=True, max_length=first + 2)


def test_biomarker_values_follow_the_models_order_with_nan_for_missing():
    _, processor = tiny_model_and_processor(num_biomarker_tokens=2)
    names = processor.biomarker_names
    rows = processor.biomarker_values([{names[3]: 12.5, names[0]: None}, None])
    assert len(rows[0]) == len(names) == 37 and rows[0][3] == 12.5
    assert all(np.isnan(v) for i, v in enumerate(rows[0]) if i != 3) and all(np.isnan(v) for v in rows[1])
    with pytest.raises(ValueError, match="not among this model's biomarker_names"):
        processor.biomarker_values([{"central_thickness": 300.0}])


@pytest.mark.parametrize("value", ["n/a", True, float("inf"), -float("inf"), "28.5"])
def test_biomarker_values_refuse_anything_but_finite_numbers(value):
    _, processor = tiny_model_and_processor(num_biomarker_tokens=2)
    name = processor.biomarker_names[5]
    with pytest.raises(ValueError, match=rf"^Sample 1: biomarker '{name}' must be a finite number, got .*; pass None"):
        processor.biomarker_values([{name: 250.0}, {name: value}])


def test_biomarker_values_refuse_a_sample_that_is_not_a_mapping():
    _, processor = tiny_model_and_processor(num_biomarker_tokens=2)
    with pytest.raises(ValueError, match=r"^Sample 0: biomarkers must be a mapping of names to numbers .* got a list"):
        processor.biomarker_values([[250.0, 30.0]])


def test_biomarker_values_take_numpy_numbers_and_nan_as_missing():
    _, processor = tiny_model_and_processor(num_biomarker_tokens=2)
    first, second = processor.biomarker_names[:2]
    row = processor.biomarker_values([{first: np.float32(0.5), second: float("nan")}])[0]
    assert row[0] == 0.5 and np.isnan(row[1])


def test_grok_collator_adds_each_rows_biomarker_vector():
    from grok_retina.training import GrokDataCollator

    _, processor = tiny_model_and_processor(num_biomarker_tokens=2)
    name = processor.biomarker_names[0]
    examples = [
        {
            "prompt": messages(True, True, with_biomarkers=True),
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": "Conclusion: Normal."}]}],
            "images": [fundus_image(seed=i), oct_image(seed=i)],
            "biomarkers": {name: 250.0 + i},
        }
        for i in range(2)
    ]
    batch = GrokDataCollator(processor, completion_only_loss=True)([dict(e) for e in examples])
    assert batch["biomarker_values"][:, 0].tolist() == [250.0, 251.0]
    assert not (batch["labels"] == processor.biomarker_token_id).any()
    with pytest.raises(ValueError, match="every row needs a 'biomarkers' column"):
        GrokDataCollator(processor, completion_only_loss=True)([{k: v for k, v in e.items() if k != "biomarkers"} for e in examples])
