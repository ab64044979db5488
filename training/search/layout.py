# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
An index folder, as `eclip-index` writes it and `CatalogueIndex.load` reads it:

```
OUT/
  index.json              the manifest, written last: its presence means the index is complete
  products.parquet        one row per indexed product: row, product_id, image (file), text, title, every field
  embeddings/
    image.npy             (N, D) float32, the text-free image embeddings, unit norm
    text.npy              (N, D) float32, the product texts' embeddings, unit norm
    instance.npy          (N, K, D) float32, the K instance embeddings (models with the instance decoder)
    selection.npy         (N, K) float32, their selection logits
  image.faiss, text.faiss, instance.faiss    FAISS indexes over them (instance: N * K vectors, id = n * K + k)
  shards/                 the resumable embedding shards and run.json (kept: a rerun with the same settings reuses them)
```

Row `n` of every array, of `products.parquet` and of the FAISS ids is the same product. Imports nothing heavy.
"""

from __future__ import annotations

import json
import os

MANIFEST = "index.json"
PRODUCTS = "products.parquet"
EMBEDDINGS = "embeddings"
SHARDS = "shards"
FORMAT_VERSION = 1
# space -> (embedding file, FAISS file): what a search compares the query with.
SPACES = {"image": ("image.npy", "image.faiss"), "text": ("text.npy", "text.faiss"),
          "instance": ("instance.npy", "instance.faiss")}
SELECTION_FILE = "selection.npy"


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a complete index folder; a `ValueError` that says what the folder is and what to run."""
    folder = os.fspath(folder)
    if not os.path.exists(folder):
        raise ValueError(f"index folder {folder!r} does not exist: build one with `eclip-index MODEL CATALOGUE "
                         f"{folder}`.")
    if not os.path.isdir(folder):
        raise ValueError(f"index folder {folder!r} is a file, not a folder.")
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        if os.path.isdir(os.path.join(folder, SHARDS)):
            raise ValueError(f"{folder!r} holds an unfinished index (embedding shards, no {MANIFEST}): run the same "
                             "eclip-index command again to finish it.")
        raise ValueError(f"{folder!r} is not an index folder (no {MANIFEST}): build one with `eclip-index MODEL "
                         f"CATALOGUE {folder}`.")
    with open(path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {manifest.get('format_version')!r}; this eclip reads version "
                         f"{FORMAT_VERSION}: rebuild the index.")
    return manifest


__all__ = ["EMBEDDINGS", "FORMAT_VERSION", "MANIFEST", "PRODUCTS", "SELECTION_FILE", "SHARDS", "SPACES",
           "read_manifest"]
