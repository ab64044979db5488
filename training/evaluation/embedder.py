# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""Batched, cached embeddings of one model, and the model's image-text score on them."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm


def load_image(source):
    """
    A PIL image, or an image file, as RGB; a file that cannot be decoded raises `UnreadableImage` (a `ValueError`)
    naming it and why (`truncated`, `not an image`, ...).
    """
    from PIL import Image

    from eclip.training.evaluation.images import unreadable

    if isinstance(source, Image.Image):
        return source.convert("RGB")
    try:
        with Image.open(source) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise unreadable(str(source), error, hint=False) from error


def has_instance_decoder(model) -> bool:
    """Whether `model` gives instance features: an `EclipModel` built with its decoder, or an ONNX export
    (`EclipOnnxModel`, not a torch module) whose vision graph computes them."""
    if not getattr(model.config, "use_instance_decoder", False):
        return False
    if isinstance(model, torch.nn.Module):
        return getattr(model, "instance_decoder", None) is not None
    return bool(getattr(model, "use_instance_decoder", False))


def model_device_and_dtype(model) -> tuple[torch.device, torch.dtype]:
    """Where `model`'s inputs go and the floating dtype its images are fed in: its parameters' for a torch module;
    for a runtime without parameters (`EclipOnnxModel`), the `device` and `dtype` it declares."""
    if isinstance(model, torch.nn.Module):
        parameter = next(model.parameters())
        return parameter.device, parameter.dtype
    return torch.device(model.device), model.dtype


