# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Evaluation from a locked vision tower's hidden states: models trained with the same locked tower (a CLIP baseline,
ECLIP and its ablations, several seeds) see the same hidden states for the same image, so the evaluation computes
them once per image set and each model runs only its trainable rest (see `eclip.training.feature_cache`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from modeling_eclip import vision_tower_head

from ..feature_cache import file_digest, tower_fingerprint
from .embedder import load_image


def _sources_digest(sources: Sequence) -> str:
    digest = hashlib.sha256()
    for source in sources:
        if isinstance(source, (str, os.PathLike)):
            digest.update(file_digest(source).encode())
        else:  # a PIL image (a composed scene): its pixels
            image = load_image(source)
            digest.update(repr(image.size).encode())
            digest.update(image.tobytes())
    return digest.hexdigest()


class TowerFeatures:
    """
    Hidden states of a locked vision tower after block `layer` for image sets, computed once each (keyed by the
    images' content) and kept in memory and, with `folder`, on disk (float16 `.npy`), so that other processes with
    the same tower reuse them.

    Args:
        tower: the locked vision tower (e.g. the pretrained `Dinov2Model` the models were built on).
        image_processor: the models' image processor (resolution and normalisation).
        layer: the first block the models train (the tower's block count when locked whole).
        folder: where to keep the hidden states across processes (`None`: memory only).
    """

    def __init__(self, tower, image_processor, layer: int, folder: str | None = None, batch_size: int = 32,
                 show_progress: bool = True):
        self.tower = tower.eval()
        self.image_processor = image_processor
        self.layer = layer
        self.folder = folder
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.fingerprint = tower_fingerprint(tower, layer)
        self._memory: dict[str, np.ndarray] = {}

    def check(self, model) -> None:
        """Refuse a model whose locked blocks differ from this tower's: its hidden states would not be these."""
        if tower_fingerprint(model.vision_model, self.layer) != self.fingerprint:
            raise ValueError(
                f"The model's vision tower differs from the cached tower in its first {self.layer} blocks: it was not "
                "trained with this tower locked, so it cannot be evaluated from its cached hidden states."
            )

    def hidden_states(self, sources: Sequence, desc: str = "images") -> np.ndarray:
        """`(len(sources), tokens, hidden)` hidden states of the images (file paths or PIL images)."""
        settings = repr((self.fingerprint, self.layer, sorted(self.image_processor.to_dict().items())))
        key = hashlib.sha256((settings + _sources_digest(sources)).encode()).hexdigest()[:24]
        if key in self._memory:
            return self._memory[key]
        path = os.path.join(self.folder, f"{key}.npy") if self.folder else None
        if path and os.path.isfile(path):
            self._memory[key] = np.load(path, mmap_mode="r")
            return self._memory[key]
        pieces = []
        with torch.inference_mode():
            for start in tqdm(range(0, len(sources), self.batch_size), desc=f"locked tower: {desc}",
                              disable=not self.show_progress, leave=False, unit="batch"):
                images = [load_image(s) for s in sources[start : start + self.batch_size]]
                pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
                pieces.append(vision_tower_head(self.tower, pixels, self.layer).to(torch.float16).numpy())
        array = np.concatenate(pieces)
        if path:  # written whole, then renamed: a killed process never leaves a partial file under the key
            os.makedirs(self.folder, exist_ok=True)
            temporary = f"{path}.tmp-{os.getpid()}.npy"
            np.save(temporary, array)
            os.replace(temporary, path)
        self._memory[key] = array
        return array


__all__ = ["TowerFeatures"]
