# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""What every benchmark script reads and writes the same way: result JSON (atomically) and the machine's name."""

from __future__ import annotations

import json
import os
import platform

from eclip.training.atomic import atomic_write_json


def write_json(path: str, value) -> None:
    """`value` as indented JSON at `path` (folders made), written whole or not at all."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_json(path, value, indent=2, default=float)


def read_json(path: str):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
