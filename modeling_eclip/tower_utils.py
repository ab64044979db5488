# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
The towers an ECLIP model wraps (any transformers vision and text models): the arguments they are built with, their
output width, and the split of a ViT-like vision tower into a head and a tail (`tail(head(x, k), k) == tower(x)`),
which the feature cache of a locked tower and partial unlocking use. Imports only torch and transformers, so
`save_pretrained` ships it beside the model code.
"""

import inspect

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling


def tower_init_kwargs(config, pooling: str) -> dict:
    """Drop a tower's pooling layer when it is not used, so that every parameter gets a gradient."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    model_class = MODEL_MAPPING.get(type(config), None)
    if model_class is not None and pooling != "pooler":
        if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
            return {"add_pooling_layer": False}
    return {}


def from_pretrained_ignoring(model_class, name_or_path: str, *, missing=(), unexpected=(), **kwargs):
    """
    `model_class.from_pretrained(name_or_path, **kwargs)`, with transformers' own exemptions from its load report
    (`_keys_to_ignore_on_load_missing` / `_keys_to_ignore_on_load_unexpected`, regexes searched in each key) extended
    by `missing` and `unexpected` for this one load. For weights that are absent or left over on purpose: the
    checkpoint's pooler of a tower built without one, a head that the adapter loaded next restores. Any other missing or
    unexpected key is still reported. The model returned is a plain `model_class` instance.
    """
    missing, unexpected = list(missing), list(unexpected)
    if not missing and not unexpected:
        return model_class.from_pretrained(name_or_path, **kwargs)
    # A subclass for this load (transformers reads the exemptions from the class; patching `model_class` itself would
    # leak into concurrent loads), then the instance goes back to `model_class`, which it is in every other respect.
    exempt = type(model_class.__name__, (model_class,), {
        "__module__": model_class.__module__,
        "__qualname__": model_class.__qualname__,
        "_keys_to_ignore_on_load_missing": [*(model_class._keys_to_ignore_on_load_missing or ()), *missing],
        "_keys_to_ignore_on_load_unexpected": [*(model_class._keys_to_ignore_on_load_unexpected or ()), *unexpected],
    })
    model = exempt.from_pretrained(name_or_path, **kwargs)
    model.__class__ = model_class
    # post_init copied the exemptions onto the instance: keep only the class's own.
    model._keys_to_ignore_on_load_missing = set(model._keys_to_ignore_on_load_missing or ()) - set(missing)
    model._keys_to_ignore_on_load_unexpected = set(model._keys_to_ignore_on_load_unexpected or ()) - set(unexpected)
    return model


POOLER_KEYS = r"(^|\.)pooler\."  # the pooling layer's weights (BERT-like and ViT towers name it `pooler`)


def load_tower(name_or_path: str, pooling: str, config=None, **kwargs):
    """
    A pretrained tower (`AutoModel`) as ECLIP wraps it: without its pooling layer when the ECLIP pooling (`"cls"`,
    `"mean"`...) leaves it unused (`modeling_eclip.tower_utils.tower_init_kwargs`), in which case the checkpoint's
    pooler weights are expected leftovers and the load report does not list them as UNEXPECTED.
    """
    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    config = config if config is not None else AutoConfig.from_pretrained(name_or_path)
    init = tower_init_kwargs(config, pooling)
    if init.get("add_pooling_layer") is False:
        return from_pretrained_ignoring(MODEL_MAPPING[type(config)], name_or_path, unexpected=[POOLER_KEYS],
                                        config=config, **init, **kwargs)
    return AutoModel.from_pretrained(name_or_path, config=config, **init, **kwargs)


def tower_hidden_size(config) -> int:
    """The width of a tower's output tokens."""
    if getattr(config, "hidden_size", None):
        return config.hidden_size
    if getattr(config, "hidden_sizes", None):  # convolutional towers (ResNet, ConvNeXt)
        return config.hidden_sizes[-1]
    raise ValueError(f"Cannot tell the output width of a {config.model_type!r} tower: no hidden_size(s) in its config.")


