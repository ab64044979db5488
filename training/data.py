# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Pretraining data: loading product datasets from a spec string, and the collator that turns raw rows into model
inputs (text, image, second view, catalog ids).

Images stay undecoded (`datasets.Image(decode=False)`) until the collator, which runs in DataLoader workers, decodes
them with PIL; a row whose image cannot be decoded is dropped from its batch and counted, never fatal.
"""

import glob
import hashlib
import io
import logging
import os
import random
import re
from collections.abc import Mapping, Sequence

import datasets
import numpy as np
import torch
from PIL import Image

from .compositor import SceneCompositor
from .synthetic import make_synthetic_products
from .text_views import check_text_views, draw_text_views

logger = logging.getLogger(__name__)

# Fashion-products (Myntra / KAGL) columns -> product-text fields of `EclipProcessor.build_product_text`.
# A string names one column; a list builds a list value (a category path) from several columns.
FASHION_FIELD_MAP = {
    "product_id": "id",
    "title": "productDisplayName",
    "category": ["masterCategory", "subCategory", "articleType"],
    "colour": "baseColour",
    "gender": "gender",
    "season": "season",
    "usage": "usage",
}

SPEC_FORMS = (
    "'synthetic', 'synthetic:N', 'imagefolder:PATH', 'csv:PATH', 'json:PATH', 'parquet:PATH' or a Hub dataset id"
)
# Columns holding an image path in CSV / JSON / Parquet files, in order of preference.
IMAGE_PATH_COLUMNS = ("image", "image_path", "image_file", "file_name", "filename", "img", "img_path")
_SPLIT_ALIASES = {"validation": ("validation", "valid", "val", "dev"), "test": ("test", "testing", "eval")}
_SPLIT_KEYWORDS = {k for keywords in datasets.data_files.SPLIT_KEYWORDS.values() for k in keywords}


def resolve_data_dir() -> str:
    """The shared data folder: `$ECLIP_DATA_DIR`, else `../shared/data` next to the repository root."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.abspath(os.environ.get("ECLIP_DATA_DIR") or os.path.join(repo, "..", "shared", "data"))


def resolve_source(data_dir: str | None, name: str) -> str:
    """`data_dir/name` when `data_dir` is the data root, else `data_dir` itself when it already is that source."""
    data_dir = data_dir or resolve_data_dir()
    candidate = os.path.join(data_dir, name)
    if os.path.exists(candidate):
        return candidate
    if os.path.basename(os.path.normpath(data_dir)) == name and os.path.exists(data_dir):
        return data_dir
    raise FileNotFoundError(f"{name!r} not found under {data_dir!r} (set --data or ECLIP_DATA_DIR to the data root).")


def limit_dataset(split: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    """At most `limit` rows of `split`, drawn with a fixed seed (all of them when `limit` is `None`)."""
    if limit is None or len(split) <= limit:
        return split
    return split.shuffle(seed=seed).select(range(limit))


def split_dataset(table: datasets.Dataset, limit: int | None, seed: int,
                  splits: Sequence[str] = ("train", "validation", "test")) -> datasets.DatasetDict:
    """The rows of each split of a table with a `split` column, each limited by [`limit_dataset`]."""
    return datasets.DatasetDict({
        name: limit_dataset(table.filter(lambda s, name=name: s == name, input_columns="split"), limit, seed)
        for name in splits
    })


# ----------------------------------------------------------------------------------------------------------------
# Loading


def _imagefolder_data_files(path: str) -> dict | None:
    """
    `{"train": "**"}` when no file or folder name under `path` carries a split keyword, else `None`.

    Without `data_files`, `datasets` infers splits by globbing ~60 keyword patterns over the whole tree (7 s for the
    9,583-photo fashion-products folder); with no keyword present the inference ends at `{"train": "**"}` anyway, so
    passing it directly gives the same dataset in one glob. Any keyword-like name falls back to the inference.
    """
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]  # ignored by `datasets` too
        for name in dirs + files:
            tokens = set(re.split(r"[-._ 0-9]+", name.lower()))
            if tokens & _SPLIT_KEYWORDS or name in ("task.toml", "instruction.md"):
                return None
    return {"train": "**"}


