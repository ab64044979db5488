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

# The tasks that read attention maps (the instance decoder's cross-attention), which an ONNX export does not compute.
# Here, with the names, so that the command can drop or refuse them before torch loads; the runner checks the model.
ATTENTION_TASKS = ("instance_retrieval",)


def _names(tasks: str | Sequence[str] | None) -> list[str]:
    if tasks is None:
        tasks = "all"
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else [str(t).strip() for t in tasks]
    return [n for n in names if n]


def asks_for_all(tasks: str | Sequence[str] | None) -> bool:
    """Whether `tasks` (as `parse_tasks` takes it) says `"all"` rather than naming its tasks."""
    return "all" in _names(tasks)


def parse_tasks(tasks: str | Sequence[str] | None) -> list[str]:
    """`"all"`, a comma-separated string or a list of task names -> the task list, in canonical order."""
    names = _names(tasks)
    if not names:
        raise ValueError(f"No task given; valid tasks: all, {', '.join(TASKS)}.")
    if "all" in names:
        return list(TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        hint = suggest(unknown[0], ("all",) + TASKS)
        raise ValueError(f"Unknown task(s) {', '.join(map(repr, unknown))}; valid tasks: all, {', '.join(TASKS)}{hint}.")
    return [t for t in TASKS if t in names]


__all__ = ["ATTENTION_TASKS", "TASKS", "TASK_SPLITS", "asks_for_all", "parse_tasks"]
