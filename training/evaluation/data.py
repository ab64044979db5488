# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""The evaluation's inputs besides the catalogue: product-matching pairs (Ditto files) and prompt templates."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from training.fashion import stratified_subset

MATCHING_DIR = "product-matching"
MATCHING_DATASETS = ("walmart-amazon", "abt-buy")
MATCHING_SPLITS = ("valid", "test")
DEFAULT_TEMPLATES = ("a photo of {}.", "a product photo of {}.", "{}")


def read_pairs(path: str) -> list[tuple[str, str, int]]:
    """A Ditto-serialised matching file: `LEFT<TAB>RIGHT<TAB>LABEL` lines."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 3 or parts[2].strip() not in ("0", "1"):
                raise ValueError(f"{path}:{number} is not 'LEFT<TAB>RIGHT<TAB>LABEL' with a 0/1 label.")
            pairs.append((parts[0], parts[1], int(parts[2])))
    return pairs


_COL = re.compile(r"COL\s+(\S+)\s+VAL\s?")


def serialized_to_text(record: str) -> str:
    """`"COL title VAL x COL brand VAL y"` -> `"x | brand: y"` (the first column bare, empty columns dropped)."""
    parts = _COL.split(record)
    if len(parts) < 3:
        return " ".join(record.split())
    fields = [(parts[i], " ".join(parts[i + 1].split())) for i in range(1, len(parts) - 1, 2)]
    fields = [(name, value) for name, value in fields if value]
    if not fields:
        return ""
    return " | ".join([fields[0][1]] + [f"{name}: {value}" for name, value in fields[1:]])


def load_matching(data_dir: str, limit: int | None, seed: int) -> dict[str, dict[str, list]]:
    out = {}
    for name in MATCHING_DATASETS:
        out[name] = {}
        for split in MATCHING_SPLITS:
            path = os.path.join(data_dir, MATCHING_DIR, name, f"{split}.txt")
            if not os.path.isfile(path):
                raise ValueError(f"Missing data file {path} (product matching, {name}, split {split!r}).")
            pairs = read_pairs(path)
            if len({p[2] for p in pairs}) < 2:
                raise ValueError(f"{path} must hold both matching (1) and non-matching (0) pairs.")
            out[name][split] = stratified_subset(pairs, limit, seed, key=lambda p: p[2])
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
           "load_matching", "read_pairs", "serialized_to_text"]