def _load_local(builder: str, path: str, spec: str, streaming: bool):
    """Load `imagefolder` / `csv` / `json` / `parquet` data; returns `(dataset_dict, base_dir for relative paths)`."""
    path = os.path.expanduser(path)
    if builder == "imagefolder":
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Image folder {path!r} (dataset spec {spec!r}) does not exist or is not a folder.")
        data = datasets.load_dataset(
            "imagefolder", data_dir=path, data_files=_imagefolder_data_files(path), streaming=streaming
        )
        return data, path
    if os.path.isdir(path):
        data = datasets.load_dataset(builder, data_dir=path, streaming=streaming)
        return data, path
    if os.path.isfile(path) or (any(c in path for c in "*?[") and glob.glob(path, recursive=True)):
        data = datasets.load_dataset(builder, data_files=path, streaming=streaming)
        return data, os.path.dirname(os.path.abspath(path))
    raise FileNotFoundError(f"{builder} data {path!r} (dataset spec {spec!r}) not found: no such file or folder.")


def _load_hub(spec: str, streaming: bool):
    if spec.startswith((".", "/", "~")) and not os.path.exists(os.path.expanduser(spec)):
        raise FileNotFoundError(f"Dataset path {spec!r} does not exist. Dataset specs are {SPEC_FORMS}.")
    try:
        return datasets.load_dataset(spec, streaming=streaming)
    except Exception as error:  # offline, unknown id, gated repo...: one clear message naming the spec
        raise ValueError(
            f"Could not load product dataset {spec!r} as a Hugging Face Hub dataset ({error}). "
            f"Dataset specs are {SPEC_FORMS}."
        ) from error


def _column_names(data) -> list[str]:
    if data.column_names is not None:
        return list(data.column_names)
    return list(next(iter(data.take(1)), {}))  # streaming CSV / JSON: the schema is known after one row


def _select_split(data, split: str | None, spec: str, limit: int | None):
    """
    One split of a `DatasetDict` / `IterableDatasetDict`: rows whose `split` column equals `split` when the data has
    that column (over all its HF splits), else the HF split of that name. `limit` keeps the first rows.
    """
    names = list(data)
    if not names:
        raise ValueError(f"Dataset spec {spec!r} has no data.")
    has_column = "split" in _column_names(data[names[0]])
    if split is None or has_column:
        parts = [data[name] for name in names]
        dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    else:
        candidates = [name for name in _SPLIT_ALIASES.get(split, (split,)) if name in data]
        if not candidates:
            raise ValueError(f"Dataset spec {spec!r} has no split {split!r}; its splits are {names}.")
        dataset = data[candidates[0]]

    if isinstance(dataset, datasets.IterableDataset):
        if split is not None and has_column:
            # Streaming cannot check that the value exists without reading the stream: an unknown value is empty.
            dataset = dataset.filter(lambda value: value == split, input_columns=["split"])
        return dataset if limit is None else dataset.take(limit)

    if split is not None and has_column:
        values = np.asarray(dataset["split"], dtype=object)
        indices = np.flatnonzero(values == split)
        if len(indices) == 0:
            available = sorted({str(v) for v in values})
            raise ValueError(
                f"Dataset spec {spec!r} has no rows with split == {split!r}; its split values are {available}."
            )
        if limit is not None:
            indices = indices[:limit]
        # Only the indices live in memory: the rows stay in the memory-mapped Arrow cache.
        return dataset.select(indices, keep_in_memory=True)
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