def normalize(array: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(array, axis=-1, keepdims=True)
    return array / np.clip(norm, 1e-12, None)


class Embedder:
    """
    Batched, cached embeddings of one model: texts are cached per string, images per named set (a split, the
    scenes), so every task reuses them. Everything runs under `torch.inference_mode` and is returned L2-normalised
    as float32 numpy arrays.
    """

    def __init__(self, model, processor, batch_size: int = 64, device=None, name: str = "model",
                 show_progress: bool = True, tower_features=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.model = model
        self.processor = processor
        self.batch_size = batch_size
        model_device, self.model_dtype = model_device_and_dtype(model)
        self.device = torch.device(device) if device is not None else model_device
        self.name = name
        self.show_progress = show_progress
        self.is_eclip = has_instance_decoder(model)
        self._texts: dict[str, np.ndarray] = {}
        self._images: dict[str, dict] = {}
        # A locked tower's cached hidden states (`TowerFeatures`): images then skip the locked blocks.
        self.tower_features = tower_features
        if tower_features is not None:
            if not isinstance(model, torch.nn.Module):
                raise ValueError(f"tower_features feed cached hidden states to the PyTorch model's vision tower; "
                                 f"{type(model).__name__} takes pixel values only: pass tower_features=None.")
            tower_features.check(model)
        self.embedded_images = 0  # counters, so tests can check that nothing is embedded twice
        self.embedded_texts = 0

    def _bar(self, total, desc):
        return tqdm(total=total, desc=f"[{self.name}] {desc}", disable=not self.show_progress, leave=False,
                    unit="item")

    @torch.inference_mode()
    def texts(self, texts: Sequence[str], desc: str = "texts") -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self._texts))
        if todo:
            # The processor's chunked encoding: memory holds one batch's tokens and activations, however many texts.
            chunks = self.processor.iter_batches(text=todo, batch_size=self.batch_size, return_tensors="pt",
                                                 padding=True, truncation=True)
            with self._bar(len(todo), f"embedding {desc}") as bar:
                for start, inputs in zip(range(0, len(todo), self.batch_size), chunks):
                    chunk = todo[start : start + self.batch_size]
                    inputs = {k: v.to(self.device) for k, v in inputs.items()
                              if k in ("input_ids", "attention_mask", "token_type_ids", "position_ids")}
                    features = self.model.get_text_features(**inputs).pooler_output.float()
                    features = torch.nn.functional.normalize(features, dim=-1).cpu().numpy()
                    for text, vector in zip(chunk, features):
                        self._texts[text] = vector
                    bar.update(len(chunk))
            self.embedded_texts += len(todo)
        return np.stack([self._texts[t] for t in texts]) if len(texts) else np.zeros((0, 0), np.float32)

    def class_embeddings(self, class_names: Sequence[str], templates: Sequence[str], desc: str = "prompts"):
        """One embedding per class: the mean of its normalised prompt embeddings over the templates, re-normalised."""
        prompts = [template.format(name) for name in class_names for template in templates]
        embeds = self.texts(prompts, desc=desc).reshape(len(class_names), len(templates), -1)
        return normalize(embeds.mean(axis=1))

    def _pixel_values(self, sources):
        images = [load_image(s) for s in sources]
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def forget_images(self, key: str) -> None:
        """Drop image set `key`'s cached embeddings (a caller that walks through many sets keeps one in memory)."""
        self._images.pop(key, None)

    @torch.inference_mode()
    def images(self, key: str, sources: Sequence, with_attention: bool = False) -> dict:
        """
        Embed the images of set `key` once: returns `image_embeds` (N, D) (the text-free embedding), and for ECLIP
        `instance_embeds` (N, K, D), `selection_logits` (N, K) and, with `with_attention`, `attention` (N, K, T): the
        last decoder layer's cross-attention, averaged over heads.
        """
        cached = self._images.get(key)
        if cached is not None and (cached["attention"] is not None or not with_attention or not self.is_eclip):
            return cached
        want_attention = with_attention and self.is_eclip
        image_embeds, instance_embeds, selection_logits, attention = [], [], [], []
        starts = list(range(0, len(sources), self.batch_size))
        hidden = None if self.tower_features is None else self.tower_features.hidden_states(sources, key)
        model_dtype = self.model_dtype

        def batch_inputs(start):
            if hidden is not None:
                states = torch.from_numpy(np.asarray(hidden[start : start + self.batch_size]))
                return {"image_hidden_states": states.to(self.device, model_dtype),
                        "image_hidden_states_layer": self.tower_features.layer}
            return {"pixel_values": pixel_future.result().to(self.device, model_dtype)}

        # Decode and preprocess the next batch in a thread while the model runs on this one.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool, self._bar(len(sources), f"embedding {key} images") as bar:
            submit = (lambda start: None) if hidden is not None else (
                lambda start: pool.submit(self._pixel_values, sources[start : start + self.batch_size]))
            pixel_future = submit(0) if starts else None
            for i, start in enumerate(starts):
                inputs = batch_inputs(start)
                if i + 1 < len(starts):
                    pixel_future = submit(starts[i + 1])
                rows = next(iter(v for v in inputs.values() if torch.is_tensor(v))).shape[0]
                if self.is_eclip:
                    out = self.model.get_instance_features(**inputs, output_attentions=want_attention)
                    image_embeds.append(out.image_embeds.float().cpu())
                    instance_embeds.append(out.instance_embeds.float().cpu())
                    selection_logits.append(out.selection_logits.float().cpu())
                    if want_attention:
                        attention.append(out.cross_attentions[-1].float().mean(dim=1).cpu())
                else:
                    pooled = self.model.get_image_features(**inputs).pooler_output.float()
                    image_embeds.append(pooled.cpu())
                bar.update(rows)
        self.embedded_images += len(sources)
        result = {
            "image_embeds": normalize(torch.cat(image_embeds).numpy()),
            "instance_embeds": torch.cat(instance_embeds).numpy() if instance_embeds else None,
            "selection_logits": torch.cat(selection_logits).numpy() if selection_logits else None,
            "attention": torch.cat(attention).numpy() if attention else None,
        }
        self._images[key] = result
        return result


def image_text_scores(images: dict, text_embeds: np.ndarray, text_free: bool = False, chunk: int = 256) -> np.ndarray:
    """
    The model's image-text score (without the logit scale), images x texts: `max_k <q_k, t>` for ECLIP, `<g, t>`
    for the baseline; `text_free=True` scores with the text-free image embedding instead.
    """
    instances = images["instance_embeds"]
    if instances is None or text_free:
        return images["image_embeds"] @ text_embeds.T
    from modeling_eclip.losses import instance_text_scores  # here: the CLI checks its inputs before importing models

    texts = torch.from_numpy(np.ascontiguousarray(text_embeds, dtype=np.float32))
    out = np.empty((instances.shape[0], text_embeds.shape[0]), dtype=np.float32)
    for start in range(0, instances.shape[0], chunk):
        block = torch.from_numpy(np.ascontiguousarray(instances[start : start + chunk], dtype=np.float32))
        out[start : start + chunk] = instance_text_scores(block, texts)[0].numpy()  # the model's own max_k
    return out


__all__ = ["Embedder", "has_instance_decoder", "image_text_scores", "load_image", "model_device_and_dtype", "normalize"]
