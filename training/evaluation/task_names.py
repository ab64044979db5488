# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""The names of the evaluation's tasks and the splits each reads: what `eclip-evaluate` checks before torch loads."""

from __future__ import annotations

from collections.abc import Sequence

from eclip.training.cli import suggest

TASKS = ("zero_shot", "zero_shot_shopper", "retrieval", "instance_retrieval", "linear_probe", "clustering", "matching",
         "restricted")
# Which fashion-products splits each task reads (matching reads the product-matching files instead).
TASK_SPLITS = {
    "zero_shot": ("test",),
    "zero_shot_shopper": ("test",),
    "retrieval": ("test",),
    "instance_retrieval": ("test",),
    "linear_probe": ("train", "validation", "test"),
    "clustering": ("test",),
    "matching": (),
    "restricted": ("train", "validation", "test"),
}


def parse_tasks(tasks: str | Sequence[str] | None) -> list[str]:
    """`"all"`, a comma-separated string or a list of task names -> the task list, in canonical order."""
    if tasks is None:
        tasks = "all"
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else [str(t).strip() for t in tasks]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"No task given; valid tasks: all, {', '.join(TASKS)}.")
    if "all" in names:
        return list(TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        hint = suggest(unknown[0], ("all",) + TASKS)
        raise ValueError(f"Unknown task(s) {', '.join(map(repr, unknown))}; valid tasks: all, {', '.join(TASKS)}{hint}.")
    return [t for t in TASKS if t in names]


__all__ = ["TASKS", "TASK_SPLITS", "parse_tasks"]
