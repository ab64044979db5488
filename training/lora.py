"""LoRA adapters for the ECLIP task heads, with peft.

The recipe (README, "LoRA adapters"):

```python
from peft import PeftModel
from transformers import AutoConfig, AutoModelForSequenceClassification
from eclip.training.lora import apply_lora, save_adapter

model = AutoModelForSequenceClassification.from_pretrained("path/to/eclip", num_labels=6, modality="text")
model = apply_lora(model, r=16, alpha=32, dropout=0.05)      # only adapters + head + instance queries train
...                                                           # train (transformers.Trainer)
save_adapter(model, "adapter")                               # adapter + head weights and the head config: small

config = AutoConfig.from_pretrained("adapter")               # labels, modality
base = AutoModelForSequenceClassification.from_pretrained("path/to/eclip", config=config)
model = PeftModel.from_pretrained(base, "adapter")           # or: eclip.training.lora.load_adapter("adapter")
plain = model.merge_and_unload()                             # a plain head with the same outputs
```

`default_lora_targets` picks the attention projections of each tower the head uses (by the tower's model type, checked
against the model's real module names) and of the instance decoder; `default_modules_to_save` names the head and
the learnable instance queries, which are trained in full and saved with the adapter.
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads with the model, not with the command line's argument checks
    from torch import nn

logger = logging.getLogger(__name__)

# Attention projections (suffixes of module names) by tower model type, as named in transformers 5. Unknown types
# (and known ones whose names changed) fall back to GENERIC_TARGETS.
TOWER_TARGETS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        ("clip_vision_model", "clip_text_model", "siglip_vision_model", "siglip_text_model", "chinese_clip_vision_model"),
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"),
    ),
    **dict.fromkeys(
        ("vit", "deit", "dinov2", "beit", "vit_msn"),
        ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"),
    ),
    "data2vec-vision": (
        "attention.attention.query", "attention.attention.key", "attention.attention.value", "attention.output.dense"
    ),
    **dict.fromkeys(
        ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie"),
        ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"),
    ),
    "distilbert": ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin"),
    "mpnet": ("attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o"),
}
GENERIC_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "o_proj", "query", "key", "value", "qkv")
DECODER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
QUERY_EMBEDDING = "instance_decoder.queries.embedding"
LORA_KEYS = ("r", "alpha", "dropout", "targets")
HEAD_MODULES = ("classifier", "matcher")


def _backbone(model: nn.Module) -> tuple[nn.Module, str]:
    """The EclipModel inside ``model`` (a head, an EclipModel or a PeftModel of either) and its name prefix."""
    for name, module in model.named_modules():
        if type(module).__name__ == "EclipModel":
            return module, (name + "." if name else "")
    raise ValueError(f"{type(model).__name__} holds no EclipModel: LoRA defaults are for ECLIP models.")


def _used_parts(model: nn.Module, backbone: nn.Module) -> tuple[bool, bool]:
    """(uses the image side, uses the text side) of the backbone for this model."""
    if type(model).__name__ == "EclipForTokenClassification":
        return False, True
    if type(model).__name__ == "EclipModel":
        return True, True
    modality = getattr(model.config, "modality", "both")
    return modality in ("image", "both"), modality in ("text", "both")


def _matching_linears(module: nn.Module, prefix: str, suffixes: tuple[str, ...]) -> list[str]:
    from torch import nn

    return [
        prefix + name
        for name, sub in module.named_modules()
        if isinstance(sub, nn.Linear) and any(name == s or name.endswith("." + s) for s in suffixes)
    ]


def default_lora_targets(model: nn.Module) -> list[str]:
    """
    Full names of the ``nn.Linear`` modules LoRA should adapt: the attention projections of the towers the head
    uses (CLIP/SigLIP: ``self_attn.{q,k,v,out}_proj``; ViT/DeiT/BEiT/DINOv2: ``attention.{q,k,v,o}_proj``;
    BERT-like: ``attention.self.{query,key,value}`` and ``attention.output.dense``; see ``TOWER_TARGETS``) and, when images are used, the instance
    decoder's ``q_proj, k_proj, v_proj, o_proj``. Towers that the head never runs (the vision tower of a text model)
    get no adapter; an unknown tower type falls back to the usual projection names, and a tower without attention
    (a CNN) gets none, with a warning. Exact names (peft matches them exactly), so nothing else is caught by a common suffix.
    """
    backbone, prefix = _backbone(model)
    uses_image, uses_text = _used_parts(model, backbone)
    targets: list[str] = []
    towers = []
    if uses_image:
        towers.append(("vision_model", backbone.vision_model))
    if uses_text:
        towers.append(("text_model", backbone.text_model))
    for attribute, tower in towers:
        model_type = getattr(tower.config, "model_type", "")
        found = _matching_linears(tower, f"{prefix}{attribute}.", TOWER_TARGETS.get(model_type, GENERIC_TARGETS))
        if not found:
            found = _matching_linears(tower, f"{prefix}{attribute}.", GENERIC_TARGETS)
        if not found:  # e.g. a convolutional vision tower: no attention to adapt
            logger.warning("No attention projection in the %r %s: it gets no LoRA adapter.", model_type, attribute)
        targets += found
    if uses_image and backbone.instance_decoder is not None:
        targets += _matching_linears(backbone.instance_decoder, f"{prefix}instance_decoder.", DECODER_TARGETS)
    if not targets:
        raise ValueError(
            "No LoRA target found in this model: pass targets= explicitly (module names from model.named_modules())."
        )
    return targets


def default_modules_to_save(model: nn.Module) -> list[str]:
    """The head (``classifier`` / ``matcher``) and, when images go through the instance decoder, the learnable
    instance queries (``eclip.instance_decoder.queries.embedding``): trained in full and saved with the adapter."""
    from torch import nn

    backbone, prefix = _backbone(model)
    modules = [name for name in HEAD_MODULES if isinstance(getattr(model, name, None), nn.Module)]
    uses_image, _ = _used_parts(model, backbone)
    if uses_image and backbone.instance_decoder is not None:
        modules.append(prefix + QUERY_EMBEDDING)
    return modules


def parse_lora_spec(spec: str | None) -> dict:
    """``"r=16,alpha=32,dropout=0.05,targets=query,value"`` -> ``{"r": 16, "alpha": 32, "dropout": 0.05,
    "targets": ["query", "value"]}``. A comma-separated piece without ``=`` continues the previous key's list, so
    ``targets`` may list several module names. Empty or ``None`` gives the defaults (r=16, alpha=32, dropout=0.05)."""
    out: dict = {"r": 16, "alpha": 32, "dropout": 0.05, "targets": None}
    last = None
    for piece in (spec or "").split(","):
        piece = piece.strip()
        if not piece:
            continue
        if "=" not in piece:
            if last != "targets":
                raise ValueError(f"--lora: {piece!r} is not key=value (keys: {', '.join(LORA_KEYS)}).")
            out["targets"].append(piece)
            continue
        key, value = (part.strip() for part in piece.split("=", 1))
        last = key
        number = {"r": int, "alpha": float, "dropout": float}.get(key)
        if number is not None:
            try:
                out[key] = number(value)
            except ValueError:
                raise ValueError(f"--lora: {key}={value!r} is not {'an integer' if number is int else 'a number'}.") from None
        elif key == "targets":
            out["targets"] = [value] if value else []
        else:
            close = difflib.get_close_matches(key, LORA_KEYS, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"--lora: unknown key {key!r} ({hint}keys: {', '.join(LORA_KEYS)}).")
    if out["r"] < 1 or out["alpha"] <= 0 or not 0.0 <= out["dropout"] < 1.0:
        raise ValueError(f"--lora: need r >= 1, alpha > 0, 0 <= dropout < 1; got {out}.")
    if out["targets"] is not None and not out["targets"]:
        raise ValueError("--lora: targets= is empty.")
    return out


def apply_lora(
    model: nn.Module,
    r: int = 16,
    alpha: float = 32,
    dropout: float = 0.05,
    targets: list[str] | str | None = None,
    modules_to_save: list[str] | None = None,
):
    """
    Wrap ``model`` (an ECLIP head) in a peft ``PeftModel`` with LoRA on ``targets`` (default
    :func:`default_lora_targets`; a list of module names or suffixes, or one regex string, as peft takes them) and
    ``modules_to_save`` (default :func:`default_modules_to_save`) trained in full. Everything else is frozen.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=default_lora_targets(model) if targets is None else targets,
        modules_to_save=default_modules_to_save(model) if modules_to_save is None else modules_to_save,
        bias="none",
    )
    return get_peft_model(model, config)


