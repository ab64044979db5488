"""ECLIP: an e-commerce vision-language model for transformers.

Importing the package registers ECLIP with transformers' Auto classes, so `AutoModel.from_pretrained(folder)` works
without `trust_remote_code`; saved folders also carry the code (`auto_map`) for users without the package.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from . import configuration_eclip, loading_utils, modeling_eclip, processing_eclip, tower_utils
from .configuration_eclip import EclipConfig
from .loading_utils import atomic_directory, share_under_umask
from .modeling_eclip import (
    EclipForProductClassification,
    EclipForProductMatching,
    EclipForTokenClassification,
    EclipInstanceOutput,
    EclipModel,
    EclipOutput,
    EclipPreTrainedHead,
    EclipPreTrainedModel,
    EclipProductClassificationOutput,
    EclipProductMatchingOutput,
    EclipTokenClassificationOutput,
)
from .processing_eclip import DEFAULT_PRODUCT_TEXT_TEMPLATE, EclipProcessor, build_product_text, open_image
from .tower_utils import vision_layers, vision_tower_head, vision_tower_tail

AutoConfig.register(EclipConfig.model_type, EclipConfig, exist_ok=True)
AutoModel.register(EclipConfig, EclipModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(EclipConfig, EclipModel, exist_ok=True)
AutoProcessor.register(EclipConfig, EclipProcessor, exist_ok=True)
# Task heads. All share EclipConfig, and each Auto class maps the config to one model class. The product matcher
# (a pair of products -> one logit) fits no Auto task class or pipeline and has none: load it with
# `EclipForProductMatching.from_pretrained(folder)` (its saved folder still carries the code, see its docstring).
AutoModelForImageClassification.register(EclipConfig, EclipForProductClassification, exist_ok=True)
AutoModelForSequenceClassification.register(EclipConfig, EclipForProductClassification, exist_ok=True)
AutoModelForTokenClassification.register(EclipConfig, EclipForTokenClassification, exist_ok=True)

# `save_pretrained` then writes `auto_map` and copies these modules next to the weights (trust_remote_code loading).
EclipConfig.register_for_auto_class()
EclipModel.register_for_auto_class("AutoModel")
EclipProcessor.register_for_auto_class()
# The classifier serves two Auto classes; its save_pretrained adds AutoModelForImageClassification to auto_map.
EclipForProductClassification.register_for_auto_class("AutoModelForSequenceClassification")
EclipForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")

# The public names are each module's own __all__ (imported above).
__all__ = [
    *configuration_eclip.__all__,
    *modeling_eclip.__all__,
    *processing_eclip.__all__,
    *loading_utils.__all__,
    *tower_utils.__all__,
]
