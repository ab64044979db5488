# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Embedding a catalogue into resumable shards.

Shard `i` holds catalogue rows `[i * shard_size, (i + 1) * shard_size)`: which rows a shard holds depends only on the
catalogue and the shard size, never on how many processes ran or which one wrote it. Each shard is one `.npz` file
written whole or not at all (`eclip.training.atomic.atomic_path`), so a run killed at any point leaves complete
shards and at most a stray temporary file, and the next run embeds only the shards that are missing. `run.json`
beside them records what fixes their content (model, catalogue rows, their fields and image files, shard size); a run
with other settings refuses to mix its shards with them.

Several processes (`torchrun` / `accelerate launch`) share the work by shard number: process `r` of `w` embeds the
missing shards `i` with `i % w == r`. Nothing else is shared, so no process waits for another until the merge.

A shard's arrays, for its `n` rows whose image decoded (D the projection size, K the instance queries):

- `rows` `(n,)` int64: catalogue row numbers;
- `image_embeds` `(n, D)` float32: the text-free image embedding (`get_image_features(...).pooler_output`), unit norm;
- `text_embeds` `(n, D)` float32: the product text's embedding (`get_text_features(...).pooler_output`), unit norm
  (zeros for a product without any text);
- `instance_embeds` `(n, K, D)` float32 and `selection_logits` `(n, K)` float32: `get_instance_features`'s outputs
  (absent for a model without the instance decoder);
- `skipped_rows` `(m,)` int64 and `skipped_reasons` `(m,)` str: rows whose image did not decode, and why;
- `seconds` `()` float64: the time the shard took (decoding included).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence

import numpy as np

RUN_FILE = "run.json"
SHARD_NAME = "shard-{:05d}.npz"
_SHARD_FILE = re.compile(r"^shard-(\d{5})\.npz$")
# The arrays a shard must hold to be complete; the instance arrays come with the instance decoder.
SHARD_ARRAYS = ("rows", "image_embeds", "text_embeds", "skipped_rows", "skipped_reasons", "seconds")


def num_shards(rows: int, shard_size: int) -> int:
    return (rows + shard_size - 1) // shard_size


def shard_path(folder: str, index: int) -> str:
    return os.path.join(folder, SHARD_NAME.format(index))


def process_shards(total: int, rank: int, world_size: int) -> list[int]:
    """The shard numbers process `rank` of `world_size` is responsible for: every `world_size`-th, from `rank`."""
    return list(range(rank, total, world_size))


def written_shards(folder: str) -> set[int]:
    """The shards on disk (complete by construction: a shard file only ever appears whole)."""
    if not os.path.isdir(folder):
        return set()
    return {int(match.group(1)) for match in map(_SHARD_FILE.match, os.listdir(folder)) if match}


