# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
What every study reads and writes the same way: its results and records (JSON and text, written whole or not at
all), the command line it records, the machine it ran on, and `--reuse`'s check that a kept record was made with
the settings asked for now.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence

from eclip.training.atomic import atomic_write_json, atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")


def write_json(path: str, value) -> None:
    """`value` as indented JSON at `path` (folders made), written whole or not at all."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_json(path, value, indent=2, default=float)


def write_text(path: str, text: str) -> None:
    """`text` at `path` (folders made), written whole or not at all."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, text)


def read_json(path: str):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def command(module: str, argv: Sequence[str]) -> str:
    """The command line a result records: `python -m benchmarks.<study> ARGS` (run from the repository root)."""
    return " ".join(["python", "-m", module, *map(str, argv)])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _as_written(value):
    """`value` as `write_json` stores it and `read_json` gives it back (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(value, default=float))


def check_reuse(path: str, recorded, wanted) -> None:
    """
    `--reuse` keeps a record only if it was made with the settings asked for now (`recorded` is what the record at
    `path` holds, `wanted` this run's): otherwise it stops, naming the settings that differ, rather than mix budgets
    in one report.
    """
    recorded, wanted = _as_written(recorded), _as_written(wanted)
    if recorded == wanted:
        return
    if isinstance(recorded, dict) and isinstance(wanted, dict):
        differ = ", ".join(sorted(k for k in {*recorded, *wanted} if recorded.get(k) != wanted.get(k)))
    else:
        differ = "settings"
    raise SystemExit(f"--reuse: {path} was made with other settings ({differ}); remove it or run with the same "
                     "settings.")


__all__ = ["REPO", "RESULTS", "check_reuse", "command", "cpu_name", "read_json", "write_json", "write_text"]