def _lazy_images(dataset, base_dir: str | None):
    """
    Give the dataset an `image` column of undecoded images (`datasets.Image(decode=False)`: `{"bytes", "path"}`).
    An `Image` column (or a bare `{"bytes", "path"}` struct) is recast; a path column (see `IMAGE_PATH_COLUMNS`) gets
    relative paths resolved against `base_dir` (the folder of the CSV / JSON / Parquet file). The column is renamed
    `image`. A streaming CSV / JSON has no schema to cast, but its rows get the same `{"bytes": None, "path": ...}`.
    """
    features = dataset.features
    typed = features is not None
    if not typed:  # streaming CSV / JSON: the column types are known only from a row
        first = next(iter(dataset.take(1)), {})
        features = {name: datasets.Value("string") if isinstance(v, str) else None for name, v in first.items()}

    def is_image(feature) -> bool:
        return isinstance(feature, datasets.Image) or (isinstance(feature, dict) and set(feature) == {"bytes", "path"})

    def is_string(feature) -> bool:
        return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")

    image_columns = [name for name, feature in features.items() if is_image(feature)]
    path_columns = [name for name in IMAGE_PATH_COLUMNS if is_string(features.get(name))]
    if image_columns:
        column = "image" if "image" in image_columns else image_columns[0]
    elif path_columns:
        column = path_columns[0]

        def as_image(batch):
            paths = [
                p if p is None or base_dir is None or os.path.isabs(p) or "://" in p else os.path.join(base_dir, p)
                for p in batch[column]
            ]
            return {column: [None if p is None else {"bytes": None, "path": p} for p in paths]}

        # Typed data gets its schema with the map (a streaming map otherwise forgets every column's type).
        new_features = datasets.Features({**features, column: datasets.Image(decode=False)}) if typed else None
        dataset = dataset.map(as_image, batched=True, features=new_features)
    else:
        raise ValueError(
            f"Found no image column: expected a datasets.Image column or a path column named one of "
            f"{list(IMAGE_PATH_COLUMNS)}; the columns are {list(features)}."
        )
    if column != "image":
        if "image" in features:
            dataset = dataset.remove_columns("image")
        dataset = dataset.rename_column(column, "image")
    return dataset.cast_column("image", datasets.Image(decode=False)) if dataset.features is not None else dataset


