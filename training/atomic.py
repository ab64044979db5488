# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Atomic file writes: a reader (or a run killed mid-write) sees the previous file or the new one, never a part of one.
Every results, report, card and cache-manifest file of the project is written through here. (Model folders are
swapped whole by `modeling_eclip.loading_utils.atomic_directory`, which the Hub-facing code needs for itself.)
"""

import contextlib
import json
import os


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8, newlines as given) to a temporary file next to `path`, flush it to disk, rename it over."""
    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_write_json(path: str | os.PathLike, value, **dumps_kwargs) -> None:
    """`atomic_write_text(path, json.dumps(value, **dumps_kwargs))`: the bytes `json.dump` would write."""
    atomic_write_text(path, json.dumps(value, **dumps_kwargs))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """
    For writers that take a file name (`np.save`, `faiss.write_index`, `pyarrow.parquet.write_table`): yields a
    temporary name next to `path` to write to; when the block ends without an error the file is flushed to disk and
    renamed over `path`, otherwise removed. Its name ends `.tmp-PID` (no reader globs for it), so a run killed
    mid-write leaves at most such a stray file, never a partial `path`.
    """
    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


__all__ = ["atomic_path", "atomic_write_json", "atomic_write_text"]