def vision_layers(vision_model) -> nn.ModuleList:
    """The transformer blocks of a ViT-like vision tower (DINOv2, ViT, CLIP vision), in order."""
    for path in ("encoder.layer", "layers", "encoder.layers"):
        module = vision_model
        for name in path.split("."):
            module = getattr(module, name, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(
        f"A {vision_model.config.model_type!r} vision tower has no list of transformer blocks that ECLIP knows how "
        "to split (DINOv2, ViT and CLIP vision towers do): it can be locked whole, but not cached or partly unlocked."
    )


class _StopForward(Exception):
    def __init__(self, hidden_states: torch.Tensor):
        super().__init__()
        self.hidden_states = hidden_states


def vision_tower_head(vision_model, pixel_values: torch.Tensor, end_layer: int) -> torch.Tensor:
    """
    The hidden state of a ViT-like vision tower after block `end_layer` (`hidden_states[end_layer]` of
    `output_hidden_states=True`, 0 being the embedding output), computed without running the later blocks. With
    [`vision_tower_tail`] it splits the tower in two: `tail(head(x, k), k) == tower(x)`.

    Returns:
        `torch.Tensor` of shape `(batch_size, num_tokens, hidden_size)`.
    """
    layers = vision_layers(vision_model)
    if not 0 <= end_layer <= len(layers):
        raise ValueError(f"end_layer must be in [0, {len(layers)}] for this tower, got {end_layer}.")

    def stop_before(module, args, kwargs):
        raise _StopForward(args[0] if args else kwargs["hidden_states"])

    def stop_after(module, args, output):
        raise _StopForward(output[0] if isinstance(output, tuple) else output)

    if end_layer < len(layers):
        handle = layers[end_layer].register_forward_pre_hook(stop_before, with_kwargs=True)
    else:
        handle = layers[-1].register_forward_hook(stop_after)
    try:
        vision_model(pixel_values=pixel_values)
    except _StopForward as stop:
        return stop.hidden_states
    finally:
        handle.remove()
    raise RuntimeError("The vision tower returned without running its transformer blocks.")


def vision_tower_tail(vision_model, hidden_states: torch.Tensor, start_layer: int) -> BaseModelOutputWithPooling:
    """
    Finish a ViT-like vision tower from its hidden state after block `start_layer` (what the tower's
    `output_hidden_states=True` gives as `hidden_states[start_layer]`, index 0 being the embedding output): run the
    remaining blocks and the tower's final norm and pooling. `vision_tower_tail(tower, hs[k], k)` equals
    `tower(pixel_values)` for every `k`; a locked tower's early blocks are thereby computed once (the feature cache)
    while its last blocks still train.

    Args:
        hidden_states (`torch.Tensor` of shape `(batch_size, num_tokens, hidden_size)`)
    """
    layers = vision_layers(vision_model)
    if not 0 <= start_layer <= len(layers):
        raise ValueError(f"start_layer must be in [0, {len(layers)}] for this tower, got {start_layer}.")
    model_type = vision_model.config.model_type
    for layer in layers[start_layer:]:
        hidden_states = layer(hidden_states, None)
        if isinstance(hidden_states, tuple):
            hidden_states = hidden_states[0]
    if model_type == "clip_vision_model":
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=vision_model.post_layernorm(hidden_states[:, 0])
        )
    sequence = vision_model.layernorm(hidden_states)
    if model_type == "vit":
        pooled = vision_model.pooler(sequence) if vision_model.pooler is not None else None
    else:  # DINOv2
        pooled = sequence[:, 0]
    return BaseModelOutputWithPooling(last_hidden_state=sequence, pooler_output=pooled)


__all__ = ["vision_layers", "vision_tower_head", "vision_tower_tail"]
