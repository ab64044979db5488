"""ECLIP: an e-commerce vision-language model for transformers.

Importing the package registers ECLIP with transformers' Auto classes, so `AutoModel.from_pretrained(folder)` works
without `trust_remote_code`; saved folders also carry the code (`auto_map`) for users without the package.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .configuration_eclip import EclipConfig
from .modeling_eclip import EclipInstanceOutput, EclipModel, EclipOutput, EclipPreTrainedModel
from .processing_eclip import DEFAULT_PRODUCT_TEXT_TEMPLATE, EclipProcessor, build_product_text

AutoConfig.register(EclipConfig.model_type, EclipConfig, exist_ok=True)
AutoModel.register(EclipConfig, EclipModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(EclipConfig, EclipModel, exist_ok=True)
AutoProcessor.register(EclipConfig, EclipProcessor, exist_ok=True)

# `save_pretrained` then writes `auto_map` and copies these modules next to the weights (trust_remote_code loading).
EclipConfig.register_for_auto_class()
EclipModel.register_for_auto_class("AutoModel")
EclipProcessor.register_for_auto_class()

__all__ = [
    "EclipConfig",
    "EclipModel",
    "EclipOutput",
    "EclipInstanceOutput",
    "EclipPreTrainedModel",
    "EclipProcessor",
    "build_product_text",
    "DEFAULT_PRODUCT_TEXT_TEMPLATE",
]
