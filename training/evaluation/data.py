# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""The evaluation's inputs besides the catalogue: product-matching pairs (Ditto files) and prompt templates."""

from __future__ import annotations

import os
from collections.abc import Sequence

from eclip.training.fashion import stratified_subset
from eclip.training.matching_data import DEFAULT_SERIALIZATION, MATCHING_DATASETS, MATCHING_DIR, read_pairs

MATCHING_SPLITS = ("valid", "test")
DEFAULT_TEMPLATES = ("a photo of {}.", "a product photo of {}.", "{}")


def load_matching(data_dir: str, limit: int | None, seed: int,
                  serialization: str = DEFAULT_SERIALIZATION) -> dict[str, dict[str, list]]:
    """`{benchmark: {"valid" | "test": [(text_a, text_b, label), ...]}}`, read and serialized by
    `eclip.training.matching_data` exactly as `eclip-finetune --task matching` reads them; `limit` keeps a seeded sample of
    each split, stratified by label."""
    out = {}
    for name in MATCHING_DATASETS:
        out[name] = {}
        for split in MATCHING_SPLITS:
            path = os.path.join(data_dir, MATCHING_DIR, name, f"{split}.txt")
            if not os.path.isfile(path):
                raise ValueError(f"Missing data file {path} (product matching, {name}, split {split!r}).")
            pairs = read_pairs(path, serialization)
            if len(set(pairs.labels)) < 2:
                raise ValueError(f"{path} must hold both matching (1) and non-matching (0) pairs.")
            rows = list(zip(pairs.text_a, pairs.text_b, pairs.labels))
            out[name][split] = stratified_subset(rows, limit, seed, key=lambda p: p[2])
    return out


def check_templates(templates: Sequence[str]) -> list[str]:
    templates = list(templates)
    if not templates:
        raise ValueError("At least one prompt template is needed, e.g. 'a photo of {}'.")
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"Prompt template {template!r} must contain exactly one '{{}}' for the class name.")
    return templates


__all__ = ["DEFAULT_TEMPLATES", "MATCHING_DATASETS", "MATCHING_DIR", "MATCHING_SPLITS", "check_templates",
           "load_matching"]
