"""Datasets of the four fine-tuning tasks, built from the real data in ``$ECLIP_DATA_DIR`` (default ``../shared/data``).

Every task keeps the data's own ``train`` / ``validation`` / ``test`` split (product matching: ``train.txt`` /
``valid.txt`` / ``test.txt``); nothing is copied anywhere.

* ``category``: ``fashion-products`` (photo and/or ``productDisplayName``) -> one label column (``articleType`` by
  default, ``masterCategory`` for a cheap run). Classes are the labels seen in ``train`` (sorted); validation / test
  rows of a class unseen in training are dropped (the count is logged).
* ``restricted``: ``fashion-products`` -> binary, ``subCategory == "Innerwear"`` (the stand-in for adult / restricted
  products) against everything else.
* ``attributes``: ``fashion-titles.csv`` -> BIO tags over the whitespace words of ``productDisplayName``, derived from
  the attribute columns by this rule (see :func:`bio_tags`):

  1. GENDER: the first case-insensitive whole-word match of the ``gender`` value (``Men`` also tags ``Men's``);
  2. BRAND: every word before the gender word; when no gender word is found, the first word; when the gender word
     is the first word, no brand;
  3. COLOUR: the first whole-word match of ``baseColour`` (``Navy Blue`` spans two words) on still-untagged words;
  4. TYPE: the first whole-word match of ``articleType`` on still-untagged words, else of its singular (a trailing
     ``s`` dropped: ``Kurtas`` -> ``Kurta``; else a trailing ``es``: ``Watches`` -> ``Watch``).

  A value that does not occur in the title is simply not tagged (``Tshirts`` never matches ``T-shirt``): the labels
  are silver, not gold, and the rule is the definition the metric measures against.
* ``matching``: ``product-matching/{walmart-amazon,abt-buy}`` text pairs, read and serialized by
  :mod:`eclip.training.matching_data` (the reader and serializer the zero-shot evaluation uses too).

``limit`` keeps at most that many rows of each split (matching: of each benchmark's split), drawn with a fixed seed,
so the class balance stays representative.

Images stay undecoded (``datasets.Image(decode=False)``: ``{"bytes", "path"}`` dicts), as pretraining keeps them: the
collator decodes them, so an undecodable file is the collator's business (skipped and counted, or one clear error;
``eclip-finetune --on-bad-image``), never a crash inside ``datasets`` that names no file.
"""

from __future__ import annotations

import logging
import re

import datasets

from eclip.training.data import limit_dataset, resolve_source, split_dataset
from eclip.training.fashion import LABEL_FIELD, RESTRICTED_FIELD, RESTRICTED_VALUE, SPLITS, TITLE_FIELD, load_products
from eclip.training.matching_data import (
    DEFAULT_SERIALIZATION,
    MATCHING_DATASETS,
    MATCHING_DIR,
    SPLIT_FILES,
    matching_file,
    read_pairs,
)

logger = logging.getLogger(__name__)

ENTITY_TYPES = ("BRAND", "GENDER", "COLOUR", "TYPE")
BIO_LABELS = ("O",) + tuple(f"{prefix}-{entity}" for entity in ENTITY_TYPES for prefix in ("B", "I"))


def _products(data_dir: str | None, modality: str, limit: int | None, seed: int) -> datasets.DatasetDict:
    """``load_products`` with the ``image`` column (when the modality has one) left undecoded."""
    splits = load_products(data_dir, modality, limit, seed)
    if "image" in splits["train"].column_names:
        splits = splits.cast_column("image", datasets.Image(decode=False))
    return splits


def category_dataset(
    data_dir: str | None, label_column: str = LABEL_FIELD, modality: str = "image", limit: int | None = None,
    seed: int = 0,
) -> tuple[datasets.DatasetDict, dict[int, str]]:
    """Products with an integer ``labels`` column; classes are those of the training split. Images undecoded."""
    splits = _products(data_dir, modality, limit, seed)
    if label_column not in splits["train"].column_names:
        raise ValueError(f"--label-column {label_column!r} is not a fashion-products column: {splits['train'].column_names}")
    classes = sorted({str(v) for v in splits["train"][label_column] if v is not None})
    label2id = {name: index for index, name in enumerate(classes)}
    out = {}
    for name, part in splits.items():
        before = len(part)
        part = part.filter(lambda v: str(v) in label2id, input_columns=label_column)
        if len(part) < before:
            logger.warning("%s: dropped %d rows whose %s is not a training class", name, before - len(part), label_column)
        out[name] = part.map(lambda v: {"labels": label2id[str(v)]}, input_columns=label_column)
    return datasets.DatasetDict(out), dict(enumerate(classes))