def load_product_dataset(
    spec: str, split: str | None = "train", streaming: bool = False, limit: int | None = None
) -> datasets.Dataset | datasets.IterableDataset:
    """
    Load one split of a product dataset, with its images left undecoded for the collator.

    Args:
        spec: where the data is:
            - `"synthetic"` / `"synthetic:N"`: the embedded procedurally drawn catalogue (N products, default 1200,
              two photos each; see `eclip.training.synthetic`), no download;
            - `"imagefolder:PATH"`: a local `imagefolder` (images + `metadata.csv`/`.jsonl`), e.g.
              `f"imagefolder:{resolve_data_dir()}/fashion-products"`;
            - `"csv:PATH"`, `"json:PATH"`, `"parquet:PATH"`: a file, folder or glob with an image column or an image
              path column (relative paths are relative to the file's folder);
            - anything else: a Hugging Face Hub dataset id (`datasets.load_dataset(spec)`).
        split: when the data has a `split` column (fashion-products, synthetic), the rows with that value; otherwise
            the HF split of that name (`"validation"` also finds `valid` / `val` / `dev`). `None` keeps every row.
        streaming: return a `datasets.IterableDataset` (for corpora that do not fit on disk).
        limit: keep only the first `limit` rows of the split (tests, smoke runs).

    Returns:
        A `Dataset` / `IterableDataset` whose `image` column is `datasets.Image(decode=False)` (`{"bytes", "path"}`
        dicts), so a corrupt file is the collator's business (skipped and counted), not a crash inside `datasets`.

    Raises:
        FileNotFoundError: the local path of the spec does not exist.
        ValueError: a malformed spec, a split that is not in the data (non-streaming), no image column, or a Hub
            dataset that cannot be loaded (the message names the spec).
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}.")
    kind, separator, argument = spec.partition(":")
    base_dir = None
    if kind == "synthetic":
        if separator and not argument.isdigit():
            raise ValueError(f"Dataset spec {spec!r}: expected 'synthetic' or 'synthetic:N' with N products.")
        products = make_synthetic_products(num_products=int(argument)) if separator else make_synthetic_products()
        data = {"train": products.to_iterable_dataset() if streaming else products}
    elif kind in ("imagefolder", "csv", "json", "parquet") and separator:
        if not argument:
            raise ValueError(f"Dataset spec {spec!r} names no path: use '{kind}:PATH'.")
        data, base_dir = _load_local(kind, argument, spec, streaming)
    else:
        data = _load_hub(spec, streaming)
    if isinstance(data, (datasets.Dataset, datasets.IterableDataset)):
        data = {"train": data}
    # Undecoded images first: a streaming `filter` decodes whole rows with the features it is given, so casting
    # afterwards would leave every image decoded (and the split filter would decode every image it skips).
    data = {name: _lazy_images(part, base_dir) for name, part in data.items()}
    return _select_split(data, split, spec, limit)


# ----------------------------------------------------------------------------------------------------------------
# Collation


def product_fields(row: Mapping, field_map: Mapping | None = None) -> dict:
    """
    The product-text fields of a row (`EclipProcessor.build_product_text`'s names): the row's columns (its image
    left out) after `field_map` (product-text field -> column, or columns for a list value such as a category path;
    `None`: `FASHION_FIELD_MAP` when the row has the fashion-products schema, a `productDisplayName` and no `title`),
    with a brand that the title already starts with dropped. Pretraining, indexing and the studies read rows through
    it, so a product's text is the same everywhere.
    """
    if field_map is None:
        field_map = FASHION_FIELD_MAP if "productDisplayName" in row and "title" not in row else {}
    fields = {name: value for name, value in row.items() if name != "image"}
    for name, source in field_map.items():
        if isinstance(source, str):
            fields[name] = row.get(source)
        else:
            fields[name] = [row.get(column) for column in source]
    brand, title = fields.get("brand"), fields.get("title")
    if isinstance(brand, str) and isinstance(title, str) and brand and title.lower().startswith(brand.lower()):
        # Catalogue titles usually start with the brand; the template's "{brand} {title}" would repeat it.
        fields["brand"] = None
    return fields


def product_id_to_int(value) -> int:
    """
    A catalog id as an int64: integers pass through; anything else (a SKU string, a UUID, an out-of-range int) is
    mapped by a stable 64-bit hash (blake2b), the same in every process and run, so duplicates still share an id.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and -(2**63) <= int(value) < 2**63:
        return int(value)
    digest = hashlib.blake2b(str(value).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def decode_image(value) -> Image.Image:
    """
    Decode one image reference to an RGB PIL image, fully loaded (so truncated files fail here, not later).

    `value` is a `datasets.Image(decode=False)` dict (`{"bytes", "path"}`), raw bytes, a file path or a PIL image.
    Transparency is composited onto white (the convention of product photos). Raises on anything undecodable.
    """
    if isinstance(value, Mapping):
        value = value.get("bytes") or value.get("path")
    if value is None:
        raise ValueError("the row has no image")
    if isinstance(value, Image.Image):
        image = value
        image.load()
    else:
        source = io.BytesIO(value) if isinstance(value, (bytes, bytearray)) else value
        with Image.open(source) as opened:
            opened.load()  # PIL decodes lazily; a truncated JPEG raises only here (LOAD_TRUNCATED_IMAGES stays off)
            image = opened.copy()
    if image.width < 1 or image.height < 1:
        raise ValueError(f"the image is empty ({image.width}x{image.height})")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        array = (array - low) * (255.0 / (high - low) if high > low else 0.0)
        return Image.fromarray(array.astype(np.uint8), mode="L").convert("RGB")
    return image.convert("RGB")


def _image_reference(value) -> str:
    """A short description of where an image comes from, for log messages."""
    if isinstance(value, Mapping):
        return str(value.get("path")) if value.get("path") else "<bytes>"
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    return f"<{type(value).__name__}>"


class PretrainingCollator:
    """
    Turn a list of raw product rows into a pretraining batch (DESIGN.md, "Pretraining objectives").

    Per row: the text is `processor.build_product_text(fields)`, with `fields` the row's columns after `field_map`;
    the main image is the row's photo, or with probability `scene_probability` a scene that pastes it among 1 to 3
    other products of the batch (the text then names one of several products); the second view is another photo of
    the same `product_id` in the batch when there is one, else a synthesised scene of the product with 1 to 3 other
    products of the batch. A batch holding a single product gets scenes of that product alone.

    Args:
        processor: an [`EclipProcessor`] (image processor, tokenizer, product-text builder).
        field_map: product-text field -> row column (a string) or columns (a list, e.g. a category path). Fields not
            in the map keep the row's own columns. `None`: the rows as they are, or [`FASHION_FIELD_MAP`] when they
            have the fashion-products schema (a `productDisplayName` and no `title` column).
        compositor: the [`SceneCompositor`] for scenes (default: `SceneCompositor()`, the `SCENE_*` sizes of compositor.py).
        scene_probability: probability that a row's main image is replaced by a scene.
        make_views: build `view_pixel_values` (the intra-product objective); off saves half the image processing.
        seed: base seed of the augmentation randomness (see below).
        max_length: truncate texts to this many tokens (default: the tokenizer's limit).
        text_views: the views of a product's fields a row's text is drawn from (`eclip.training.text_views`:
            `full`, `title`, `category`, `leaf`, `attributes`, `shuffled`), one drawn per row and call. `None`: the
            processor's template, one fixed text per product.
        text_variants: with `text_views`, also return this many independent draws per row (`text_variants_*`,
            below), for the feature cache, which stores them and cycles through them epoch by epoch.

    Returns (from `__call__(rows)`), with B the number of rows whose image decoded:
        - `input_ids`, `attention_mask` (and `token_type_ids` if the tokenizer makes them): `(B, L)` int64;
        - `pixel_values`: `(B, 3, H, W)` float32, the main images;
        - `view_pixel_values`: `(B, 3, H, W)` float32, the second views (only with `make_views=True`);
        - `product_ids`: `(B,)` int64 (see [`product_id_to_int`]; rows without an id get one from their image
          reference, so each is its own product);
        - `member_ids`: `(B, compositor.max_products)` int64, the products each main image shows: its own id first,
          then the distractors pasted into its scene, padded with its own id (scene-aware targets, see
          `EclipConfig.scene_positives`);
        - with `text_variants > 1`: `text_variants_input_ids`, `text_variants_attention_mask` (and
          `text_variants_token_type_ids`): `(B, text_variants, L')`, the row's draws, the first equal to its text;
        - `num_skipped_images`: int64 scalar, rows of this batch dropped because their image could not be decoded
          (each is logged with `logger.warning`). If every row was dropped, B is 0 and every tensor has 0 rows: the
          trainer must skip such a batch. The trainer also pops this key before the model's forward.

    Randomness: each call draws from its own `random.Random` seeded by `seed` and the content of the batch (a stable
    hash of each row's product id, image reference (or bytes) and text fields, in order). A batch's scenes therefore
    depend only on which rows it holds, not on how many batches came before, in which worker, or whether the run was
    resumed (Trainer skips the batches a checkpoint already consumed without collating them: a per-call counter would
    shift every later scene). Different batches (a new epoch reshuffles them) get different scenes. Nothing global
    is seeded or changed. With `text_views`, each row's texts come from a generator seeded by one draw of the
    batch's, so the scenes and the first text are the same whatever `text_variants` is.
    """

    def __init__(
        self,
        processor,
        field_map: Mapping | None = None,
        compositor: SceneCompositor | None = None,
        scene_probability: float = 0.5,
        make_views: bool = True,
        seed: int = 0,
        max_length: int | None = None,
        text_views: Sequence[str] | None = None,
        text_variants: int = 1,
    ):
        if not 0.0 <= scene_probability <= 1.0:
            raise ValueError(f"scene_probability must be in [0, 1], got {scene_probability}.")
        if isinstance(text_variants, bool) or not isinstance(text_variants, int) or text_variants < 1:
            raise ValueError(f"text_variants must be a positive integer, got {text_variants!r}.")
        if text_variants > 1 and text_views is None:
            raise ValueError("text_variants > 1 draws several texts per product: it needs text_views.")
        self.text_views = check_text_views(text_views) if text_views is not None else None
        self.text_variants = text_variants
        self.processor = processor
        self.field_map = dict(field_map) if field_map is not None else None
        self.compositor = compositor if compositor is not None else SceneCompositor()
        self.scene_probability = scene_probability
        self.make_views = make_views
        self.seed = seed
        self.max_length = max_length
        self._image_shape: tuple[int, ...] | None = None

    def _rng(self, rows: Sequence[Mapping]) -> random.Random:
        """A generator seeded by `seed` and the batch's content (see the class docstring)."""
        digest = hashlib.blake2b(f"eclip-collator:{self.seed}".encode("utf-8"), digest_size=16)
        for row in rows:
            image = row.get("image") if isinstance(row, Mapping) else None
            if isinstance(image, Mapping) and not image.get("path") and image.get("bytes"):
                image = hashlib.blake2b(image["bytes"], digest_size=16).hexdigest()
            elif isinstance(image, (bytes, bytearray)):
                image = hashlib.blake2b(image, digest_size=16).hexdigest()
            else:
                image = _image_reference(image)
            fields = sorted((str(key), repr(value)) for key, value in row.items() if key != "image")
            digest.update(repr((image, fields)).encode("utf-8"))
            digest.update(b"\x00")
        return random.Random(digest.hexdigest())

    def _fields(self, row: Mapping) -> dict:
        return product_fields(row, self.field_map)

    def title(self, row: Mapping) -> str | None:
        """The row's product title, read through the field map as the batches read it (`None` when it has none)."""
        title = self._fields(row).get("title")
        return title if isinstance(title, str) and title.strip() else None

    @staticmethod
    def _row_name(row: Mapping, fields: Mapping) -> str:
        for key in ("product_id", "id"):
            if fields.get(key) is not None:
                return f"{key}={fields[key]!r} ({_image_reference(row.get('image'))})"
        return _image_reference(row.get("image"))

    def _empty_batch(self, skipped: int) -> dict[str, torch.Tensor]:
        if self._image_shape is None:  # the image processor's output size, found once by processing a blank image
            probe = self.processor.image_processor(images=[Image.new("RGB", (32, 32))], return_tensors="pt")
            self._image_shape = tuple(probe["pixel_values"].shape[1:])
        batch = {
            "input_ids": torch.zeros(0, 0, dtype=torch.long),
            "attention_mask": torch.zeros(0, 0, dtype=torch.long),
        }
        if "token_type_ids" in self.processor.tokenizer.model_input_names:
            batch["token_type_ids"] = torch.zeros(0, 0, dtype=torch.long)
        if self.text_variants > 1:
            for name in [key for key in batch if key != "pixel_values"]:
                batch[f"text_variants_{name}"] = torch.zeros(0, self.text_variants, 0, dtype=torch.long)
        batch["pixel_values"] = torch.zeros(0, *self._image_shape)
        if self.make_views:
            batch["view_pixel_values"] = torch.zeros(0, *self._image_shape)
        batch["product_ids"] = torch.zeros(0, dtype=torch.long)
        batch["member_ids"] = torch.zeros(0, self.compositor.max_products, dtype=torch.long)
        batch["num_skipped_images"] = torch.tensor(skipped, dtype=torch.long)
        return batch

    def __call__(self, rows: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        rng = self._rng(rows)
        images, texts, ids, variants = [], [], [], []
        skipped = 0
        for row in rows:
            fields = self._fields(row)
            text = self.processor.build_product_text(fields)
            if not text.strip():  # nothing to match the photo with (the processor refuses a blank text)
                skipped += 1
                logger.warning("Skipping %s: it has no product text.", self._row_name(row, fields))
                continue
            try:
                image = decode_image(row.get("image"))
            # PIL raises OSError, SyntaxError, ValueError, struct.error, zlib.error, DecompressionBombError... by
            # format and kind of damage: any failure to decode one image drops that row, never the run.
            except Exception as error:
                skipped += 1
                logger.warning("Skipping %s: its image cannot be decoded (%s: %s).",
                               self._row_name(row, fields), type(error).__name__, error)
                continue
            product_id = fields.get("product_id")
            if product_id is None:  # no catalog id: the image reference (or content) makes the row its own product
                reference = _image_reference(row["image"])
                if reference.startswith("<"):  # in-memory image: its pixels are the only identity it has
                    reference = hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()
                product_id = reference
            if self.text_views is not None:
                # One draw from the batch's generator per row, whatever `text_variants` is: the texts come from a
                # generator of their own, so the scenes below (and the first text, `drawn[0]`) are the same for
                # the feature cache's `text_variants=n` as for pixel training's single text.
                text_rng = random.Random(rng.getrandbits(64))
                drawn = draw_text_views(fields, self.text_views, self.text_variants,
                                        self.processor.build_product_text, text_rng)
                text = drawn[0]
                variants.extend(drawn)
            images.append(image)
            texts.append(text)
            ids.append(product_id_to_int(product_id))
        if not images:
            return self._empty_batch(skipped)

        # One representative photo per other product: the distractors a scene may draw from.
        first_of = {}
        for index, product_id in enumerate(ids):
            first_of.setdefault(product_id, index)

        prepared = {}  # photo index -> compositor-ready photo (cut out once, pasted into several scenes)

        def ready(index: int) -> Image.Image:
            if index not in prepared:
                prepared[index] = self.compositor.prepare(images[index])
            return prepared[index]

        def scene(index: int) -> tuple[Image.Image, list[int]]:
            others = [j for pid, j in first_of.items() if pid != ids[index]]
            image, _, chosen = self.compositor.compose(ready(index), [ready(j) for j in others], rng)
            return image, [ids[others[c]] for c in chosen]

        width = self.compositor.max_products
        main, members = [], []
        for i in range(len(images)):
            shown = []
            if rng.random() < self.scene_probability:
                image, shown = scene(i)
                main.append(image)
            else:
                main.append(images[i])
            # The products this image shows: its own first, padded with it to a fixed width (gatherable).
            members.append(([ids[i]] + shown + [ids[i]] * width)[:width])
        views = []
        if self.make_views:
            for i, product_id in enumerate(ids):
                twins = [j for j, other in enumerate(ids) if other == product_id and j != i]
                views.append(images[rng.choice(twins)] if twins else scene(i)[0])

        text_kwargs = {"max_length": self.max_length} if self.max_length is not None else {}
        encoded = self.processor(
            images=main + views, text=texts, return_tensors="pt", padding=True, truncation=True, **text_kwargs
        )
        pixel_values = encoded.pop("pixel_values")
        batch = {name: encoded[name] for name in ("input_ids", "attention_mask", "token_type_ids") if name in encoded}
        batch["pixel_values"] = pixel_values[: len(images)]
        if self.make_views:
            batch["view_pixel_values"] = pixel_values[len(images):]
        if self.text_variants > 1:
            drawn = self.processor.tokenizer(variants, return_tensors="pt", padding=True, truncation=True,
                                             **text_kwargs)
            for name in ("input_ids", "attention_mask", "token_type_ids"):
                if name in batch:
                    batch[f"text_variants_{name}"] = drawn[name].view(len(images), self.text_variants, -1)
        batch["product_ids"] = torch.tensor(ids, dtype=torch.long)
        batch["member_ids"] = torch.tensor(members, dtype=torch.long)
        batch["num_skipped_images"] = torch.tensor(skipped, dtype=torch.long)
        return batch


__all__ = [
    "FASHION_FIELD_MAP",
    "IMAGE_PATH_COLUMNS",
    "PretrainingCollator",
    "decode_image",
    "limit_dataset",
    "load_product_dataset",
    "product_fields",
    "product_id_to_int",
    "resolve_data_dir",
    "resolve_source",
    "split_dataset",
]
