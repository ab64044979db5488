# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Locked-image-tower training (LiT, Zhai et al. 2022) and its feature cache (DESIGN.md, "Locked image tower").

With the vision tower locked (all of it, or all but its last N blocks), what the locked part computes is a pure
function of (tower weights, image, resolution). [`FeatureCache.build`] therefore runs the pretraining collator over
a fixed, seeded sequence of batches, `passes` passes over the data in the order the trainer's
[`ScheduledBatchSampler`] would draw them (same scenes, same second views, same texts), runs the locked part of the
tower once on every main image and second view, and stores its hidden states on disk (memory-mapped `.npy` files,
float16 by default) together with the tokenised texts, catalog ids and scene members. Training then reads
[`FeatureCache`] batches instead of decoding, composing and embedding pixels: the losses equal those of pixel
training with the same locked tower and the same batches (up to the storage precision), at a fraction of the cost.
After `passes` passes training cycles through the cached passes again; with `PretrainingCollator(text_views=...,
text_variants=n)` the cache stores n texts per row and each cycle reads the next (a fresh text, the same pixels).

The cache lives under `root/<key>`, the key hashing everything its content depends on: the locked weights, the
data, the processor (resolution, normalisation, tokenizer), the collator (seed, scene probability, compositor),
the batch size, the passes and the block it stops at. A build killed midway resumes from its last flushed batch.