def restricted_dataset(
    data_dir: str | None, modality: str = "image", limit: int | None = None, seed: int = 0
) -> datasets.DatasetDict:
    """Products with a float ``labels`` column: 1.0 for Innerwear (restricted), 0.0 otherwise. Images undecoded."""
    splits = _products(data_dir, modality, limit, seed)
    return splits.map(lambda v: {"labels": float(v == RESTRICTED_VALUE)}, input_columns=RESTRICTED_FIELD)


# ------------------------------------------------------------------------------------------------ attribute tags
def _word_spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def _find_words(text: str, spans: list[tuple[int, int]], value, taken: set[int]) -> list[int] | None:
    """Word indices of the first case-insensitive whole-word match of ``value`` that touches no taken word."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    value = " ".join(str(value).split())
    if not value:
        return None
    pattern = re.compile(r"(?<!\w)" + r"\s+".join(re.escape(part) for part in value.split()) + r"(?!\w)", re.IGNORECASE)
    for match in pattern.finditer(text):
        words = [i for i, (start, end) in enumerate(spans) if start < match.end() and end > match.start()]
        if words and not taken.intersection(words):
            return words
    return None


def _singulars(value) -> list:
    """``value``, then its singulars: a trailing ``s`` dropped, then a trailing ``es`` (``Watches`` -> ``Watch``)."""
    if not isinstance(value, str):
        return [value]
    out = [value]
    if len(value) > 3 and value.endswith("s"):
        out.append(value[:-1])
    if len(value) > 4 and value.endswith("es"):
        out.append(value[:-2])
    return out


def bio_tags(title: str, gender=None, colour=None, article_type=None) -> tuple[list[str], list[str]]:
    """
    Whitespace words of ``title`` and their BIO tags (BRAND, GENDER, COLOUR, TYPE) by the rule of the module
    docstring.

    >>> bio_tags("Spykar Men Stripes Grey Sweaters", "Men", "Grey", "Sweaters")[1]
    ['B-BRAND', 'B-GENDER', 'O', 'B-COLOUR', 'B-TYPE']
    """
    title = title if isinstance(title, str) else ""
    spans = _word_spans(title)
    words = [title[start:end] for start, end in spans]
    tags = ["O"] * len(words)
    taken: set[int] = set()

    def tag(indices, entity):
        if indices:
            for position, index in enumerate(sorted(indices)):
                tags[index] = ("B-" if position == 0 else "I-") + entity
            taken.update(indices)

    gender_words = _find_words(title, spans, gender, taken)
    tag(gender_words, "GENDER")
    if gender_words is None:
        tag([0] if words else None, "BRAND")
    elif min(gender_words) > 0:
        tag(list(range(min(gender_words))), "BRAND")
    tag(_find_words(title, spans, colour, taken), "COLOUR")
    type_words = None
    for candidate in _singulars(article_type):
        type_words = _find_words(title, spans, candidate, taken)
        if type_words is not None:
            break
    tag(type_words, "TYPE")
    return words, tags


def attribute_dataset(data_dir: str | None, limit: int | None = None, seed: int = 0) -> datasets.DatasetDict:
    """``fashion-titles.csv`` by split with ``words`` and ``tags`` (BIO strings) columns; empty titles dropped."""
    source = resolve_source(data_dir, "fashion-titles.csv")
    table = datasets.load_dataset("csv", data_files=source, split="train")
    table = table.filter(lambda t: isinstance(t, str) and t.strip() != "", input_columns=TITLE_FIELD)
    splits = split_dataset(table, limit, seed, SPLITS)

    def derive(row):
        words, tags = bio_tags(row[TITLE_FIELD], row["gender"], row["baseColour"], row[LABEL_FIELD])
        return {"words": words, "tags": tags}

    return splits.map(derive)


# ------------------------------------------------------------------------------------------------ product matching
def matching_dataset(
    data_dir: str | None, names=MATCHING_DATASETS, limit: int | None = None, seed: int = 0,
    serialization: str = DEFAULT_SERIALIZATION, skip_invalid: bool = False,
) -> datasets.DatasetDict:
    """Text pairs of the named benchmarks, concatenated per split, with ``text_a``, ``text_b``, ``labels`` (0./1.)
    and ``source`` (the benchmark name, for per-benchmark metrics); read and serialized by
    :mod:`eclip.training.matching_data`, as the zero-shot evaluation reads them."""
    root = resolve_source(data_dir, MATCHING_DIR)
    out = {}
    for split in SPLIT_FILES:
        parts = []
        for name in names:
            pairs = read_pairs(matching_file(root, name, split), serialization, skip_invalid)
            rows = {"text_a": pairs.text_a, "text_b": pairs.text_b, "labels": [float(v) for v in pairs.labels],
                    "source": [name] * len(pairs)}
            parts.append(limit_dataset(datasets.Dataset.from_dict(rows), limit, seed))
        out[split] = datasets.concatenate_datasets(parts)
    return datasets.DatasetDict(out)
