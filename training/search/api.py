# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
`CatalogueIndex`: search an index folder written by `eclip-index` by text, by photo, or by scene ("shop the look").

```python
from eclip.training.search import CatalogueIndex

index = CatalogueIndex.load("fashion-index")           # the model recorded in the index, its FAISS indexes
hits = index.search_text("red running shoes", k=10, filters={"gender": "Women"}).hits
hits = index.search_image("photo.jpg", k=10).hits       # path, bytes or PIL image
scene = index.search_scene("street.jpg", k=5)           # one result list per instance the scene shows
for instance in scene.instances:
    print(instance.query, instance.box, [hit.title for hit in instance.hits])
```

Spaces (what a query is compared with):

- `image` (default): the catalogue's text-free image embeddings, one per product (the selection-weighted instance,
  `get_image_features`), the embedding ECLIP gives for indexes;
- `instance`: the catalogue's K instance embeddings per product, a product scoring its best instance
  (`max_k <q_k, query>`, the model's own image-text score for a text query);
- `text`: the catalogue's product texts (text-to-text, or photo-to-title).

Scene queries run the scene through the instance decoder once (`get_instance_features(output_attentions=True)`),
keep the instances the selection head scores well (at least `min_selection` times the uniform share 1/K, the best
`max_instances`), skip near-duplicates of a kept instance (cosine at least `duplicate_cosine`: two queries that
found the same thing), and search each kept instance in the catalogue's `image` space by default. Why not the
instance index: a catalogue photo's K instances include the queries that did *not* pick its product (the model who
wears it, the background), so matching scene instances against them finds photos with a similar background or
pose; the text-free image embedding is the product itself, one vector per product (K times less to search).
`benchmarks/search.py` measures both against the scene's global embedding. Each instance comes with its decoder
cross-attention map (last layer, mean over heads, over the patch grid) and the box around the map's strong cells,
in the scene's pixels.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .inputs import QueryError, check_text_query, parse_filters, read_query_image
from .layout import EMBEDDINGS, PRODUCTS, SPACES, read_manifest

MAX_K = 100
# A filtered query on an approximate (HNSW, IVF) index scans the allowed vectors exactly (numpy) when there are at
# most this many, and searches the index through an ID selector above: a graph searched through a very selective
# filter loses recall, and the scan gathers the allowed vectors into memory (20,000 x 512 float32: 40 MB per query),
# which bounds it. An exact index always searches through the selector: exact already, and nothing is copied.
EXACT_FILTER_BELOW = 20_000
ATTENTION_BOX_LEVEL = 0.5  # the box surrounds the grid cells at least this fraction of the map's maximum
DERIVED_COLUMNS = ("_row", "_id", "_image", "_title", "_text")


@dataclass
class Hit:
    """One product found: its position in the index (`index_row`), catalogue row and id, score (cosine), title,
    image file and fields."""

    rank: int
    score: float
    index_row: int
    catalogue_row: int
    product_id: str
    title: str
    image: str | None
    fields: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult:
    """The hits of one query, best first, and where the time went (`embed_ms`: the model, `search_ms`: FAISS)."""

    hits: list[Hit]
    timings: dict

    def to_dict(self) -> dict:
        return {"hits": [hit.to_dict() for hit in self.hits], "timings": self.timings}


@dataclass
class SceneInstance:
    """
    One instance of a scene: `query` (which of the K instance queries), `selection` (its softmax selection share),
    `heatmap` `(g, g)` (the decoder's cross-attention over the patch grid, max 1; `None` for a tower without one),
    `box` `(x0, y0, x1, y1)` in scene pixels around the map's strong cells, its hits and its `embedding`.
    """

    query: int
    selection: float
    box: tuple[float, float, float, float] | None
    heatmap: np.ndarray | None
    hits: list[Hit]
    embedding: np.ndarray | None = field(default=None, repr=False)  # (D,), unit norm: to query other spaces

    def to_dict(self) -> dict:
        heatmap = None if self.heatmap is None else np.round(self.heatmap, 4).tolist()
        return {"query": self.query, "selection": self.selection, "box": self.box, "heatmap": heatmap,
                "hits": [hit.to_dict() for hit in self.hits]}


