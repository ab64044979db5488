"""Product-matching pairs in Ditto's format: the one reader and the one serializer.

``eclip-evaluate`` (zero-shot matching), ``eclip-finetune --task matching`` and ``benchmarks/matching.py`` all read the
files through :func:`read_pairs` and turn records into text with :func:`serialize`, so a product is the same text
whichever path sees it.

A file (``product-matching/<benchmark>/{train,valid,test}.txt``) holds one pair per line, ``LEFT<TAB>RIGHT<TAB>LABEL``
with a 0/1 label; a record is ``COL <name> VAL <value> COL <name> VAL <value> ...`` (a value may be empty). Every
record on one side of a file has the fields of that side's first record, in the same order.

Serializations (``SERIALIZATIONS``):

* ``"ditto"``: Ditto's own text, ``COL title VAL x COL brand VAL y COL price VAL`` (whitespace normalised, empty values
  kept as Ditto keeps them): the model sees which value is which.
* ``"compact"``: the non-empty values in column order, ``x | y``: fewer tokens, no field names.

``DEFAULT_SERIALIZATION`` is the one with the higher validation F1 in ``benchmarks/matching.py`` (README, "Product
matching").

A malformed line (not three tab-separated parts, a label other than 0/1), a malformed record (no ``COL name VAL``
structure), a record missing a field (or with an extra one) and an empty side (no value at all) raise a
``MatchingFormatError`` naming the file and line; with ``skip_invalid=True`` such lines are skipped instead and counted
(``MatchingPairs.skipped``, and a warning). Blank lines are ignored.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

MATCHING_DIR = "product-matching"
MATCHING_DATASETS = ("walmart-amazon", "abt-buy")
# Split name (as the fine-tuning datasets call it) -> file.
SPLIT_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}
SERIALIZATIONS = ("ditto", "compact")
DEFAULT_SERIALIZATION = "ditto"

_FIELD = re.compile(r"(?:^|\s)COL\s+(\S+)\s+VAL(?=\s|$)")

Record = tuple[tuple[str, str], ...]


class MatchingFormatError(ValueError):
    """A line of a matching file that is not a valid pair; the message names the file and the line."""


def parse_record(text: str) -> Record:
    """``"COL title VAL x y COL brand VAL "`` -> ``(("title", "x y"), ("brand", ""))`` (whitespace normalised).

    Raises ``ValueError`` for text that is not a sequence of ``COL <name> VAL <value>`` or holds no value at all; the
    message starts with the reason (``malformed record``, ``empty record``)."""
    matches = list(_FIELD.finditer(text))
    if not matches or text[: matches[0].start()].strip():
        raise ValueError(f"malformed record: not 'COL <name> VAL <value> ...': {text.strip()[:80]!r}")
    fields = []
    for match, following in zip(matches, matches[1:] + [None]):
        value = text[match.end() : following.start() if following is not None else len(text)]
        fields.append((match.group(1), " ".join(value.split())))
    names = [name for name, _ in fields]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"malformed record: field(s) {', '.join(repeated)} given twice")
    if not any(value for _, value in fields):
        raise ValueError(f"empty record: every field is empty ({', '.join(names)})")
    return tuple(fields)


def serialize(record: Record, serialization: str = DEFAULT_SERIALIZATION) -> str:
    """One record as the text the model reads (see the module docstring)."""
    if serialization == "ditto":
        return " ".join(f"COL {name} VAL {value}".rstrip() for name, value in record)
    if serialization == "compact":
        return " | ".join(value for _, value in record if value)
    raise ValueError(f"serialization must be one of {SERIALIZATIONS}, got {serialization!r}.")


@dataclass
class MatchingPairs:
    """The pairs of one file: serialized texts, 0/1 labels, their line numbers and what was skipped."""

    path: str
    text_a: list[str] = field(default_factory=list)
    text_b: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.labels)


def _check_fields(record: Record, expected: tuple[str, ...], side: str) -> None:
    names = tuple(name for name, _ in record)
    if names == expected:
        return
    missing = [name for name in expected if name not in names]
    extra = [name for name in names if name not in expected]
    schema = f"(this file's {side} records have {', '.join(expected)})"
    if missing:
        raise ValueError(f"missing field: the {side} record lacks {', '.join(missing)} {schema}")
    if extra:
        raise ValueError(f"unexpected field: the {side} record has {', '.join(extra)} {schema}")
    raise ValueError(f"field order: the {side} record has {', '.join(names)} {schema}")


def read_pairs(path: str, serialization: str = DEFAULT_SERIALIZATION, skip_invalid: bool = False) -> MatchingPairs:
    """Every pair of a Ditto matching file, serialized; errors (or skips, counted) as the module docstring says."""
    if serialization not in SERIALIZATIONS:
        raise ValueError(f"serialization must be one of {SERIALIZATIONS}, got {serialization!r}.")
    pairs = MatchingPairs(path)
    schema: dict[str, tuple[str, ...]] = {}
    skipped_lines: dict[str, list[int]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                parts = line.split("\t")
                if len(parts) != 3:
                    raise ValueError(f"malformed line: expected LEFT<TAB>RIGHT<TAB>LABEL, found {len(parts)} "
                                     f"tab-separated part(s) in {line[:80]!r}")
                if parts[2].strip() not in ("0", "1"):
                    raise ValueError(f"malformed line: the label must be 0 or 1, got {parts[2].strip()[:20]!r}")
                records = []
                for side, text in (("left", parts[0]), ("right", parts[1])):
                    if not text.strip():
                        raise ValueError(f"empty record: the {side} side is empty")
                    try:
                        record = parse_record(text)
                    except ValueError as error:
                        raise ValueError(f"{error} ({side} side)") from None
                    _check_fields(record, schema.setdefault(side, tuple(name for name, _ in record)), side)
                    records.append(record)
            except ValueError as error:
                if not skip_invalid:
                    raise MatchingFormatError(f"{path}:{number}: {error}") from None
                reason = str(error).split(":")[0]  # every message starts with its reason
                pairs.skipped[reason] += 1
                skipped_lines.setdefault(reason, []).append(number)
                continue
            pairs.text_a.append(serialize(records[0], serialization))
            pairs.text_b.append(serialize(records[1], serialization))
            pairs.labels.append(int(parts[2]))
            pairs.lines.append(number)
    if pairs.skipped:
        detail = "; ".join(f"{count} {reason} (line(s) {', '.join(map(str, skipped_lines[reason][:5]))}"
                           f"{', ...' if count > 5 else ''})" for reason, count in pairs.skipped.items())
        logger.warning("%s: skipped %d invalid line(s): %s", path, sum(pairs.skipped.values()), detail)
    return pairs


def matching_file(root: str, name: str, split: str) -> str:
    """``root/<name>/<file of split>``, checked to exist (``split``: train / validation / test, or valid)."""
    filename = SPLIT_FILES.get(split, f"{split}.txt")
    path = os.path.join(root, name, filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Missing data file {path} (product matching, {name}, split {split!r}).")
    return path


__all__ = [
    "DEFAULT_SERIALIZATION", "MATCHING_DATASETS", "MATCHING_DIR", "MatchingFormatError", "MatchingPairs",
    "SERIALIZATIONS", "SPLIT_FILES", "matching_file", "parse_record", "read_pairs", "serialize",
]
