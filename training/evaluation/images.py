# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Undecodable images (a truncated JPEG, a text file under a photo's name, a missing file), as `eclip-finetune` and
`eclip-evaluate` meet them: with `--on-bad-image skip` (the default, as `eclip-pretrain` does) such a row is left out,
counted and named in one log line (`SkippedImages.summary`); with `--on-bad-image error` the command stops at the first
one with one line naming the file (`UnreadableImage`, printed by the command without a traceback).

`eclip-finetune` decodes lazily, in its collator (each image once per epoch, as pretraining does); `eclip-evaluate`
checks the rows it reads before any model loads (`check_rows`: its tasks index the rows, so one that drops out later
would shift every result), in parallel and at reduced JPEG scale (what fails at full size fails there too).

Imports nothing heavy (PIL only, when used).
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Sequence

ON_BAD_IMAGE = ("skip", "error")
DEFAULT_ON_BAD_IMAGE = "skip"
MAX_NAMED = 5  # files named in the summary line; the rest are counted


class UnreadableImage(ValueError):
    """
    An image that cannot be decoded, under `--on-bad-image error`: its message is one line naming the file and why.
    (One positional argument, so that a DataLoader worker's re-raise keeps the type; see `one_line`.)
    """

    def __init__(self, message: str, path: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.path, self.reason = path, reason


def add_on_bad_image_argument(parser) -> None:
    """`--on-bad-image {skip,error}`, the same on `eclip-finetune` and `eclip-evaluate`."""
    parser.add_argument(
        "--on-bad-image", choices=ON_BAD_IMAGE, default=DEFAULT_ON_BAD_IMAGE,
        help="what to do with an image that cannot be decoded (truncated, not an image, missing): skip its row, count "
             "it and name it in one log line (default, as eclip-pretrain does), or stop with one line naming the file.",
    )


def image_problem(error: BaseException) -> str:
    """A few words on why an image did not decode: `truncated`, `not an image`, `missing`, ... (for the log line)."""
    from PIL import Image, UnidentifiedImageError

    text = " ".join(str(error).split())
    if isinstance(error, FileNotFoundError):
        return "missing"
    if isinstance(error, IsADirectoryError):
        return "a folder, not an image"
    if isinstance(error, UnidentifiedImageError):
        return "not an image"
    if isinstance(error, Image.DecompressionBombError):
        return "too many pixels"
    if "truncated" in text.lower():
        return "truncated"
    if isinstance(error, ValueError) and text == "the row has no image":
        return "no image"
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def image_source(value) -> str:
    """Where an image comes from, for messages: the file of a `{"bytes", "path"}` dict or a path; else a placeholder."""
    if isinstance(value, dict):
        return str(value.get("path")) if value.get("path") else "<image bytes>"
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    return f"<{type(value).__name__}>"


def unreadable(source: str, problem: BaseException | str, split: str | None = None,
               hint: bool = True) -> UnreadableImage:
    """The `UnreadableImage` of `source`, which failed with `problem` (an exception, or `image_problem`'s words);
    `hint`: say that `--on-bad-image skip` would skip it (the commands' error mode)."""
    reason = problem if isinstance(problem, str) else image_problem(problem)
    where = f" ({split} split)" if split else ""
    tail = "; --on-bad-image skip would skip it" if hint else ""
    return UnreadableImage(f"image {source}{where} cannot be decoded ({reason}){tail}", source, reason)


def one_line(error: BaseException) -> str:
    """
    The message of an `UnreadableImage`, also when a DataLoader worker raised it (the main process re-raises it with
    the worker's traceback in the message: only its last line, the original message, is kept).
    """
    text = str(error)
    if "Traceback (most recent call last)" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        head, separator, message = last.partition(": ")
        text = message if separator and "UnreadableImage" in head else last
    return " ".join(text.split())


def check_image(path: str) -> str | None:
    """`None` when the image file decodes, else why not (`image_problem`). JPEGs decode at reduced scale (fast)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (1, 1))  # JPEG: DCT scaling, yet every byte of the scan is still read
            image.load()
            if image.width < 1 or image.height < 1:
                return "empty"
    except Exception as error:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ValueError, struct.error...)
        return image_problem(error)
    return None


class SkippedImages:
    """
    The undecodable images met so far, each file once (a file met every epoch is one file), with the splits it was
    met in; `base_dir` shortens the names in the summary (paths relative to the dataset folder).
    """

    def __init__(self, base_dir: str | None = None):
        self.base_dir = base_dir
        self.files: dict[str, dict] = {}  # path -> {"reason", "splits"}

    def add(self, path: str, reason: str, split: str | None = None) -> None:
        entry = self.files.setdefault(str(path), {"reason": reason, "splits": []})
        if split is not None and split not in entry["splits"]:
            entry["splits"].append(split)

    def __len__(self) -> int:
        return len(self.files)

    def __bool__(self) -> bool:
        return bool(self.files)

    def name(self, path: str) -> str:
        """`path` relative to `base_dir` when it lies under it, else as given."""
        if self.base_dir and not path.startswith("<") and "://" not in path:
            relative = os.path.relpath(os.path.abspath(path), os.path.abspath(self.base_dir))
            if relative != os.pardir and not relative.startswith(os.pardir + os.sep):
                return relative
        return path

    def by_split(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.files.values():
            for split in entry["splits"] or ["?"]:
                counts[split] = counts.get(split, 0) + 1
        return counts

    def summary(self, limit: int = MAX_NAMED) -> str:
        """`skipped 2 unreadable images (train 1, test 1) in DIR: a.jpg (truncated), b.txt (not an image)`."""
        count = len(self.files)
        splits = self.by_split()
        where = f" ({', '.join(f'{s} {n}' for s, n in splits.items())})" if splits and "?" not in splits else ""
        folder = f" in {self.base_dir}" if self.base_dir else ""
        named = [f"{self.name(path)} ({entry['reason']})" for path, entry in list(self.files.items())[:limit]]
        more = f", and {count - limit} more" if count > limit else ""
        noun = "image" if count == 1 else "images"
        return f"skipped {count} unreadable {noun}{where}{folder}: {', '.join(named)}{more}"

    def as_dict(self) -> dict:
        """For the results / metrics files: the count and every file (name, reason, splits)."""
        return {"count": len(self.files),
                "files": [{"file": self.name(path), "reason": entry["reason"], "splits": entry["splits"]}
                          for path, entry in self.files.items()]}


def check_rows(rows: Sequence[dict], on_bad_image: str, skipped: SkippedImages, split: str | None = None,
               path_of: Callable[[dict], str] = lambda row: row["path"], show_progress: bool = False,
               threads: int | None = None) -> list[dict]:
    """
    The rows whose image decodes (`check_image`, in a few threads: PIL decodes without the GIL). A failing row is
    recorded in `skipped` and left out (`on_bad_image="skip"`), or raises `UnreadableImage` (`"error"`).
    """
    if on_bad_image not in ON_BAD_IMAGE:
        raise ValueError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}.")
    if not rows:
        return []
    from tqdm.auto import tqdm

    paths = [path_of(row) for row in rows]
    threads = threads or min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        problems = list(tqdm(pool.map(check_image, paths), total=len(paths), unit="image", leave=False,
                             desc=f"checking {split or ''} images".replace("  ", " "), disable=not show_progress))
    kept = []
    for row, path, problem in zip(rows, paths, problems):
        if problem is None:
            kept.append(row)
            continue
        if on_bad_image == "error":
            raise unreadable(path, problem, split)
        skipped.add(path, problem, split)
    return kept


__all__ = ["DEFAULT_ON_BAD_IMAGE", "MAX_NAMED", "ON_BAD_IMAGE", "SkippedImages", "UnreadableImage",
           "add_on_bad_image_argument", "check_image", "check_rows", "image_problem", "image_source", "one_line",
           "unreadable"]
