# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
FAISS indexes over unit-norm embeddings (inner product = cosine), and how close an approximate one comes to exact.

- `exact`: `IndexFlatIP`, a scan of every vector. Exact, no build time; below about 10^5 vectors a query costs well
  under a few milliseconds on a CPU, so `auto` keeps it below `DEFAULT_EXACT_BELOW` vectors.
- `hnsw`: `IndexHNSWFlat` (graph search: no training, logarithmic query time, vectors kept in full so its scores are
  exact for what it finds). `auto` picks it above the threshold: it needs no training sample and its recall is
  steady under `efSearch`.
- `ivf`: `IndexIVFFlat` (k-means cells, `nprobe` of them scanned per query), trained on a seeded sample: smaller
  build memory than HNSW, recall depends on `nprobe`.

Every build measures recall@10 against an exact scan on queries that are not vectors of the index (see
`recall_at_k`) and returns it with the parameters, for the index manifest.
"""

from __future__ import annotations

import math
import os

import numpy as np

INDEX_KINDS = ("auto", "exact", "hnsw", "ivf")
DEFAULT_EXACT_BELOW = 100_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 128
ADD_CHUNK = 65_536  # vectors added per call: memory holds one chunk's float32 copy of a memory-mapped array


def resolve_kind(kind: str, count: int, exact_below: int = DEFAULT_EXACT_BELOW) -> str:
    """`auto` -> `exact` below `exact_below` vectors, else `hnsw`; the other kinds as given."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}.")
    if kind == "auto":
        return "exact" if count < exact_below else "hnsw"
    return kind


def _chunks(vectors: np.ndarray):
    for start in range(0, len(vectors), ADD_CHUNK):
        yield np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32)


def ivf_lists(count: int) -> int:
    """IVF cells: about 4 sqrt(n) (FAISS' rule of thumb), with at least 39 training vectors per cell (below that
    k-means warns and its centroids are noise)."""
    return max(1, min(round(4 * math.sqrt(count)), count // 39))


def build_index(vectors: np.ndarray, kind: str, seed: int = 0, ef_search: int = HNSW_EF_SEARCH,
                nprobe: int | None = None):
    """
    A FAISS index of `kind` (`exact`, `hnsw` or `ivf`, already resolved) over `vectors` `(n, d)` (float32, unit norm;
    a memory-mapped array is read chunk by chunk). Returns `(index, params)`, `params` the search-time settings to
    store (`efSearch`, `nprobe`) and what they were built with.
    """
    import faiss

    count, dim = vectors.shape
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
        params = {"kind": "exact", "factory": "IndexFlatIP"}
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        params = {"kind": "hnsw", "factory": f"IndexHNSWFlat(M={HNSW_M})", "efConstruction": HNSW_EF_CONSTRUCTION,
                  "efSearch": int(ef_search)}
    elif kind == "ivf":
        lists = ivf_lists(count)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(count, size=min(count, 256 * lists), replace=False))
        index.cp.seed = seed
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))  # FAISS' Python wrapper keeps quantizer
        params = {"kind": "ivf", "factory": f"IndexIVFFlat(nlist={lists})", "nlist": lists,
                  "nprobe": int(nprobe or max(1, math.ceil(lists / 16))), "trained_on": int(len(sample))}
    else:
        raise ValueError(f"index kind must be exact, hnsw or ivf, got {kind!r}.")
    for chunk in _chunks(vectors):
        index.add(chunk)
    configure(index, params)
    return index, params


def configure(index, params: dict) -> None:
    """Apply the stored search-time settings (`efSearch`, `nprobe`) to a loaded index."""
    if params.get("kind") == "hnsw":
        index.hnsw.efSearch = int(params["efSearch"])
    elif params.get("kind") == "ivf":
        index.nprobe = int(params["nprobe"])


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-`k` `(scores, ids)` of `queries` over `vectors`, by a flat scan (chunked over the vectors)."""
    import faiss

    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    for offset, chunk in zip(range(0, len(vectors), ADD_CHUNK), _chunks(vectors)):
        flat = faiss.IndexFlatIP(chunk.shape[1])
        flat.add(chunk)
        scores, ids = flat.search(queries, min(k, len(chunk)))
        best_scores = np.concatenate([best_scores, scores], axis=1)
        best_ids = np.concatenate([best_ids, ids + offset], axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        best_ids = np.take_along_axis(best_ids, order, axis=1)
    return best_scores, best_ids


def recall_at_k(index, vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """
    Approximate recall@k of `index` against an exact scan of `vectors` (the vectors it holds): the mean share of
    each query's exact top-`k` that the index returns in its top `k`. The queries should not be vectors of the
    index (each would find itself first and inflate the figure): `eclip-index` uses other-modality embeddings of a
    seeded sample of products (their texts against the image and instance indexes, their images against the text
    index).
    """
    k = min(k, len(vectors))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    _, exact = exact_top_k(vectors, queries, k)
    _, found = index.search(queries, k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(exact.tolist(), found.tolist())]))


def save_index(index, path: str) -> None:
    """`faiss.write_index`, whole or not at all."""
    import faiss

    from eclip.training.atomic import atomic_path

    with atomic_path(path) as temporary:
        faiss.write_index(index, temporary)


def load_index(path: str, params: dict):
    """A saved index with its search-time settings applied."""
    import faiss

    if not os.path.isfile(path):
        raise ValueError(f"index file {path} is missing: build the index again with eclip-index.")
    index = faiss.read_index(path)
    configure(index, params)
    return index


__all__ = ["DEFAULT_EXACT_BELOW", "HNSW_EF_SEARCH", "INDEX_KINDS", "build_index", "configure", "exact_top_k",
           "ivf_lists", "load_index", "recall_at_k", "resolve_kind", "save_index"]
