# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""ECLIP model configuration."""

import math

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

TEXT_POOLING = ("cls", "mean", "eos", "pooler")
VISION_POOLING = ("pooler", "cls", "mean", "cls_mean")
LOSS_WEIGHT_FIELDS = ("itc_weight", "inter_weight", "intra_weight", "selection_weight")
MODALITIES = ("image", "text", "both")
INSTANCE_MATCHING = ("max", "one_to_one")
SELECTION_TARGETS = ("named", "members", "retrieval")
MATCHING_FEATURES = ("u", "v", "abs_diff", "product")
MATCHING_MODES = ("bi_encoder", "cross_encoder")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


@strict
class EclipConfig(PreTrainedConfig):
    r"""
    Configuration of an [`EclipModel`]: a vision tower and a text tower of any registered model type, an instance
    decoder with learnable queries, and the weights of the pretraining objectives (see DESIGN.md).

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the vision tower (any `AutoModel` type giving tokens or a feature map; a dict needs a
            `model_type`). Defaults to a CLIP ViT (`clip_vision_model`).
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the text tower (any `AutoModel` text encoder). Defaults to BERT.
        projection_dim (`int`, *optional*, defaults to 512):
            Dimension of the shared image/text/instance embedding space.
        text_pooling (`str`, *optional*, defaults to `"mean"`):
            Text vector: `"cls"` (first token), `"mean"` (mask-aware), `"eos"` (last attended token) or `"pooler"`.
        vision_pooling (`str`, *optional*, defaults to `"pooler"`):
            Global image vector `g`: `"pooler"`, `"cls"`, `"mean"` or `"cls_mean"` (first token and mean of the
            others concatenated, twice the tower's width).
        logit_scale_init_value (`float`, *optional*, defaults to 2.6592):
            Initial log temperature (ln(1/0.07), as in CLIP); at most ln(100), and clamped there in use.
        use_instance_decoder (`bool`, *optional*, defaults to `True`):
            `False` gives a plain CLIP (`s = <g, t>`), the baseline.
        num_instance_queries (`int`, *optional*, defaults to 8):
            Number K of learnable instance queries.
        decoder_layers (`int`, *optional*, defaults to 2):
            Number of [self-attention, cross-attention, MLP] decoder layers.
        decoder_attention_heads (`int`, *optional*, defaults to 8):
            Attention heads per decoder attention; must divide `decoder_hidden_size`.
        decoder_hidden_size (`int`, *optional*, defaults to 512):
            Width of the instance decoder.
        decoder_intermediate_size (`int`, *optional*):
            Width of the decoder MLP; defaults to 4 x `decoder_hidden_size`.
        decoder_hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the decoder MLP.
        decoder_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the decoder's attention weights and residual branches, in [0, 1).
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the decoder layer norms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Std of the normal initialisation of the decoder's and the task heads' weights.
        itc_weight, inter_weight, intra_weight, selection_weight (`float`, *optional*, defaults to 1, 1, 1, 0.5):
            Weights of the global ITC, inter-product, intra-product and selection losses; 0 switches one off.
        scene_positives (`bool`, *optional*, defaults to `True`):
            Image-text losses take as positives every product an image shows (`member_ids`), not only the named one.
        inter_temperature (`float`, *optional*):
            Train the inter-product loss on the smooth maximum over queries with this temperature; `None`: hard max.
        instance_matching (`str`, *optional*, defaults to `"one_to_one"`):
            `"one_to_one"`: a scene's products are matched to distinct queries in the inter-product loss (needs
            `scene_positives=True`, no `inter_temperature`); `"max"`: each text takes its best query.
        instance_residual (`bool`, *optional*, defaults to `True`):
            Instance embeddings are the global image embedding plus the projected decoder state.
        selection_target (`str`, *optional*, defaults to `"members"`):
            What the selection head learns: `"named"` (the query the image's text picks), `"members"` (the queries of
            every product shown) or `"retrieval"` (the weighting that retrieves the shown products' texts).
        modality (`str`, *optional*, defaults to `"image"`):
            Task heads: what describes a product, `"image"`, `"text"` or `"both"`.
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Task heads: dropout before the classification / matching layers, in [0, 1).
        matching_features (`list[str]`, *optional*, defaults to `("u", "v", "abs_diff", "product")`):
            [`EclipForProductMatching`]: which of `u`, `v`, `|u - v|` and `u * v` the match MLP reads.
        matching_hidden_size (`int`, *optional*):
            [`EclipForProductMatching`]: width of the match MLP; defaults to the width of a product's features.
        matching_mode (`str`, *optional*, defaults to `"bi_encoder"`):
            [`EclipForProductMatching`]: `"bi_encoder"` (each product embedded alone) or `"cross_encoder"` (both
            texts in one sequence; needs `modality="text"`).

        `num_labels`, `id2label`, `label2id` and `problem_type` (from [`PreTrainedConfig`]) configure the task heads;
        a `num_labels` that disagrees with `id2label` is an error.

    Example:

    ```python
    >>> from modeling_eclip import EclipConfig, EclipModel
    >>> config = EclipConfig(num_instance_queries=4, decoder_layers=1)
    >>> model = EclipModel(config)
    ```"""

    model_type = "eclip"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projection_dim: int = 512
    text_pooling: str = "mean"
    vision_pooling: str = "pooler"
    logit_scale_init_value: float | int = 2.6592
    use_instance_decoder: bool = True
    num_instance_queries: int = 8
    decoder_layers: int = 2
    decoder_attention_heads: int = 8
    decoder_hidden_size: int = 512
    decoder_intermediate_size: int | None = None
    decoder_hidden_act: str = "gelu"
    decoder_dropout: float | int = 0.0
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    itc_weight: float | int = 1.0
    inter_weight: float | int = 1.0
    intra_weight: float | int = 1.0
    selection_weight: float | int = 0.5
    scene_positives: bool = True
    inter_temperature: float | int | None = None
    instance_matching: str = "one_to_one"
    instance_residual: bool = True
    selection_target: str = "members"
    modality: str = "image"
    classifier_dropout: float | int = 0.0
    matching_features: list[str] | tuple[str, ...] = MATCHING_FEATURES
    matching_hidden_size: int | None = None
    matching_mode: str = "bi_encoder"

    def __post_init__(self, **kwargs):
        if self.decoder_intermediate_size is None:
            self.decoder_intermediate_size = 4 * self.decoder_hidden_size
        # Checked here rather than in a `@strict` validator, which would wrap the ValueError in its own error type.
        self._check_fields()
        self._check_labels(kwargs.get("num_labels"), self.id2label, self.label2id)
        super().__post_init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """
        `PreTrainedConfig.from_dict`, where `from_pretrained(folder, num_labels=N)` re-labels a saved head: a saved
        `id2label` of another length gives way to `num_labels` (transformers then sets N default labels, or the
        `id2label` passed with it).
        """
        num_labels = kwargs.get("num_labels")
        if num_labels is not None:
            cls._check_labels(num_labels, kwargs.get("id2label"), kwargs.get("label2id"))
            saved = config_dict.get("id2label")
            if saved is not None and len(saved) != num_labels:
                config_dict = {k: v for k, v in config_dict.items() if k not in ("id2label", "label2id")}
        return super().from_dict(config_dict, **kwargs)

    @staticmethod
    def _check_labels(num_labels, id2label, label2id):
        """A label count that disagrees with the label names is an error (transformers only warns)."""
        if num_labels is not None and (not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1):
            raise ValueError(f"EclipConfig.num_labels must be a positive integer, got {num_labels!r}.")
        if id2label is not None and num_labels is not None and len(id2label) != num_labels:
            raise ValueError(
                f"EclipConfig.num_labels ({num_labels}) disagrees with id2label, which names {len(id2label)} labels: "
                "pass one of them, or both consistently."
            )
        if id2label is not None and label2id is not None and len(label2id) != len(id2label):
            raise ValueError(
                f"EclipConfig.label2id names {len(label2id)} labels but id2label names {len(id2label)}."
            )

    def _check_fields(self):
        """Raise a `ValueError` naming the field for every bad value, before any tower is built."""
        for name in ("vision_config", "text_config"):
            sub = getattr(self, name)
            if isinstance(sub, dict) and "model_type" in sub and sub["model_type"] not in CONFIG_MAPPING:
                raise ValueError(
                    f"EclipConfig.{name} has unknown model_type {sub['model_type']!r}: it must be a model type "
                    "registered with transformers' AutoConfig (e.g. 'clip_vision_model', 'vit', 'bert')."
                )

        def positive(name):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"EclipConfig.{name} must be a positive integer, got {value!r}.")

        positive("projection_dim")
        if self.text_pooling not in TEXT_POOLING:
            raise ValueError(f"EclipConfig.text_pooling must be one of {TEXT_POOLING}, got {self.text_pooling!r}.")
        if self.vision_pooling not in VISION_POOLING:
            raise ValueError(
                f"EclipConfig.vision_pooling must be one of {VISION_POOLING}, got {self.vision_pooling!r}."
            )
        if self.use_instance_decoder:
            for name in ("num_instance_queries", "decoder_layers", "decoder_attention_heads", "decoder_hidden_size"):
                positive(name)
            positive("decoder_intermediate_size")
            if self.decoder_hidden_size % self.decoder_attention_heads:
                raise ValueError(
                    f"EclipConfig.decoder_hidden_size ({self.decoder_hidden_size}) must be divisible by "
                    f"decoder_attention_heads ({self.decoder_attention_heads})."
                )
        if not 0.0 <= self.decoder_dropout < 1.0:
            raise ValueError(f"EclipConfig.decoder_dropout must be in [0, 1), got {self.decoder_dropout!r}.")
        for name in LOSS_WEIGHT_FIELDS:
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"EclipConfig.{name} must be a finite non-negative number, got {value!r}.")
        if self.inter_temperature is not None and not (
            math.isfinite(self.inter_temperature) and self.inter_temperature > 0
        ):
            raise ValueError(
                f"EclipConfig.inter_temperature must be a positive number or None, got {self.inter_temperature!r}."
            )
        if self.selection_target not in SELECTION_TARGETS:
            raise ValueError(
                f"EclipConfig.selection_target must be one of {SELECTION_TARGETS}, got {self.selection_target!r}."
            )
        if self.instance_matching not in INSTANCE_MATCHING:
            raise ValueError(
                f"EclipConfig.instance_matching must be one of {INSTANCE_MATCHING}, got {self.instance_matching!r}."
            )
        if self.instance_matching == "one_to_one":
            if not self.scene_positives:
                raise ValueError(
                    "EclipConfig.instance_matching='one_to_one' needs scene_positives=True: the texts it assigns to "
                    "a scene's queries are the products the scene shows, which must be its positives. Pass "
                    "instance_matching='max' with scene_positives=False."
                )
            if self.inter_temperature is not None:
                raise ValueError(
                    "EclipConfig.instance_matching='one_to_one' and inter_temperature are alternatives: pass "
                    "instance_matching='max' to train on the smooth maximum."
                )
        if not math.isfinite(self.logit_scale_init_value) or self.logit_scale_init_value > math.log(100):
            raise ValueError(
                f"EclipConfig.logit_scale_init_value must be finite and at most ln(100), got "
                f"{self.logit_scale_init_value!r}."
            )
        self._check_head_fields()

    def _check_head_fields(self):
        """The task-head fields; heads call this again at construction (`from_pretrained` kwargs bypass __init__)."""
        if self.modality not in MODALITIES:
            raise ValueError(f"EclipConfig.modality must be one of {MODALITIES}, got {self.modality!r}.")
        if not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"EclipConfig.classifier_dropout must be in [0, 1), got {self.classifier_dropout!r}.")
        features = self.matching_features
        if isinstance(features, str) or not features or any(f not in MATCHING_FEATURES for f in features):
            raise ValueError(
                f"EclipConfig.matching_features must be a non-empty list drawn from {MATCHING_FEATURES}, got "
                f"{features!r}."
            )
        if len(set(features)) != len(features):
            raise ValueError(f"EclipConfig.matching_features has duplicates: {features!r}.")
        hidden = self.matching_hidden_size
        if hidden is not None and (not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1):
            raise ValueError(f"EclipConfig.matching_hidden_size must be a positive integer or None, got {hidden!r}.")
        if self.matching_mode not in MATCHING_MODES:
            raise ValueError(f"EclipConfig.matching_mode must be one of {MATCHING_MODES}, got {self.matching_mode!r}.")
        if self.matching_mode == "cross_encoder" and self.modality != "text":
            raise ValueError(
                "EclipConfig.matching_mode='cross_encoder' reads both products' texts as one sequence in the text "
                f"tower: it needs modality='text', got modality={self.modality!r}."
            )
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"EclipConfig.problem_type must be None or one of {PROBLEM_TYPES}, got {self.problem_type!r}.")


__all__ = ["EclipConfig"]