@dataclass
class SceneResult:
    """The kept instances (best selection first), the ones left out with why, the scene (as the model saw it,
    before its processor), the timings and the scene's own text-free embedding (what an image search would use)."""

    instances: list[SceneInstance]
    skipped: list[dict]
    image: object
    timings: dict
    image_embedding: np.ndarray | None = field(default=None, repr=False)  # (D,): the whole scene's, text-free

    def to_dict(self) -> dict:
        return {"instances": [instance.to_dict() for instance in self.instances], "skipped": self.skipped,
                "image_size": list(self.image.size), "timings": self.timings}


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= MAX_K:
        raise QueryError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}.")
    return int(k)


class CatalogueIndex:
    """
    A loaded index folder: its products, embeddings (memory-mapped), FAISS indexes and (unless `load_model=False`)
    the model that embeds queries. Thread-safe: model forwards run one at a time (a lock: concurrent forwards on a
    CPU only split its cores), FAISS searches concurrently.

    Use [`CatalogueIndex.load`].
    """

    def __init__(self, folder, manifest, products, model=None, processor=None, device="cpu"):
        self.folder, self.manifest, self.products = folder, manifest, products
        self.model, self.processor, self.device = model, processor, device
        self._faiss: dict = {}
        self._vectors: dict = {}
        self._filter_cache: dict = {}
        self._model_lock = threading.Lock()
        self._faiss_lock = threading.Lock()
        self.fields = [c for c in products.columns if c not in DERIVED_COLUMNS]
        # Plain arrays per column: a hit reads its row from them (a DataFrame row lookup costs ~0.1 ms each).
        self._columns = {name: np.where(products[name].notna().to_numpy(), products[name].to_numpy(dtype=object), None)
                         for name in products.columns}

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def load(cls, folder, model=None, device: str | None = None, load_model: bool = True) -> CatalogueIndex:
        """
        Args:
            folder: an index folder written by `eclip-index`.
            model: the model folder (or Hub id) that embeds queries; default the one recorded in the index. It must
                be the model that built the index: checked by fingerprint for a local folder, by id for a Hub model.
            device: where the model runs (default cpu).
            load_model: `False` for vector-only use (`search_vectors`): no model is loaded.

        Raises:
            ValueError: the folder is missing, unfinished or not an index; the model differs from the index's.
        """
        import pandas as pd

        folder = os.fspath(folder)
        manifest = read_manifest(folder)
        products = pd.read_parquet(os.path.join(folder, PRODUCTS))
        index = cls(folder, manifest, products, device=device or "cpu")
        for space in manifest["indexes"]:  # now, so that the first query does not pay for reading them
            index.faiss_index(space)
        if load_model:
            index._load_model(model)
        return index

    def _load_model(self, model_ref) -> None:
        from transformers import AutoProcessor

        from modeling_eclip import EclipModel

        from .index import model_fingerprint

        recorded = self.manifest["model"]
        model_ref = os.fspath(model_ref) if model_ref is not None else recorded["path"]
        fingerprint = str(recorded["fingerprint"])
        if os.path.isdir(model_ref) and model_fingerprint(model_ref) != fingerprint:
            raise ValueError(f"the model at {model_ref} is not the one that built the index {self.folder} (its "
                             "weights or processor differ): pass the model the index was built with, or rebuild "
                             "the index with eclip-index.")
        if not os.path.isdir(model_ref) and not fingerprint.startswith("hub:"):
            raise ValueError(f"the index's model {model_ref!r} is not a folder any more: pass model= (--model) with "
                             "the model the index was built with.")
        if not os.path.isdir(model_ref) and model_fingerprint(model_ref) != fingerprint:
            raise ValueError(f"the index {self.folder} was built with the Hub model {fingerprint[4:]!r}, not "
                             f"{model_ref!r}: pass that model, or rebuild the index with eclip-index.")
        self.model = EclipModel.from_pretrained(model_ref).eval().to(self.device)
        self.processor = AutoProcessor.from_pretrained(model_ref)

    def __len__(self) -> int:
        return len(self.products)

    def faiss_index(self, space: str):
        """The FAISS index of `space` (loaded on first use)."""
        from .faiss_index import load_index

        self._check_space(space)
        with self._faiss_lock:
            if space not in self._faiss:
                entry = self.manifest["indexes"][space]
                self._faiss[space] = load_index(os.path.join(self.folder, entry["file"]), entry)
            return self._faiss[space]

    def _check_space(self, space: str) -> None:
        if space not in SPACES:
            raise QueryError(f"space must be one of {', '.join(SPACES)}, got {space!r}.")
        if space not in self.manifest["indexes"]:
            raise QueryError(f"this index has no {space} space (its model has no instance decoder).")

    def vectors(self, space: str) -> np.ndarray:
        """The embeddings of `space`, memory-mapped: `(N, D)`, or `(N, K, D)` for `instance`."""
        self._check_space(space)
        if space not in self._vectors:
            self._vectors[space] = np.load(os.path.join(self.folder, EMBEDDINGS, SPACES[space][0]), mmap_mode="r")
        return self._vectors[space]

    # ------------------------------------------------------------------------------------------------ filters
    def allowed_rows(self, filters) -> np.ndarray | None:
        """The index rows whose fields match `filters` (`{field: value or [values]}` or `["field=value", ...]`):
        `None` for no filter. Unknown fields and values no product has are `QueryError`s with a suggestion."""
        from eclip.training.cli import suggest

        wanted = parse_filters(filters)
        if not wanted:
            return None
        mask = np.ones(len(self.products), dtype=bool)
        for name, values in wanted.items():
            if name not in self.fields:
                raise QueryError(f"unknown filter field {name!r}{suggest(name, self.fields)}; the fields are "
                                 f"{', '.join(self.fields)}.")
            column, present = self._filter_column(name)
            for value in values:
                if value not in present:
                    raise QueryError(f"no product has {name}={value!r}{suggest(value, sorted(present))}.")
            mask &= column.isin(values).fillna(False).to_numpy(dtype=bool)
        return np.flatnonzero(mask)

    def _filter_column(self, name: str):
        """Field `name` as strings and the set of its values (computed once per field)."""
        if name not in self._filter_cache:
            column = self.products[name].astype("string")
            self._filter_cache[name] = (column, set(column.dropna().unique()))
        return self._filter_cache[name]

    def field_values(self, name: str, limit: int = 200) -> list[str]:
        """The values of field `name`, commonest first (for the page's filter hints)."""
        return [str(v) for v in self.products[name].dropna().value_counts().index[:limit]]

    # ------------------------------------------------------------------------------------------------ vectors
    def search_vectors(self, queries: np.ndarray, k: int = 10, filters=None, space: str = "image"):
        """
        The top-`k` products of each query vector: `(scores, rows)`, both `(Q, k')` with `k' <= k` (fewer when a
        filter allows fewer products), rows indexing `self.products`. In the `instance` space a product scores its
        best instance.
        """
        k = _check_k(k)
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        allowed = self.allowed_rows(filters)
        vectors = self.vectors(space)
        per_product = vectors.shape[1] if vectors.ndim == 3 else 1
        flat = vectors.reshape(-1, vectors.shape[-1])
        if allowed is not None and len(allowed) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        # Enough vectors that the best `k` distinct products are among them: each product has `per_product`.
        fetch = min(k * per_product, len(flat) if allowed is None else len(allowed) * per_product)
        approximate = self.manifest["indexes"][space]["kind"] != "exact"
        if allowed is not None and approximate and len(allowed) * per_product <= EXACT_FILTER_BELOW:
            ids = (allowed[:, None] * per_product + np.arange(per_product)).reshape(-1)
            scores = queries @ np.asarray(flat[ids], dtype=np.float32).T
            order = np.argsort(-scores, axis=1, kind="stable")[:, :fetch]
            vector_scores, vector_ids = np.take_along_axis(scores, order, axis=1), ids[order]
        else:
            index = self.faiss_index(space)
            params = None
            if allowed is not None:
                params = self._selector_params(space, allowed, per_product)
            vector_scores, vector_ids = index.search(queries, fetch, params=params)
        return _best_products(vector_scores, vector_ids, per_product, k)

    def _selector_params(self, space: str, allowed: np.ndarray, per_product: int):
        import faiss

        ids = (allowed[:, None] * per_product + np.arange(per_product)).reshape(-1).astype(np.int64)
        selector = faiss.IDSelectorBatch(ids)
        entry = self.manifest["indexes"][space]
        if entry["kind"] == "hnsw":
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=int(entry["efSearch"]))
        elif entry["kind"] == "ivf":
            params = faiss.SearchParametersIVF(sel=selector, nprobe=int(entry["nprobe"]))
        else:
            params = faiss.SearchParameters(sel=selector)
        # The selector holds a pointer to `ids` and the parameters one to the selector: keep both alive with them.
        params.referenced_objects = (selector, ids)
        return params

    def hits(self, scores: np.ndarray, rows: np.ndarray) -> list[Hit]:
        """One query's `(scores, rows)` as `Hit`s."""
        out = []
        for rank, (score, row) in enumerate(zip(scores.tolist(), rows.tolist()), start=1):
            if row < 0:
                continue
            value = {name: column[row] for name, column in self._columns.items()}
            out.append(Hit(rank=rank, score=float(score), index_row=int(row), catalogue_row=int(value["_row"]),
                           product_id=str(value["_id"]), title=str(value["_title"]),
                           image=None if _missing(value["_image"]) else str(value["_image"]),
                           fields={name: None if _missing(value[name]) else str(value[name])
                                   for name in self.fields}))
        return out

    # ---------------------------------------------------------------------------------------------- embedding
    def _require_model(self):
        if self.model is None:
            raise QueryError("this CatalogueIndex was loaded with load_model=False: it searches vectors only.")

    def embed_text(self, query: str) -> np.ndarray:
        """The unit-norm text embedding `(D,)` of a checked query."""
        import torch

        self._require_model()
        text = check_text_query(query)
        # The tokenizer under the lock too: a fast (Rust) tokenizer called from two threads at once can fail with
        # "Already borrowed" (padding and truncation settings are set on the shared object per call).
        with self._model_lock, torch.inference_mode():
            inputs = self.processor(text=[text], return_tensors="pt", padding=True, truncation=True)
            inputs = {k: v.to(self.device) for k, v in inputs.items()
                      if k in ("input_ids", "attention_mask", "token_type_ids", "position_ids")}
            features = self.model.get_text_features(**inputs).pooler_output.float()
        return torch.nn.functional.normalize(features, dim=-1)[0].cpu().numpy()

    def _pixel_values(self, image):
        import torch

        dtype = next(self.model.parameters()).dtype
        return self.processor(images=image, return_tensors="pt")["pixel_values"].to(self.device, dtype), torch

    def embed_image(self, image, name: str | None = None) -> np.ndarray:
        """The unit-norm text-free image embedding `(D,)` of a query image (path, bytes or PIL image)."""
        self._require_model()
        picture = read_query_image(image, name)
        pixel_values, torch = self._pixel_values(picture)
        with self._model_lock, torch.inference_mode():
            pooled = self.model.get_image_features(pixel_values=pixel_values).pooler_output.float()
        return torch.nn.functional.normalize(pooled, dim=-1)[0].cpu().numpy()

    # ---------------------------------------------------------------------------------------------- searches
    def search_text(self, query: str, k: int = 10, filters=None, space: str = "image") -> SearchResult:
        """The `k` products that best match a text query (see the module docstring for `space`)."""
        k = _check_k(k)
        self._check_space(space)
        started = time.perf_counter()
        vector = self.embed_text(query)
        embedded = time.perf_counter()
        scores, rows = self.search_vectors(vector, k, filters, space)
        searched = time.perf_counter()
        return SearchResult(self.hits(scores[0], rows[0]), _timings(started, embedded, searched))

    def search_image(self, image, k: int = 10, filters=None, space: str = "image",
                     name: str | None = None) -> SearchResult:
        """The `k` products that best match a photo (path, bytes or PIL image; `name` names it in errors)."""
        k = _check_k(k)
        self._check_space(space)
        started = time.perf_counter()
        vector = self.embed_image(image, name)
        embedded = time.perf_counter()
        scores, rows = self.search_vectors(vector, k, filters, space)
        searched = time.perf_counter()
        return SearchResult(self.hits(scores[0], rows[0]), _timings(started, embedded, searched))

    def search_scene(self, image, k: int = 10, filters=None, space: str = "image", max_instances: int = 4,
                     min_selection: float = 0.5, duplicate_cosine: float = 0.9,
                     name: str | None = None) -> SceneResult:
        """
        Shop the look: the products each instance of a scene shows.

        Args:
            image: the scene (path, bytes or PIL image).
            k: results per instance.
            filters: as in `search_text` (applied to every instance's results).
            space: the catalogue space each instance is searched in (`image` by default; see the module docstring).
            max_instances: keep at most this many instances.
            min_selection: keep an instance whose selection share (softmax over the K selection logits) is at least
                `min_selection / K` (the uniform share times this); the best instance is always kept.
            duplicate_cosine: skip an instance whose embedding has at least this cosine with a kept one.
            name: what to call the image in errors.
        """
        from eclip.training.evaluation.embedder import has_instance_decoder

        k = _check_k(k)
        self._require_model()
        self._check_space(space)
        if not has_instance_decoder(self.model):
            raise QueryError("scene search needs a model with the instance decoder; this index's model is a plain "
                             "CLIP (use an image search).")
        if not 1 <= int(max_instances) <= self.model.config.num_instance_queries:
            raise QueryError(f"max_instances must be from 1 to {self.model.config.num_instance_queries}.")
        started = time.perf_counter()
        picture = read_query_image(image, name)
        pixel_values, torch = self._pixel_values(picture)
        with self._model_lock, torch.inference_mode():
            out = self.model.get_instance_features(pixel_values=pixel_values, output_attentions=True)
        instances = out.instance_embeds[0].float().cpu().numpy()
        share = torch.softmax(out.selection_logits[0].float(), dim=-1).cpu().numpy()
        attention = out.cross_attentions[-1][0].float().mean(dim=0).cpu().numpy()  # (K, tokens)
        embedded = time.perf_counter()
        kept, skipped = self._pick_instances(instances, share, max_instances, min_selection, duplicate_cosine)
        scores, rows = self.search_vectors(instances[kept], k, filters, space) if kept else (None, None)
        searched = time.perf_counter()
        result = []
        for position, query in enumerate(kept):
            heatmap, box = attention_box(attention[query], self.processor.image_processor, picture.size)
            result.append(SceneInstance(query=int(query), selection=float(share[query]), box=box, heatmap=heatmap,
                                        hits=self.hits(scores[position], rows[position]), embedding=instances[query]))
        return SceneResult(result, skipped, picture, _timings(started, embedded, searched),
                           image_embedding=out.image_embeds[0].float().cpu().numpy())

    @staticmethod
    def _pick_instances(instances, share, max_instances, min_selection, duplicate_cosine):
        """The instances to search, best selection first, and the others with why they were left out."""
        count = len(share)
        kept, skipped = [], []
        for query in np.argsort(-share, kind="stable").tolist():
            duplicate = next((j for j in kept if float(instances[query] @ instances[j]) >= duplicate_cosine), None)
            if kept and share[query] < min_selection / count:
                reason = f"selection share {share[query]:.3f} below {min_selection / count:.3f}"
            elif duplicate is not None:
                cosine = float(instances[query] @ instances[duplicate])
                reason = f"near-duplicate of instance {duplicate} (cosine {cosine:.3f})"
            elif len(kept) >= max_instances:
                reason = f"beyond max_instances={max_instances}"
            else:
                kept.append(query)
                continue
            skipped.append({"query": int(query), "selection": float(share[query]), "reason": reason})
        return kept, skipped


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _timings(started: float, embedded: float, searched: float) -> dict:
    """`embed_ms`: the model (and the query's checks and decoding), `search_ms`: FAISS (and the filter),
    `total_ms`: everything, the results' assembly included."""
    done = time.perf_counter()
    return {"embed_ms": round(1000 * (embedded - started), 3), "search_ms": round(1000 * (searched - embedded), 3),
            "total_ms": round(1000 * (done - started), 3)}


