"""`GrokProcessor`: a tokenizer plus the CFP and OCT image processors, with a chat template for both modalities."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

from transformers import AutoTokenizer
from transformers.image_processing_base import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_grok import MODALITIES, GrokConfig
from .image_processing_grok import GrokCFPImageProcessor, GrokOCTImageProcessor

CFP_TOKEN = "<cfp_image>"
OCT_TOKEN = "<oct_image>"
BIOMARKER_TOKEN = "<biomarkers>"


def default_chat_template(
    cfp_token: str = CFP_TOKEN, oct_token: str = OCT_TOKEN, biomarker_token: str = BIOMARKER_TOKEN
) -> str:
    """ChatML in which ``{"type": "image", "modality": "cfp" | "oct"}`` renders that modality's placeholder and
    ``{"type": "biomarkers"}`` the biomarker placeholder.

    Assistant turns sit in ``{% generation %}`` blocks, so TRL's ``assistant_only_loss`` works.
    """
    return (
        "{%- for message in messages -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
        "{%- if message['role'] == 'assistant' -%}{%- generation -%}"
        "{%- if message['content'] is string -%}{{- message['content'] -}}"
        "{%- else -%}{%- for item in message['content'] -%}"
        "{%- if item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{- '<|im_end|>' -}}{%- endgeneration -%}{{- '\\n' -}}"
        "{%- else -%}"
        "{%- if message['content'] is string -%}{{- message['content'] -}}"
        "{%- else -%}{%- for item in message['content'] -%}"
        "{%- if item['type'] == 'image' -%}"
        f"{{%- if item['modality'] == 'cfp' -%}}{{{{- '{cfp_token}' -}}}}"
        f"{{%- elif item['modality'] == 'oct' -%}}{{{{- '{oct_token}' -}}}}"
        "{%- else -%}{{- raise_exception(\"Each image item needs 'modality': 'cfp' or 'oct'.\") -}}{%- endif -%}"
        f"{{%- elif item['type'] == 'biomarkers' -%}}{{{{- '{biomarker_token}' -}}}}"
        "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


def add_placeholder_tokens(
    tokenizer, cfp_token: str = CFP_TOKEN, oct_token: str = OCT_TOKEN, biomarker_token: str = BIOMARKER_TOKEN
) -> tuple[int, int, int]:
    """Add the CFP, OCT and biomarker placeholders as special tokens (idempotent); returns their ids."""
    tokens = (cfp_token, oct_token, biomarker_token)
    missing = [t for t in tokens if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    cfp_id, oct_id, biomarker_id = (tokenizer.convert_tokens_to_ids(t) for t in tokens)
    return cfp_id, oct_id, biomarker_id


def _biomarker_value(value: object, index: int, name: str) -> float:
    """``value`` as a float of the biomarker vector: NaN for None or NaN; anything but a finite number is refused."""
    if value is None:
        return math.nan
    if isinstance(value, Real) and not isinstance(value, bool):
        number = float(value)
        if not math.isinf(number):
            return number
    raise ValueError(
        f"Sample {index}: biomarker {name!r} must be a finite number, got {value!r}; pass None (or leave it out) "
        "when it is missing."
    )


class GrokProcessor(ProcessorMixin):
    r"""Tokenizer + CFP and OCT image processors.

    ``processor(text=..., images=..., biomarkers=...)`` finds the placeholders in each text, gives the k-th image
    of a sample to the image processor of the k-th placeholder's modality, expands each placeholder to the model's
    number of tokens per image, and returns ``input_ids``, ``attention_mask``, ``pixel_values_cfp``,
    ``pixel_values_oct`` and ``oct_slices_per_image``. ``images`` is one list per text (or one flat list for a
    single text); an OCT volume is one entry holding a list of B-scans (or a (slices, H, W) array).

    The ``<biomarkers>`` placeholder expands to ``biomarker_num_tokens`` tokens (none for a model that reads
    biomarkers as text only); ``biomarkers`` (one mapping per text) then becomes ``biomarker_values``, one row per
    text in the order of ``biomarker_names``, NaN where a value is missing.
    """

    def __init__(
        self,
        tokenizer=None,
        cfp_image_processor=None,
        oct_image_processor=None,
        chat_template: str | None = None,
        cfp_token: str = CFP_TOKEN,
        oct_token: str = OCT_TOKEN,
        cfp_num_tokens: int = 196,
        oct_num_tokens: int = 196,
        biomarker_token: str = BIOMARKER_TOKEN,
        biomarker_num_tokens: int = 0,
        biomarker_names: Sequence[str] | None = None,
    ):
        self.cfp_token, self.oct_token, self.biomarker_token = cfp_token, oct_token, biomarker_token
        self.cfp_num_tokens, self.oct_num_tokens = int(cfp_num_tokens), int(oct_num_tokens)
        self.biomarker_num_tokens = int(biomarker_num_tokens)
        self.biomarker_names = list(biomarker_names) if biomarker_names is not None else None
        if self.biomarker_num_tokens and not self.biomarker_names:
            raise ValueError("biomarker_num_tokens > 0 needs biomarker_names (the model config's biomarker_names).")
        vocab = tokenizer.get_vocab()
        for token in (cfp_token, oct_token, *([biomarker_token] if self.biomarker_num_tokens else [])):
            if token not in vocab:
                raise ValueError(
                    f"The tokenizer has no {token!r} token; call modeling_grok.processing_grok.add_placeholder_tokens("
                    "tokenizer) (and resize the model's embeddings) or build the processor with GrokProcessor.from_config."
                )
        self.cfp_token_id = tokenizer.convert_tokens_to_ids(cfp_token)
        self.oct_token_id = tokenizer.convert_tokens_to_ids(oct_token)
        self.biomarker_token_id = tokenizer.convert_tokens_to_ids(biomarker_token) if self.biomarker_num_tokens else None
        self._placeholder = re.compile(f"{re.escape(cfp_token)}|{re.escape(oct_token)}")
        super().__init__(
            tokenizer,
            cfp_image_processor or GrokCFPImageProcessor(),
            oct_image_processor or GrokOCTImageProcessor(),
            chat_template=chat_template or default_chat_template(cfp_token, oct_token, biomarker_token),
        )

    @classmethod
    def from_config(cls, tokenizer, config: GrokConfig, chat_template: str | None = None) -> "GrokProcessor":
        """A processor matching ``config``'s towers and biomarker tokens; adds the placeholder tokens to
        ``tokenizer`` if missing."""
        add_placeholder_tokens(tokenizer)
        return cls(
            tokenizer=tokenizer,
            cfp_image_processor=GrokCFPImageProcessor(size=config.image_size("cfp")),
            oct_image_processor=GrokOCTImageProcessor(size=config.image_size("oct")),
            chat_template=chat_template,
            cfp_num_tokens=config.num_image_tokens("cfp"),
            oct_num_tokens=config.num_image_tokens("oct"),
            biomarker_num_tokens=config.num_biomarker_tokens,
            biomarker_names=config.biomarker_names,
        )

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # Both image processors live in processor_config.json; building them here keeps remote-code loading
        # independent of transformers' registry of image-processor classes.
        processor_dict = processor_dict or {}
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        image_processors = []
        for name, klass in (("cfp_image_processor", GrokCFPImageProcessor), ("oct_image_processor", GrokOCTImageProcessor)):
            settings = {k: v for k, v in (processor_dict.get(name) or {}).items() if k != "image_processor_type"}
            image_processors.append(klass(**settings))
        return [tokenizer, *image_processors]

    @property
    def model_input_names(self) -> list[str]:
        names = [*self.tokenizer.model_input_names, "pixel_values_cfp", "pixel_values_oct", "oct_slices_per_image"]
        return names + (["biomarker_values"] if self.biomarker_num_tokens else [])

    def num_tokens(self, modality: str) -> int:
        return self.cfp_num_tokens if modality == "cfp" else self.oct_num_tokens

    def _per_sample_images(self, images: Any, num_texts: int) -> list[list[Any]]:
        if images is None:
            return [[] for _ in range(num_texts)]
        if not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) == num_texts and all(isinstance(item, (list, tuple)) or item is None for item in images):
            return [list(item or []) for item in images]
        if num_texts == 1:
            return [list(images)]
        raise ValueError(
            f"images must hold one list of images per text ({num_texts} texts, got a flat list of {len(images)}); "
            "pass images=[[cfp, oct], [oct], ...] in the order of each text's placeholders."
        )

    def biomarker_values(self, biomarkers: Sequence[Mapping[str, object] | None]) -> list[list[float]]:
        """One row per sample in the order of ``biomarker_names``; NaN where a value is missing, None or NaN.

        Values must be finite numbers (not booleans or text); errors name the sample and the biomarker.
        """
        rows = []
        for index, values in enumerate(biomarkers):
            if values is not None and not isinstance(values, Mapping):
                raise ValueError(
                    f"Sample {index}: biomarkers must be a mapping of names to numbers (e.g. {{'rnfl': 28.5}}) or None, "
                    f"got a {type(values).__name__}."
                )
            values = dict(values or {})
            unknown = sorted(set(values) - set(self.biomarker_names))
            if unknown:
                raise ValueError(
                    f"Sample {index}: biomarkers {unknown} are not among this model's biomarker_names; use the schema "
                    "names (processing.biomarkers.BIOMARKER_NAMES)."
                )
            rows.append([_biomarker_value(values.get(name), index, name) for name in self.biomarker_names])
        return rows

    def __call__(
        self,
        images: Any = None,
        text: str | list[str] | None = None,
        biomarkers: Mapping[str, object] | Sequence[Mapping[str, object] | None] | None = None,
        **kwargs,
    ) -> BatchFeature:
        if text is None:
            raise ValueError("GrokProcessor needs text with image placeholders; build it with apply_chat_template.")
        return_tensors = kwargs.pop("return_tensors", None)
        kwargs.pop("images_kwargs", None)
        texts = [text] if isinstance(text, str) else list(text)
        per_sample = self._per_sample_images(images, len(texts))
        routed: dict[str, list[Any]] = {modality: [] for modality in MODALITIES}
        expanded = []
        for index, (sample_text, sample_images) in enumerate(zip(texts, per_sample)):
            placeholders = self._placeholder.findall(sample_text)
            if len(placeholders) != len(sample_images):
                raise ValueError(
                    f"Sample {index}: the text has {len(placeholders)} image placeholders "
                    f"({', '.join(placeholders) or 'none'}) but {len(sample_images)} images were given. Each image "
                    "needs one {'type': 'image', 'modality': 'cfp' | 'oct'} item in the messages, in order."
                )
            for placeholder, image in zip(placeholders, sample_images):
                if image is None:
                    raise ValueError(f"Sample {index}: an image for {placeholder} is None; drop its placeholder instead.")
                routed["cfp" if placeholder == self.cfp_token else "oct"].append(image)
            sample_text = self._placeholder.sub(
                lambda m: m.group(0) * self.num_tokens(self._modality(m.group(0))), sample_text
            )
            expanded.append(sample_text.replace(self.biomarker_token, self.biomarker_token * self.biomarker_num_tokens))
        data = dict(self.tokenizer(expanded, **kwargs))
        self._check_placeholders_kept(data["input_ids"], texts)
        if biomarkers is not None and self.biomarker_num_tokens:
            rows = [biomarkers] if isinstance(biomarkers, Mapping) else list(biomarkers)
            if len(rows) != len(texts):
                raise ValueError(f"biomarkers must hold one mapping per text ({len(texts)} texts, got {len(rows)}).")
            data["biomarker_values"] = self.biomarker_values(rows)
        if routed["cfp"]:
            data["pixel_values_cfp"] = self.cfp_image_processor(routed["cfp"], return_tensors=None)["pixel_values"]
        if routed["oct"]:
            oct_inputs = self.oct_image_processor(routed["oct"], return_tensors=None)
            data["pixel_values_oct"] = oct_inputs["pixel_values"]
            data["oct_slices_per_image"] = oct_inputs["slices_per_image"]
        return BatchFeature(data, tensor_type=return_tensors)

    def _modality(self, placeholder: str) -> str:
        return "cfp" if placeholder == self.cfp_token else "oct"

    def _check_placeholders_kept(self, input_ids, texts: list[str]) -> None:
        kinds = [("CFP image", self.cfp_token, self.cfp_token_id, self.cfp_num_tokens),
                 ("OCT image", self.oct_token, self.oct_token_id, self.oct_num_tokens)]
        if self.biomarker_num_tokens:
            kinds.append(("biomarker", self.biomarker_token, self.biomarker_token_id, self.biomarker_num_tokens))
        for index, (ids, sample_text) in enumerate(zip(input_ids, texts)):
            ids = list(ids)
            for what, token, token_id, per_placeholder in kinds:
                if ids.count(token_id) != sample_text.count(token) * per_placeholder:
                    raise ValueError(
                        f"Sample {index}: truncation cut {what} placeholders; raise max_length (each {what} takes "
                        f"{per_placeholder} tokens) or shorten the text."
                    )

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)


__all__ = ["GrokProcessor", "add_placeholder_tokens", "default_chat_template"]