An image that cannot be decoded is skipped by the collator as in pixel training (its row is dropped from its batch,
logged and counted in `num_skipped_images`); the build ends with one line counting the rows it skipped.
"""

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from modeling_eclip import vision_layers, vision_tower_head
from eclip.training.atomic import atomic_write_json
from eclip.training.batch_schedule import ScheduledBatchSampler

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
_FLUSH_EVERY = 8  # batches between flushes (a kill loses at most this many batches of work)


# ------------------------------------------------------------------------------------------------------ locking
def lock_vision_tower(model, unlocked_layers: int = 0) -> int:
    """
    Freeze `model.vision_model` except its last `unlocked_layers` transformer blocks (and, when any block is
    unlocked, the final norm and pooler after them). Returns the index of the first trainable block: the block
    after which the feature cache stores hidden states (`num_blocks` when the tower is locked whole).
    """
    tower = model.vision_model
    if unlocked_layers == 0:
        for parameter in tower.parameters():
            parameter.requires_grad_(False)
        try:
            return len(vision_layers(tower))
        except ValueError:
            return -1  # a tower without a block list: locked whole, but not cacheable
    layers = vision_layers(tower)
    if not 0 < unlocked_layers <= len(layers):
        raise ValueError(
            f"unlocked_image_layers must be in [0, {len(layers)}] for this {len(layers)}-block tower, got "
            f"{unlocked_layers}."
        )
    start = len(layers) - unlocked_layers
    trainable = {id(p) for layer in layers[start:] for p in layer.parameters()}
    in_layers = {id(p) for layer in layers for p in layer.parameters()}
    for name, parameter in tower.named_parameters():
        # After the blocks come only the final norm and pooler: they train with the unlocked blocks.
        after_blocks = id(parameter) not in in_layers and not name.startswith(("embeddings.", "pre_layrnorm."))
        parameter.requires_grad_(id(parameter) in trainable or after_blocks)
    return start


# ------------------------------------------------------------------------------------------------ fingerprints
def _digest(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def tower_fingerprint(vision_model, end_layer: int) -> str:
    """Hash of the weights the locked part (embeddings and blocks before `end_layer`) computes with."""
    layers = vision_layers(vision_model)
    later = {id(p) for layer in layers[end_layer:] for p in layer.parameters()}
    digest = hashlib.sha256()
    for name, tensor in sorted(vision_model.state_dict(keep_vars=True).items()):
        if id(tensor) in later:
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def file_digest(path) -> str:
    """SHA-256 of a file's bytes. Content, not path or mtime: a copied or restored data folder keeps its caches."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_fingerprint(dataset) -> str:
    """Hash of every row: its fields and its image's content (the file's bytes, or the embedded bytes)."""
    digest = hashlib.sha256()
    for row in dataset:
        image = row.get("image")
        if isinstance(image, dict):
            if image.get("bytes"):
                image = hashlib.sha256(image["bytes"]).hexdigest()
            elif image.get("path") and os.path.isfile(image["path"]):
                image = file_digest(image["path"])
        fields = sorted((k, repr(v)) for k, v in row.items() if k != "image")
        digest.update(repr((image, fields)).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------- cache
class FeatureCache(Dataset):
    """
    A built feature cache, read by memory map. As a map-style dataset, item `i` is row `i` of the cache (batch
    `i // batch_size`); [`FeatureCache.batch_sampler`] yields the cached batches in training order and
    [`FeatureCache.collate`] stacks them into the inputs of `EclipModel.pretraining_embeddings`
    (`image_hidden_states`, `view_image_hidden_states`, `image_hidden_states_layer`, texts, `product_ids`,
    `member_ids`, `num_skipped_images`).
    """

    def __init__(self, folder: str):
        self.folder = folder
        manifest_path = os.path.join(folder, MANIFEST)
        if not os.path.isfile(manifest_path):
            raise FileNotFoundError(f"{folder} is not a feature cache (no {MANIFEST}).")
        with open(manifest_path, encoding="utf-8") as handle:
            self.manifest = json.load(handle)
        if not self.is_complete:
            raise ValueError(
                f"The feature cache in {folder} is incomplete ({self.batches_done} of {self.num_batches} batches): "
                "build it again with the same settings to resume."
            )
        self._arrays: dict[str, np.ndarray] | None = None

    # ---------------------------------------------------------------------------------------------- metadata
    @property
    def batch_size(self) -> int:
        return self.manifest["batch_size"]

    @property
    def num_batches(self) -> int:
        return self.manifest["num_batches"]

    @property
    def layer(self) -> int:
        return self.manifest["layer"]

    @property
    def batches_done(self) -> int:
        return _read_progress(self.folder)

    @property
    def is_complete(self) -> bool:
        return self.batches_done >= self.num_batches

    @property
    def has_views(self) -> bool:
        return self.manifest["make_views"]

    def _array(self, name: str) -> np.ndarray:
        if self._arrays is None:  # opened lazily, so that each DataLoader worker maps the files itself
            self._arrays = {
                name: np.load(os.path.join(self.folder, f"{name}.npy"), mmap_mode="r")
                for name in self.manifest["arrays"]
            }
        return self._arrays[name]

    @property
    def text_variants(self) -> int:
        """Texts stored per row (`PretrainingCollator.text_variants`): pass `p` over the cache reads draw `p % n`."""
        return self.manifest["shapes"]["input_ids"][1] if len(self.manifest["shapes"]["input_ids"]) == 3 else 1

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __getitem__(self, index: int) -> dict:
        # Index `cycle * len(self) + row`: row `row` as the `cycle`-th pass over the cache reads it (its text is
        # then that pass's draw; see `CachedBatchSampler`).
        cycle, row = divmod(int(index), len(self))
        item = {name: self._array(name)[row] for name in self.manifest["arrays"]}
        if self.text_variants > 1:
            for key in TEXT_KEYS:
                if key in item:
                    item[key] = item[key][cycle % self.text_variants]
        return item

    def batch_rows(self, batch: int) -> list[int]:
        """Row indices of cached batch `batch` (fewer than `batch_size` if images of it were skipped)."""
        count = int(self._array("batch_rows")[batch * self.batch_size])
        start = batch * self.batch_size
        return list(range(start, start + count))

    def batch_sampler(self, num_batches: int, num_replicas: int = 1, rank: int = 0) -> "CachedBatchSampler":
        return CachedBatchSampler(self, num_batches, num_replicas, rank)

    def collate(self, rows: Sequence[dict]) -> dict:
        """Stack rows of one cached batch into model inputs, padding texts to the batch's longest, as the collator."""
        if not rows:  # every image of the batch was corrupt: an empty batch, which the trainer skips
            shapes = self.manifest["shapes"]
            empty = {key: torch.zeros(0, 0, dtype=torch.long) for key in TEXT_KEYS if key in shapes}
            empty["image_hidden_states"] = torch.zeros(0, *shapes["images"][1:])
            if self.has_views:
                empty["view_image_hidden_states"] = torch.zeros(0, *shapes["views"][1:])
            empty["image_hidden_states_layer"] = self.layer
            empty["product_ids"] = torch.zeros(0, dtype=torch.long)
            empty["member_ids"] = torch.zeros(0, shapes["member_ids"][1], dtype=torch.long)
            empty["num_skipped_images"] = torch.tensor(0, dtype=torch.long)
            return empty
        batch = {}
        length = max(int(row["attention_mask"].sum()) for row in rows)
        for key in TEXT_KEYS:
            if key in self.manifest["arrays"]:
                batch[key] = torch.from_numpy(np.stack([row[key][:length] for row in rows]).astype(np.int64))
        batch["image_hidden_states"] = torch.from_numpy(np.stack([row["images"] for row in rows]))
        if self.has_views:
            batch["view_image_hidden_states"] = torch.from_numpy(np.stack([row["views"] for row in rows]))
        batch["image_hidden_states_layer"] = self.layer
        batch["product_ids"] = torch.from_numpy(np.stack([row["product_ids"] for row in rows]))
        batch["member_ids"] = torch.from_numpy(np.stack([row["member_ids"] for row in rows]))
        batch["num_skipped_images"] = torch.tensor(sum(int(row["batch_skipped"]) for row in rows), dtype=torch.long)
        return batch

    # ------------------------------------------------------------------------------------------------- build
    @classmethod
    def build(
        cls,
        root: str,
        model,
        collator,
        dataset,
        *,
        batch_size: int,
        passes: int,
        seed: int,
        layer: int | None = None,
        dtype: str = "float16",
        max_length: int | None = None,
        tower_batch_size: int = 32,
        show_progress: bool = True,
    ) -> "FeatureCache":
        """
        Build (or resume, or reuse) the cache of `model`'s locked vision tower for `passes` passes over `dataset`
        in the order of `ScheduledBatchSampler(len(dataset), [(0, batch_size)], seed=seed)`, batched by `collator`
        (a `PretrainingCollator`). `layer`: the block after which hidden states are stored (default: all blocks,
        i.e. a tower locked whole). Returns the cache, ready to train from.
        """
        from tqdm.auto import tqdm

        tower = model.vision_model
        num_layers = len(vision_layers(tower))
        layer = num_layers if layer is None else layer
        if not 0 <= layer <= num_layers:
            raise ValueError(f"layer must be in [0, {num_layers}], got {layer}.")
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}.")
        if passes < 1 or batch_size < 1:
            raise ValueError(f"passes and batch_size must be positive, got {passes} and {batch_size}.")
        if len(dataset) < batch_size:
            raise ValueError(f"The dataset has {len(dataset)} rows, fewer than one batch of {batch_size}.")
        max_length = max_length or collator.max_length
        if max_length is None:
            raise ValueError("The feature cache stores texts padded to a fixed length: set the data's max_length.")
        if collator.max_length is not None and collator.max_length != max_length:
            raise ValueError(f"max_length {max_length} differs from the collator's {collator.max_length}.")

        per_pass = len(dataset) // batch_size
        num_batches = per_pass * passes
        processor = collator.processor
        settings = {
            "format": CACHE_FORMAT,
            "tower": tower_fingerprint(tower, layer),
            "tower_type": tower.config.model_type,
            "data": dataset_fingerprint(dataset),
            "image_processor": processor.image_processor.to_dict(),
            "tokenizer": [getattr(processor.tokenizer, "name_or_path", ""), len(processor.tokenizer)],
            "template": processor.product_text_template,
            "collator": {"seed": collator.seed, "scene_probability": collator.scene_probability,
                         "make_views": collator.make_views, "compositor": repr(collator.compositor),
                         "field_map": collator.field_map,
                         # Only when set, so that caches built before text views existed keep their key.
                         # "text_rng": each row's texts come from a generator of their own (one draw from the
                         # batch's), so text-view caches of the older, shared-generator draws are not reused.
                         **({"text_views": list(collator.text_views), "text_variants": collator.text_variants,
                             "text_rng": "per-row"}
                            if getattr(collator, "text_views", None) is not None else {})},
            "batch_size": batch_size, "passes": passes, "seed": seed, "layer": layer, "dtype": dtype,
            "max_length": max_length,
        }
        key = _digest(settings)[:20]
        folder = os.path.join(os.path.abspath(root), key)
        if os.path.isfile(os.path.join(folder, MANIFEST)) and _read_progress(folder) >= num_batches:
            logger.info("Feature cache %s is complete: reusing it.", folder)
            return cls(folder)

        sampler = ScheduledBatchSampler(len(dataset), [(0, batch_size)], num_batches=num_batches, seed=seed)
        was_training = tower.training
        tower.eval()
        try:
            # The first batch with a decodable image sets the stored shapes (a batch of corrupt images has none).
            probe = None
            for indices in sampler:
                probe = collator([dataset[i] for i in indices])
                if probe["input_ids"].shape[0]:
                    break
            if probe is None or not probe["input_ids"].shape[0]:
                raise ValueError("No image of the dataset can be decoded: there is nothing to cache.")
            with torch.inference_mode():
                sample = vision_tower_head(tower, probe["pixel_values"][:1], layer)
            tokens, hidden = sample.shape[1:]
            rows = num_batches * batch_size
            width = probe["member_ids"].shape[1]
            variants = getattr(collator, "text_variants", 1)
            text_shape = (rows, variants, max_length) if variants > 1 else (rows, max_length)
            shapes = {
                "images": ((rows, tokens, hidden), dtype),
                "input_ids": (text_shape, "int32"),
                "attention_mask": (text_shape, "int8"),
                "product_ids": ((rows,), "int64"),
                "member_ids": ((rows, width), "int64"),
                "batch_rows": ((rows,), "int32"),
                "batch_skipped": ((rows,), "int32"),
            }
            if "token_type_ids" in probe:
                shapes["token_type_ids"] = (text_shape, "int8")
            if collator.make_views:
                shapes["views"] = ((rows, tokens, hidden), dtype)
            manifest = {**settings, "key": key, "num_batches": num_batches, "batches_per_pass": per_pass,
                        "make_views": collator.make_views, "arrays": sorted(shapes),
                        "shapes": {name: list(shape) for name, (shape, _) in shapes.items()}}
            os.makedirs(folder, exist_ok=True)
            done = _read_progress(folder) if os.path.isfile(os.path.join(folder, MANIFEST)) else 0
            arrays = {}
            for name, (shape, array_dtype) in shapes.items():
                path = os.path.join(folder, f"{name}.npy")
                if done and os.path.isfile(path):
                    arrays[name] = np.load(path, mmap_mode="r+")
                else:
                    arrays[name] = np.lib.format.open_memmap(path, mode="w+", dtype=array_dtype, shape=shape)
            if not done:
                atomic_write_json(os.path.join(folder, PROGRESS), {"batches_done": 0}, indent=2)
                atomic_write_json(os.path.join(folder, MANIFEST), manifest, indent=2)
            pad_id = processor.tokenizer.pad_token_id or 0

            def embed(pixel_values: torch.Tensor) -> np.ndarray:
                pieces = []
                with torch.inference_mode():
                    for start in range(0, pixel_values.shape[0], tower_batch_size):
                        chunk = pixel_values[start : start + tower_batch_size].to(tower.dtype)
                        pieces.append(vision_tower_head(tower, chunk, layer).float().numpy())
                return np.concatenate(pieces).astype(dtype)

            bar = tqdm(total=num_batches, initial=done, desc="feature cache", unit="batch", disable=not show_progress)
            skipped = 0
            with bar:
                for index, indices in enumerate(sampler):
                    if index < done:
                        continue
                    batch = collator([dataset[i] for i in indices])
                    count = batch["input_ids"].shape[0]
                    start = index * batch_size
                    rows_slice = slice(start, start + count)
                    if count:
                        arrays["images"][rows_slice] = embed(batch["pixel_values"])
                        if collator.make_views:
                            arrays["views"][rows_slice] = embed(batch["view_pixel_values"])
                        prefix = "text_variants_" if variants > 1 else ""
                        length = min(batch[f"{prefix}input_ids"].shape[-1], max_length)
                        for key_name in TEXT_KEYS:
                            if key_name in shapes:
                                values = np.zeros((count,) + text_shape[1:], dtype=shapes[key_name][1])
                                if key_name == "input_ids":
                                    values[:] = pad_id
                                values[..., :length] = batch[f"{prefix}{key_name}"][..., :length].numpy()
                                arrays[key_name][rows_slice] = values
                        arrays["product_ids"][rows_slice] = batch["product_ids"].numpy()
                        arrays["member_ids"][rows_slice] = batch["member_ids"].numpy()
                    # Per batch, on its first row (the row that the first process reads).
                    arrays["batch_rows"][start] = count
                    arrays["batch_skipped"][start] = int(batch["num_skipped_images"])
                    skipped += int(batch["num_skipped_images"])
                    bar.update(1)
                    if (index + 1) % _FLUSH_EVERY == 0 or index + 1 == num_batches:
                        for array in arrays.values():
                            array.flush()
                        atomic_write_json(os.path.join(folder, PROGRESS), {"batches_done": index + 1}, indent=2)
            del arrays
            if skipped:
                logger.warning("Feature cache %s: skipped %d rows over %d passes whose image cannot be decoded (each "
                               "named above); pixel training skips the same rows.", folder, skipped, passes)
        finally:
            tower.train(was_training)
        return cls(folder)


def _read_progress(folder: str) -> int:
    path = os.path.join(folder, PROGRESS)
    if not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8") as handle:
        return int(json.load(handle).get("batches_done", 0))


class CachedBatchSampler(Sampler[list[int]]):
    """
    The cached batches in order, cycling through the cached passes when training runs longer; batch `b` depends
    only on `b`, so Trainer's resume (which skips the batches already consumed) stays exact. With several
    processes each takes its share of every batch (as [`ScheduledBatchSampler`] does).
    """

    def __init__(self, cache: FeatureCache, num_batches: int, num_replicas: int = 1, rank: int = 0):
        self.cache = cache
        self.num_batches = num_batches
        self.num_replicas = num_replicas
        self.rank = rank

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in range(self.num_batches):
            cycle, cached = divmod(batch, self.cache.num_batches)
            rows = [cycle * len(self.cache) + row for row in self.cache.batch_rows(cached)]
            share = -(-len(rows) // self.num_replicas)
            yield rows[self.rank * share : (self.rank + 1) * share]


__all__ = ["CachedBatchSampler", "FeatureCache", "dataset_fingerprint", "file_digest", "lock_vision_tower",
           "tower_fingerprint"]