def _best_products(vector_scores: np.ndarray, vector_ids: np.ndarray, per_product: int, k: int):
    """Per query, the best `k` distinct products of vector hits (a product scores its best vector)."""
    if per_product == 1:
        return vector_scores[:, :k], vector_ids[:, :k]
    scores = np.full((len(vector_ids), k), -np.inf, dtype=np.float32)
    rows = np.full((len(vector_ids), k), -1, dtype=np.int64)
    for q, (line_scores, line_ids) in enumerate(zip(vector_scores, vector_ids)):
        seen = []
        for score, vector in zip(line_scores.tolist(), line_ids.tolist()):  # best first: a product's first is its max
            if vector < 0:
                continue
            row = vector // per_product
            if row not in seen:
                scores[q, len(seen)] = score
                seen.append(row)
                rows[q, len(seen) - 1] = row
                if len(seen) == k:
                    break
    width = max(1, int((rows >= 0).sum(axis=1).max(initial=0)))
    return scores[:, :width], rows[:, :width]


def attention_box(attention_row: np.ndarray, image_processor, size: tuple[int, int]):
    """
    One instance's decoder cross-attention `(tokens,)` as a `(g, g)` heatmap over the patch grid (max 1) and the box
    `(x0, y0, x1, y1)` around its cells of at least `ATTENTION_BOX_LEVEL` of the maximum, in the pixels of the image
    of `size` (the processor's resize and centre crop undone). `(None, None)` for a tower without a square grid.
    """
    from eclip.training.evaluation.scenes import attention_grid, processed_to_canvas

    grid = attention_grid(np.asarray(attention_row, dtype=np.float32))
    if grid is None:
        return None, None
    grid = grid / max(float(grid.max()), 1e-12)
    left, top, sx, sy, width, height = processed_to_canvas(image_processor, *size)
    cells_y, cells_x = np.nonzero(grid >= ATTENTION_BOX_LEVEL)
    side = grid.shape[0]
    cell_w, cell_h = width / side, height / side
    box = (left + cells_x.min() * cell_w * sx, top + cells_y.min() * cell_h * sy,
           left + (cells_x.max() + 1) * cell_w * sx, top + (cells_y.max() + 1) * cell_h * sy)
    box = tuple(round(float(min(max(v, 0.0), limit)), 1) for v, limit in zip(box, (*size, *size)))
    return grid, box


