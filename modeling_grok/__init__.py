"""GROK in the transformers idiom; importing this package registers it with the Auto classes."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .component_loading import load_vision_tower_state_dict
from .configuration_aligner import GrokAlignerConfig
from .configuration_grok import GrokConfig
from .image_processing_grok import GrokCFPImageProcessor, GrokOCTImageProcessor
from .modeling_aligner import GrokAligner
from .modeling_grok import GrokForConditionalGeneration, GrokModel, GrokPreTrainedModel
from .processing_grok import GrokProcessor, add_placeholder_tokens

AutoConfig.register("grok", GrokConfig, exist_ok=True)
AutoModel.register(GrokConfig, GrokModel, exist_ok=True)
AutoModelForImageTextToText.register(GrokConfig, GrokForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(GrokConfig, GrokForConditionalGeneration, exist_ok=True)
AutoProcessor.register(GrokConfig, GrokProcessor, exist_ok=True)
AutoConfig.register("grok_aligner", GrokAlignerConfig, exist_ok=True)
AutoModel.register(GrokAlignerConfig, GrokAligner, exist_ok=True)

# save_pretrained writes auto_map and copies the code files, so saved folders load with trust_remote_code=True.
GrokConfig.register_for_auto_class()
GrokForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
GrokProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "GrokAligner",
    "GrokAlignerConfig",
    "GrokCFPImageProcessor",
    "GrokConfig",
    "GrokForConditionalGeneration",
    "GrokModel",
    "GrokOCTImageProcessor",
    "GrokPreTrainedModel",
    "GrokProcessor",
    "add_placeholder_tokens",
    "load_vision_tower_state_dict",
]
