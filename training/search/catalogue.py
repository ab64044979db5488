# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
A catalogue to index: rows of `eclip.training.data.load_product_dataset` (the loader `eclip-pretrain --dataset`
uses, so a catalogue reads as a training set does), each with a product id, an image reference, its fields as
strings (for filters and display) and its product text (`EclipProcessor.build_product_text` over the fields, the text
the model was trained on).

`CATALOGUE` on the command line is a loader spec (`imagefolder:PATH`, `csv:PATH`, `json:PATH`, `parquet:PATH`) or
a plain path read by its kind: a folder is an `imagefolder` (images and a `metadata.csv` / `metadata.jsonl`, as
`$ECLIP_DATA_DIR/fashion-products`), a `.csv` / `.json` / `.jsonl` / `.parquet` file holds an image path column
(one of `eclip.training.data.IMAGE_PATH_COLUMNS`; relative paths are relative to the file's folder).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence

# Product-id columns, in order of preference; a catalogue with none of them numbers its rows.
ID_COLUMNS = ("product_id", "id", "sku", "asin", "item_id")
# Title columns (what a result shows), in order of preference; without one, the product text is shown.
TITLE_COLUMNS = ("title", "productDisplayName", "name", "product_name")
_SUFFIX_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_SPEC_KINDS = ("imagefolder", "csv", "json", "parquet")
CONTENT_CHUNK = 512  # rows read at a time by `Catalogue.content_fingerprint`


def catalogue_spec(value: str) -> str:
    """
    `CATALOGUE` as a `load_product_dataset` spec: a spec passes through; a folder becomes `imagefolder:PATH` and a
    `.csv` / `.json` / `.jsonl` / `.parquet` file `KIND:PATH`. Raises `ValueError` naming what is wrong.
    """
    kind, separator, argument = value.partition(":")
    if separator and kind in _SPEC_KINDS:
        path = argument
    else:
        kind, path = None, value
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise ValueError(f"catalogue {value!r}: no such file or folder.")
    if kind is None:
        if os.path.isdir(path):
            kind = "imagefolder"
        else:
            kind = _SUFFIX_BUILDERS.get(os.path.splitext(path)[1].lower())
            if kind is None:
                raise ValueError(f"catalogue {value!r}: expected an imagefolder (a folder with metadata.csv), a "
                                 f"{', '.join(sorted(_SUFFIX_BUILDERS))} file, or a spec such as 'csv:PATH'.")
    if kind == "imagefolder" and not os.path.isdir(path):
        raise ValueError(f"catalogue {value!r}: an imagefolder must be a folder.")
    return f"{kind}:{path}"


def _text(value) -> str | None:
    """A field value as the string filters compare and pages show (`None` for a gap)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, (list, tuple)):
        return " > ".join(str(v) for v in value if v is not None)
    return str(value)


def product_fields(row: Mapping) -> dict:
    """The product-text fields of a row, by the rule pretraining reads it with (`eclip.training.data.product_fields`),
    so an indexed product's text is the text it was trained with."""
    from eclip.training.data import product_fields as fields_of

    return fields_of(row)


class Catalogue:
    """
    One split of a product dataset, ready to index: `len(catalogue)` rows in a fixed order (row `i` is always the
    same product, which is what makes shards resumable), read slice by slice (`rows(start, stop)`) so that memory
    holds one shard's rows however large the catalogue.

    Args:
        value: `CATALOGUE` (see [`catalogue_spec`]).
        split: keep the rows of this split (a `split` column's value, else the dataset's split); `None`: every row.
        limit: keep the first `limit` rows.
    """

    def __init__(self, value: str, split: str | None = None, limit: int | None = None):
        from eclip.training.data import load_product_dataset

        self.spec = catalogue_spec(value)
        self.split, self.limit = split, limit
        self.dataset = load_product_dataset(self.spec, split=split, limit=limit)
        columns = list(self.dataset.column_names)
        self.columns = [name for name in columns if name != "image"]
        self.id_column = next((name for name in ID_COLUMNS if name in columns), None)
        self.title_column = next((name for name in TITLE_COLUMNS if name in columns), None)
        if len(self.dataset) == 0:
            raise ValueError(f"catalogue {value!r} has no rows" + (f" in split {split!r}." if split else "."))

    def __len__(self) -> int:
        return len(self.dataset)

    def product_ids(self) -> list[str]:
        """Every row's product id as a string (the row number where the catalogue has no id column)."""
        if self.id_column is None:
            return [str(i) for i in range(len(self))]
        return [str(value) for value in self.dataset[self.id_column]]

    def fingerprint(self) -> str:
        """A digest of the spec and every row's id, in order: a resumed run must see the same rows in the same order
        for its shards to stay valid."""
        digest = hashlib.blake2b(self.spec.encode("utf-8"), digest_size=16)
        for product_id in self.product_ids():
            digest.update(product_id.encode("utf-8"))
            digest.update(b"\x00")
        return digest.hexdigest()

    def content_fingerprint(self) -> str:
        """
        A digest of what every row's embeddings are computed from, in order: its fields (every column but the image,
        by name: its product text is built from them) and its image (see [`image_fingerprint`]). A catalogue edited
        under the same product ids (a title rewritten, a photo replaced) changes it, so that a resumed run does not
        keep shards embedded from the old content beside the new titles. Reads the rows a chunk at a time and no
        image but embedded ones.
        """
        digest = hashlib.blake2b(b"eclip-catalogue-content", digest_size=16)
        for start in range(0, len(self), CONTENT_CHUNK):
            for raw in self.dataset.select(range(start, min(start + CONTENT_CHUNK, len(self)))).to_list():
                fields = sorted((str(name), repr(value)) for name, value in raw.items() if name != "image")
                digest.update(repr((image_fingerprint(raw.get("image")), fields)).encode("utf-8"))
                digest.update(b"\x00")
        return digest.hexdigest()

    def rows(self, start: int, stop: int) -> list[dict]:
        """Rows `start..stop-1` as dicts: `row` (the catalogue row number), `product_id`, `image` (the undecoded
        `{"bytes", "path"}` reference), `fields` (every column but the image, as strings) and `raw` (the columns as
        read, for the product text)."""
        table = self.dataset.select(range(start, stop)).to_list()
        out = []
        for offset, raw in enumerate(table):
            row = start + offset
            product_id = str(raw[self.id_column]) if self.id_column is not None else str(row)
            out.append({"row": row, "product_id": product_id, "image": raw.get("image"),
                        "fields": {name: _text(raw.get(name)) for name in self.columns}, "raw": raw})
        return out

    def title(self, fields: Mapping) -> str | None:
        return fields.get(self.title_column) if self.title_column else None


def product_texts(processor, rows: Sequence[Mapping]) -> list[str]:
    """Each row's product text, as the model was trained on it (`""` for a row whose fields are all empty)."""
    return [processor.build_product_text(product_fields(row["raw"])) for row in rows]


def image_reference(image) -> str | None:
    """The file of an undecoded image reference (`None` for an image given as bytes only)."""
    if isinstance(image, Mapping):
        return image.get("path")
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return None


def image_fingerprint(image) -> str:
    """What stands for an image's content without decoding it: the hash of its embedded bytes (what
    `eclip.training.data.decode_image` reads first), else its file's path, size and modification time (`missing:PATH`
    for a file that is not there, which its shard records as skipped)."""
    data = image.get("bytes") if isinstance(image, Mapping) else image
    if isinstance(data, (bytes, bytearray)) and data:
        return "bytes:" + hashlib.blake2b(data, digest_size=16).hexdigest()
    path = image_reference(image)
    if path is None:
        return "none"
    try:
        status = os.stat(path)
    except OSError:
        return f"missing:{path}"
    return f"file:{path}:{status.st_size}:{status.st_mtime_ns}"


__all__ = ["Catalogue", "ID_COLUMNS", "TITLE_COLUMNS", "catalogue_spec", "image_fingerprint", "image_reference",
           "product_fields", "product_texts"]