def render_highlight(image, heatmap: np.ndarray | None, box, image_processor, max_side: int = 320):
    """`image` with an instance's heatmap blended in red over the region the model saw and its box drawn: what the
    search page and `eclip-search --scene --highlights DIR` show. Returns an RGB PIL image at most `max_side`."""
    from PIL import Image, ImageDraw

    from eclip.training.evaluation.scenes import processed_to_canvas

    picture = image.convert("RGB").copy()
    if heatmap is not None:
        left, top, sx, sy, width, height = processed_to_canvas(image_processor, *picture.size)
        region = (int(round(left)), int(round(top)), int(round(left + width * sx)), int(round(top + height * sy)))
        size = (max(1, region[2] - region[0]), max(1, region[3] - region[1]))
        alpha = Image.fromarray((np.clip(heatmap, 0, 1) * 160).astype(np.uint8), mode="L").resize(
            size, Image.Resampling.BILINEAR)
        red = Image.new("RGB", size, (230, 30, 30))
        picture.paste(red, region[:2], alpha)
    if box is not None:
        draw = ImageDraw.Draw(picture)
        draw.rectangle(box, outline=(20, 220, 20), width=max(2, round(max(picture.size) / 150)))
    picture.thumbnail((max_side, max_side))
    return picture


__all__ = ["CatalogueIndex", "Hit", "MAX_K", "SceneInstance", "SceneResult", "SearchResult", "attention_box",
           "render_highlight"]