def save_adapter(peft_model, directory: str, processor=None, card=None) -> None:
    """
    Save the adapter (LoRA + ``modules_to_save`` weights, ``adapter_config.json``) plus the head's config (labels,
    modality: ``config.json``), given one the processor, and a model card (``card``, a huggingface_hub ``ModelCard``;
    default: the card of ``eclip.model_cards.finetune_card`` without results) in place of peft's blank template. The
    backbone is not written: ``adapter_config.json`` names it, by absolute path when it is a local folder, so the
    adapter loads from any working directory (a Hub push names the base's repo id instead, see ``eclip.training.hub``).
    The folder is written atomically (it becomes exactly the adapter: nothing of what it held before is kept, so no
    stale ``merged/`` or README survives) and is readable under the user's umask.
    """
    from modeling_eclip import atomic_directory

    head = peft_model.get_base_model()
    for adapter_config in peft_model.peft_config.values():
        base = adapter_config.base_model_name_or_path
        if base and os.path.isdir(base):
            adapter_config.base_model_name_or_path = os.path.abspath(base)
    with atomic_directory(directory, keep_existing=False) as staging:
        peft_model.save_pretrained(staging)
        config = head.config
        config.architectures = [type(head).__name__]
        config.save_pretrained(staging)
        if processor is not None:
            processor.save_pretrained(staging)
        if card is None:
            from eclip.model_cards.finetune_card import build_finetune_card

            base = next(iter(peft_model.peft_config.values())).base_model_name_or_path
            card = build_finetune_card(None, "adapter", config, model_name=os.path.basename(os.path.abspath(directory)),
                                       base_model=base)
        card.save(os.path.join(staging, "README.md"))