def remove_stray_files(folder: str) -> list[str]:
    """Remove the temporary files a killed run left (`*.tmp-PID`). Only process 0 calls it, before any other process
    starts writing, so that no live write is removed."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        if ".tmp-" in name:
            os.remove(os.path.join(folder, name))
            removed.append(name)
    return removed


def write_shard(folder: str, index: int, arrays: dict) -> str:
    """Write shard `index` whole or not at all; returns its path."""
    from eclip.training.atomic import atomic_path

    path = shard_path(folder, index)
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:  # a file object: np.savez would append ".npz" to a temporary name
            np.savez(handle, **arrays)
    return path


def read_shard(folder: str, index: int, names: Sequence[str] | None = None) -> dict:
    """Shard `index`'s arrays (only `names` when given: an `.npz` reads each array on demand); a `ValueError` naming
    the file if it is not one this module wrote."""
    path = shard_path(folder, index)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in SHARD_ARRAYS if name not in data.files]
            arrays = {name: data[name] for name in (data.files if names is None else names)}
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"shard {path} cannot be read ({error}): remove it and run again to re-embed it.") from error
    if missing:
        raise ValueError(f"shard {path} lacks {', '.join(missing)}: remove it and run again to re-embed it.")
    return arrays


class ShardEmbedder:
    """
    Embeds catalogue rows with one model: images through `get_instance_features` (one vision pass gives the
    text-free embedding, the K instances and the selection logits; `get_image_features` alone without the instance
    decoder), texts through `get_text_features`, everything under `torch.inference_mode` and unit-normalised.

    Args:
        model: an `EclipModel` (eval mode), on `device`.
        processor: its `EclipProcessor`.
        batch_size: rows per forward pass.
        device: where the inputs go (the model's device).
        workers: DataLoader processes that decode and preprocess images while the model runs (0: in this process).
        on_bad_image: `"skip"` leaves an undecodable image's row out (recorded in the shard), `"error"` stops.
    """

    def __init__(self, model, processor, batch_size: int = 32, device=None, workers: int = 0,
                 on_bad_image: str = "skip"):
        import torch

        from eclip.training.evaluation.embedder import has_instance_decoder, model_device_and_dtype

        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.model, self.processor = model, processor
        self.batch_size, self.workers, self.on_bad_image = batch_size, workers, on_bad_image
        model_device, self.dtype = model_device_and_dtype(model)
        self.device = torch.device(device) if device is not None else model_device
        self.with_instances = has_instance_decoder(model)
        self.embedded_images = 0  # counters: a resumed run must embed only the missing shards

    def _text_embeds(self, texts: list[str]):
        import torch

        out = torch.zeros(len(texts), self.model.config.projection_dim)
        present = [i for i, text in enumerate(texts) if text.strip()]
        if present:
            inputs = self.processor(text=[texts[i] for i in present], return_tensors="pt", padding=True,
                                    truncation=True)
            inputs = {k: v.to(self.device) for k, v in inputs.items()
                      if k in ("input_ids", "attention_mask", "token_type_ids", "position_ids")}
            features = self.model.get_text_features(**inputs).pooler_output.float()
            out[present] = torch.nn.functional.normalize(features, dim=-1).cpu()
        return out

    def _image_embeds(self, pixel_values) -> dict:
        import torch

        pixel_values = pixel_values.to(self.device, self.dtype)
        if not self.with_instances:
            pooled = self.model.get_image_features(pixel_values=pixel_values).pooler_output.float()
            return {"image_embeds": torch.nn.functional.normalize(pooled, dim=-1).cpu()}
        out = self.model.get_instance_features(pixel_values=pixel_values)
        return {"image_embeds": out.image_embeds.float().cpu(), "instance_embeds": out.instance_embeds.float().cpu(),
                "selection_logits": out.selection_logits.float().cpu()}

    def embed_shards(self, catalogue, folder: str, shards: Sequence[int], shard_size: int,
                     on_shard: Callable[[int, dict], None] | None = None, progress=None) -> int:
        """
        Embed `shards` of `catalogue` (shard numbers, in order), writing each to `folder` as soon as it is complete.
        `on_shard(index, arrays)` runs after each write (progress lines, tests that stop a run). Returns the number
        of images embedded.
        """
        import torch
        from torch.utils.data import DataLoader

        from eclip.training.evaluation.images import UnreadableImage

        total = len(catalogue)
        # One DataLoader over every pending shard's batches (its workers start once, not per shard); a batch never
        # crosses a shard boundary, so a shard is complete when its last batch is.
        batches = []
        for index in shards:
            start, stop = index * shard_size, min((index + 1) * shard_size, total)
            batches += [(index, b, min(b + self.batch_size, stop)) for b in range(start, stop, self.batch_size)]
        last_batch = {}
        for position, (index, _, _) in enumerate(batches):
            last_batch[index] = position
        # The workers get the processor and the catalogue only, never the model.
        loader = DataLoader(batches, batch_size=None, num_workers=self.workers,
                            collate_fn=_BatchReader(self.processor, catalogue),
                            prefetch_factor=2 if self.workers else None)
        parts: dict[str, list] = {}
        skipped: list[tuple[int, str]] = []
        started = time.perf_counter()
        embedded = 0
        with torch.inference_mode():
            for position, ((index, start, stop), batch) in enumerate(zip(batches, loader)):
                if batch["skipped"] and self.on_bad_image == "error":
                    row, reason = batch["skipped"][0]
                    raise UnreadableImage(f"catalogue row {row}: image {reason} (--on-bad-image skip would skip it)")
                skipped += batch["skipped"]
                if batch["rows"]:
                    arrays = self._image_embeds(batch["pixel_values"])
                    arrays["text_embeds"] = self._text_embeds(batch["texts"])
                    arrays["rows"] = torch.tensor(batch["rows"], dtype=torch.int64)
                    for name, value in arrays.items():
                        parts.setdefault(name, []).append(value.numpy())
                    embedded += len(batch["rows"])
                    self.embedded_images += len(batch["rows"])
                if progress is not None:
                    progress.update(stop - start)
                if position == last_batch[index]:
                    shard = self._shard_arrays(parts, skipped, time.perf_counter() - started)
                    write_shard(folder, index, shard)
                    if on_shard is not None:
                        on_shard(index, shard)
                    parts, skipped, started = {}, [], time.perf_counter()
        return embedded

    def _shard_arrays(self, parts: dict, skipped: list, seconds: float) -> dict:
        dim = self.model.config.projection_dim
        empty = {"rows": np.zeros((0,), np.int64), "image_embeds": np.zeros((0, dim), np.float32),
                 "text_embeds": np.zeros((0, dim), np.float32)}
        if self.with_instances:
            queries = self.model.config.num_instance_queries
            empty.update(instance_embeds=np.zeros((0, queries, dim), np.float32),
                         selection_logits=np.zeros((0, queries), np.float32))
        arrays = {name: np.concatenate(parts[name]) if name in parts else value for name, value in empty.items()}
        arrays["skipped_rows"] = np.asarray([row for row, _ in skipped], dtype=np.int64)
        arrays["skipped_reasons"] = np.asarray([reason for _, reason in skipped], dtype=str)
        arrays["seconds"] = np.float64(seconds)
        return arrays


def prepare_batch(processor, rows: Sequence[dict]) -> dict:
    """Decode and preprocess one batch (runs in a DataLoader worker): pixel values of the rows that decode, the others
    with the reason, and every kept row's product text."""
    from eclip.training.data import decode_image
    from eclip.training.evaluation.images import image_problem

    from .catalogue import image_reference, product_texts

    images, kept, skipped = [], [], []
    for row in rows:
        try:
            images.append(decode_image(row["image"]))
            kept.append(row)
        except Exception as error:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, struct.error...
            skipped.append((row["row"], f"{image_reference(row['image'])}: {image_problem(error)}"))
    out = {"rows": [row["row"] for row in kept], "skipped": skipped, "texts": product_texts(processor, kept)}
    if images:
        out["pixel_values"] = processor(images=images, return_tensors="pt")["pixel_values"]
    return out


class _BatchReader:
    """A DataLoader's `collate_fn` (a class, not a lambda, so that it pickles where workers are spawned): reads and
    prepares the rows of one `(shard, start, stop)` batch. It holds the processor and the catalogue only (not the
    model: a spawned worker would otherwise receive a pickled copy of its weights)."""

    def __init__(self, processor, catalogue):
        self.processor, self.catalogue = processor, catalogue

    def __call__(self, spec: tuple[int, int, int]) -> dict:
        return prepare_batch(self.processor, self.catalogue.rows(spec[1], spec[2]))


__all__ = ["RUN_FILE", "SHARD_ARRAYS", "ShardEmbedder", "num_shards", "prepare_batch",
           "process_shards", "read_shard", "remove_stray_files", "shard_path", "write_shard", "written_shards"]
