"""Tiny, offline, random-initialised GROK parts built the same way as the real ones."""

from __future__ import annotations

import numpy as np
from PIL import Image

from grok_retina.tiny_backbone import train_tokenizer
from modeling_grok import GrokConfig, GrokForConditionalGeneration, GrokProcessor
from processing.biomarkers import BIOMARKERS
from processing.labels import LABEL_DISPLAY, LABELS

def tiny_tokenizer(vocab_size: int = 400):
    """The library's tokenizer trainer on the project's own vocabulary."""
    corpus = [b.display for b in BIOMARKERS] + list(LABELS) + list(LABEL_DISPLAY.values())
    corpus += ["Biomarker Assessments: thinned within normal limits thickened. Sub-inference: Conclusion: consistent with"]
    return train_tokenizer(corpus * 4, vocab_size=vocab_size)


def tiny_model_and_processor(
    seed: int = 0, num_biomarker_tokens: int = 0, **config_kwargs
) -> tuple[GrokForConditionalGeneration, GrokProcessor]:
    import torch

    from grok_retina.sft import biomarker_token_config

    tokenizer = tiny_tokenizer()
    config = GrokConfig.tiny(**biomarker_token_config(num_biomarker_tokens), **config_kwargs)
    processor = GrokProcessor.from_config(tokenizer, config)
    config.cfp_token_id, config.oct_token_id = processor.cfp_token_id, processor.oct_token_id
    config.biomarker_token_id = tokenizer.convert_tokens_to_ids(processor.biomarker_token)
    torch.manual_seed(seed)
    model = GrokForConditionalGeneration(config).eval()
    return model, processor


def fundus_image(size: int = 96, seed: int = 0) -> Image.Image:
    """A bright disc on black with noise: the shape of a fundus photograph."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2
    rgb = np.zeros((size, size, 3), np.float32)
    rgb[disc] = [0.8, 0.35, 0.15]
    rgb += disc[..., None] * rng.normal(0, 0.05, rgb.shape)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))


def oct_image(height: int = 64, width: int = 96, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    scan = rng.gamma(2.0, 20.0, (height, width))
    scan[height // 3 : height // 3 + 4] += 150
    return Image.fromarray(np.clip(scan, 0, 255).astype(np.uint8), mode="L")


def messages(
    with_cfp: bool = True, with_oct: bool = True, text: str = "Assess the retina.", with_biomarkers: bool = False
) -> list[dict]:
    content = []
    if with_cfp:
        content.append({"type": "image", "modality": "cfp"})
    if with_oct:
        content.append({"type": "image", "modality": "oct"})
    if with_biomarkers:
        content.append({"type": "biomarkers"})
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]