def adapter_base(directory: str, **download) -> str | None:
    """The base model an adapter folder or Hub repo names (``base_model_name_or_path``), or ``None``."""
    from peft import PeftConfig

    return PeftConfig.from_pretrained(directory, **download).base_model_name_or_path


def load_adapter(directory: str, base_model: str | None = None, is_trainable: bool = False):
    """Rebuild the head from ``base_model`` (default: the adapter's ``base_model_name_or_path``) with the config saved
    next to the adapter, then attach the adapter: ``PeftModel.from_pretrained(base, directory)``. ``directory`` is a
    folder or a Hub repo id. (``AutoModelFor*.from_pretrained(directory)`` gives the same model without peft's
    wrapper.)"""
    from peft import PeftModel
    from transformers import AutoConfig

    import modeling_eclip

    config = AutoConfig.from_pretrained(directory)
    if base_model is None:
        base_model = adapter_base(directory)
        if not base_model:
            raise ValueError(f"{directory}/adapter_config.json names no base model: pass base_model=.")
        if os.path.isabs(base_model) and not os.path.isdir(base_model):
            raise ValueError(
                f"The base model of adapter {directory}, {base_model}, is not a folder on this machine (moved, or the "
                "adapter came from elsewhere): pass base_model= (a folder or a Hub repo id)."
            )
    architecture = (config.architectures or ["EclipForProductClassification"])[0]
    head_class = getattr(modeling_eclip, architecture, None)
    if head_class is None:
        raise ValueError(f"{directory}/config.json names an unknown ECLIP head {architecture!r}.")
    # The base checkpoint has no head: the adapter restores it (modules_to_save), so the head's weights that the
    # adapter carries are not reported as newly initialised (the mechanism `from_pretrained(adapter)` uses too). One
    # it does not carry still is.
    from modeling_eclip.loading_utils import restored_by_adapter, weights_restored_by_adapter

    with restored_by_adapter(weights_restored_by_adapter(directory, {})):
        base = head_class.from_pretrained(base_model, config=config)
    return PeftModel.from_pretrained(base, directory, is_trainable=is_trainable)
