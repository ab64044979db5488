# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
ECLIP benchmark runner (DESIGN.md, "Evaluation").

Evaluates a saved ECLIP folder (and optionally the CLIP baseline, `use_instance_decoder=False`) on the real data in
`$ECLIP_DATA_DIR` (default `../shared/data`): every benchmark reports on the `test` split, tunes only on
`validation` and trains (linear probes) only on `train`.

    eclip-evaluate --model runs/eclip --baseline runs/clip --data ../shared/data --tasks all --output eval/
    python -m training.evaluation --model runs/eclip --tasks zero_shot,retrieval --limit 200 --output eval-quick/

Python API: `evaluate_model(model, processor, data_dir, tasks, output_dir, limit=None, ...) -> dict`.

Outputs in `--output`: `results.json`, `results.md`, `zero_shot_confusion.png`, `retrieval_examples.png`,
`instance_attention.png` (ECLIP only); with `--baseline` the baseline's plots go to `--output/baseline/` and
`results.json` / `results.md` hold both models side by side with ratios (model / baseline).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import logging
import math
import os
import platform
import re
import sys
import textwrap
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from training.atomic import atomic_write_text
from training.compositor import SCENE_CANVAS, SCENE_DISTRACTORS, SCENE_SCALE_RANGE
from training.data import resolve_data_dir

logger = logging.getLogger(__name__)

TASKS = ("zero_shot", "retrieval", "instance_retrieval", "linear_probe", "clustering", "matching", "restricted")
# Which fashion-products splits each task reads (matching reads the product-matching files instead).
TASK_SPLITS = {
    "zero_shot": ("test",),
    "retrieval": ("test",),
    "instance_retrieval": ("test",),
    "linear_probe": ("train", "validation", "test"),
    "clustering": ("test",),
    "matching": (),
    "restricted": ("train", "validation", "test"),
}
FASHION_DIR = "fashion-products"
MATCHING_DIR = "product-matching"
MATCHING_DATASETS = ("walmart-amazon", "abt-buy")
MATCHING_SPLITS = ("valid", "test")
DEFAULT_TEMPLATES = ("a photo of {}.", "a product photo of {}.", "{}")
LABEL_FIELD = "articleType"
TITLE_FIELD = "productDisplayName"
RESTRICTED_FIELD = "subCategory"
RESTRICTED_VALUE = "Innerwear"  # the stand-in for adult products (DESIGN.md)
RESTRICTED_PROMPTS = ("innerwear", "underwear", "lingerie", "a bra", "briefs")
TARGET_PRECISION = 0.95
LINEAR_PROBE_C = (0.01, 0.1, 1.0, 10.0)
PLOT_FILES = {
    "zero_shot": "zero_shot_confusion.png",
    "retrieval": "retrieval_examples.png",
    "instance_retrieval": "instance_attention.png",
}
BASELINE_SUBDIR = "baseline"
DETAILS = "details"  # per-task key for non-metric information (excluded from tables and ratios)


# ============================================================================================ inputs and checks
def parse_tasks(tasks: str | Sequence[str] | None) -> list[str]:
    """`"all"`, a comma-separated string or a list of task names -> the task list, in canonical order."""
    if tasks is None:
        tasks = "all"
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else [str(t).strip() for t in tasks]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"No task given; valid tasks: all, {', '.join(TASKS)}.")
    if "all" in names:
        return list(TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"Unknown task(s) {', '.join(map(repr, unknown))}; valid tasks: all, {', '.join(TASKS)}.")
    return [t for t in TASKS if t in names]


def read_fashion_metadata(data_dir: str) -> list[dict]:
    """Rows of `fashion-products/metadata.csv` as dicts (plus `path`, the image file), in file order."""
    root = os.path.join(data_dir, FASHION_DIR)
    metadata = os.path.join(root, "metadata.csv")
    if not os.path.isfile(metadata):
        raise ValueError(f"Missing data file {metadata} (the fashion-products imagefolder with its metadata.csv).")
    with open(metadata, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    required = {"file_name", "split", "id", LABEL_FIELD, TITLE_FIELD, RESTRICTED_FIELD}
    missing = required - set(rows[0] if rows else ())
    if missing:
        raise ValueError(f"{metadata} lacks column(s) {sorted(missing)}.")
    for row in rows:
        row["path"] = os.path.join(root, row["file_name"])
    return rows


def read_pairs(path: str) -> list[tuple[str, str, int]]:
    """A Ditto-serialised matching file: `LEFT<TAB>RIGHT<TAB>LABEL` lines."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 3 or parts[2].strip() not in ("0", "1"):
                raise ValueError(f"{path}:{number} is not 'LEFT<TAB>RIGHT<TAB>LABEL' with a 0/1 label.")
            pairs.append((parts[0], parts[1], int(parts[2])))
    return pairs


_COL = re.compile(r"COL\s+(\S+)\s+VAL\s?")


def serialized_to_text(record: str) -> str:
    """`"COL title VAL x COL brand VAL y"` -> `"x | brand: y"` (the first column bare, empty columns dropped)."""
    parts = _COL.split(record)
    if len(parts) < 3:
        return " ".join(record.split())
    fields = [(parts[i], " ".join(parts[i + 1].split())) for i in range(1, len(parts) - 1, 2)]
    fields = [(name, value) for name, value in fields if value]
    if not fields:
        return ""
    return " | ".join([fields[0][1]] + [f"{name}: {value}" for name, value in fields[1:]])


def stratified_subset(items: Sequence, n: int | None, seed: int, key: Callable) -> list:
    """
    A deterministic subset of `n` items, stratified by `key`: every group keeps at least one item (largest groups
    first when `n` is below the number of groups) and the rest is shared in proportion to group sizes (largest
    remainder). Within a group the choice is a seeded permutation; the result keeps the input order.
    """
    if n is None or n >= len(items):
        return list(items)
    if n < 1:
        raise ValueError(f"limit must be a positive integer, got {n}.")
    groups: dict = defaultdict(list)
    for index, item in enumerate(items):
        groups[key(item)].append(index)
    rng = np.random.default_rng(seed)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), str(kv[0])))
    quota = {}
    if n <= len(ordered):
        quota = {name: (1 if rank < n else 0) for rank, (name, _) in enumerate(ordered)}
    else:
        rest = n - len(ordered)
        spare = {name: len(idx) - 1 for name, idx in ordered}
        total_spare = sum(spare.values())
        shares = {name: rest * s / total_spare for name, s in spare.items()}
        quota = {name: 1 + int(math.floor(share)) for name, share in shares.items()}
        left = n - sum(quota.values())
        by_remainder = sorted(ordered, key=lambda kv: (-(shares[kv[0]] - math.floor(shares[kv[0]])), str(kv[0])))
        for name, _ in by_remainder[:left]:
            quota[name] += 1
    chosen = []
    for name, indices in ordered:
        permuted = rng.permutation(len(indices))
        chosen.extend(indices[i] for i in permuted[: quota[name]])
    return [items[i] for i in sorted(chosen)]


def load_split_rows(data_dir: str, splits: Sequence[str], limit: int | None, seed: int) -> dict[str, list[dict]]:
    """Rows of each requested split (limited deterministically, stratified by subCategory); errors before any work."""
    rows = read_fashion_metadata(data_dir)
    metadata = os.path.join(data_dir, FASHION_DIR, "metadata.csv")
    by_split = defaultdict(list)
    for row in rows:
        by_split[row["split"]].append(row)
    for split in splits:  # every split is checked before any image is looked at
        if not by_split.get(split):
            raise ValueError(f"Split {split!r} has no rows in {metadata} (splits present: {sorted(by_split)}).")
    out = {}
    for split in splits:
        split_rows = stratified_subset(by_split[split], limit, seed, key=lambda r: r[RESTRICTED_FIELD])
        missing = [r["path"] for r in split_rows if not os.path.isfile(r["path"])]
        if missing:
            raise ValueError(f"{len(missing)} image file(s) of split {split!r} are missing, e.g. {missing[0]}.")
        out[split] = split_rows
    return out


def load_matching(data_dir: str, limit: int | None, seed: int) -> dict[str, dict[str, list]]:
    out = {}
    for name in MATCHING_DATASETS:
        out[name] = {}
        for split in MATCHING_SPLITS:
            path = os.path.join(data_dir, MATCHING_DIR, name, f"{split}.txt")
            if not os.path.isfile(path):
                raise ValueError(f"Missing data file {path} (product matching, {name}, split {split!r}).")
            pairs = read_pairs(path)
            if len({p[2] for p in pairs}) < 2:
                raise ValueError(f"{path} must hold both matching (1) and non-matching (0) pairs.")
            out[name][split] = stratified_subset(pairs, limit, seed, key=lambda p: p[2])
    return out


def _check_templates(templates: Sequence[str]) -> list[str]:
    templates = list(templates)
    if not templates:
        raise ValueError("At least one prompt template is needed, e.g. 'a photo of {}'.")
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"Prompt template {template!r} must contain exactly one '{{}}' for the class name.")
    return templates


def _default_compose_fn():
    try:
        from training.compositor import compose_scene
    except ImportError as error:
        raise ValueError(
            "Task 'instance_retrieval' needs training.compositor.compose_scene, which cannot be imported "
            f"({error}); pass compose_fn= or drop the task."
        ) from error
    return compose_scene


# ================================================================================================= embedding
def _size_get(size, key):
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def _load_image(source):
    from PIL import Image

    if isinstance(source, Image.Image):
        return source.convert("RGB")
    with Image.open(source) as image:
        return image.convert("RGB")


def has_instance_decoder(model) -> bool:
    return bool(getattr(model.config, "use_instance_decoder", False)) and getattr(model, "instance_decoder", None) is not None


def _normalize(array: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(array, axis=-1, keepdims=True)
    return array / np.clip(norm, 1e-12, None)


class Embedder:
    """
    Batched, cached embeddings of one model: texts are cached per string, images per named set (a split, the
    scenes), so every task reuses them. Everything runs under `torch.inference_mode` and is returned L2-normalised
    as float32 numpy arrays.
    """

    def __init__(self, model, processor, batch_size: int = 64, device=None, name: str = "model",
                 show_progress: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.model = model
        self.processor = processor
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.name = name
        self.show_progress = show_progress
        self.is_eclip = has_instance_decoder(model)
        self._texts: dict[str, np.ndarray] = {}
        self._images: dict[str, dict] = {}
        self.embedded_images = 0  # counters, so tests can check that nothing is embedded twice
        self.embedded_texts = 0

    def _bar(self, total, desc):
        return tqdm(total=total, desc=f"[{self.name}] {desc}", disable=not self.show_progress, leave=False,
                    unit="item")

    @torch.inference_mode()
    def texts(self, texts: Sequence[str], desc: str = "texts") -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self._texts))
        if todo:
            with self._bar(len(todo), f"embedding {desc}") as bar:
                for start in range(0, len(todo), self.batch_size):
                    chunk = todo[start : start + self.batch_size]
                    inputs = self.processor(text=chunk, return_tensors="pt", padding=True, truncation=True)
                    inputs = {k: v.to(self.device) for k, v in inputs.items()
                              if k in ("input_ids", "attention_mask", "token_type_ids", "position_ids")}
                    features = self.model.get_text_features(**inputs).pooler_output.float()
                    features = torch.nn.functional.normalize(features, dim=-1).cpu().numpy()
                    for text, vector in zip(chunk, features):
                        self._texts[text] = vector
                    bar.update(len(chunk))
            self.embedded_texts += len(todo)
        return np.stack([self._texts[t] for t in texts]) if len(texts) else np.zeros((0, 0), np.float32)

    def class_embeddings(self, class_names: Sequence[str], templates: Sequence[str], desc: str = "prompts"):
        """One embedding per class: the mean of its normalised prompt embeddings over the templates, re-normalised."""
        prompts = [template.format(name) for name in class_names for template in templates]
        embeds = self.texts(prompts, desc=desc).reshape(len(class_names), len(templates), -1)
        return _normalize(embeds.mean(axis=1))

    def _pixel_values(self, sources):
        images = [_load_image(s) for s in sources]
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    @torch.inference_mode()
    def images(self, key: str, sources: Sequence, with_attention: bool = False) -> dict:
        """
        Embed the images of set `key` once: returns `image_embeds` (N, D) (the text-free embedding), and for ECLIP
        `instance_embeds` (N, K, D) and, with `with_attention`, `attention` (N, K, T): the last decoder layer's
        cross-attention, averaged over heads.
        """
        cached = self._images.get(key)
        if cached is not None and (cached["attention"] is not None or not with_attention or not self.is_eclip):
            return cached
        want_attention = with_attention and self.is_eclip
        image_embeds, instance_embeds, attention = [], [], []
        starts = list(range(0, len(sources), self.batch_size))
        # Decode and preprocess the next batch in a thread while the model runs on this one.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool, self._bar(len(sources), f"embedding {key} images") as bar:
            future = pool.submit(self._pixel_values, sources[0 : self.batch_size]) if starts else None
            for i, start in enumerate(starts):
                pixel_values = future.result().to(self.device)
                if i + 1 < len(starts):
                    nxt = starts[i + 1]
                    future = pool.submit(self._pixel_values, sources[nxt : nxt + self.batch_size])
                model_dtype = next(self.model.parameters()).dtype
                pixel_values = pixel_values.to(model_dtype)
                if self.is_eclip:
                    out = self.model.get_instance_features(pixel_values, output_attentions=want_attention)
                    image_embeds.append(out.image_embeds.float().cpu())
                    instance_embeds.append(out.instance_embeds.float().cpu())
                    if want_attention:
                        attention.append(out.cross_attentions[-1].float().mean(dim=1).cpu())
                else:
                    pooled = self.model.get_image_features(pixel_values).pooler_output.float()
                    image_embeds.append(pooled.cpu())
                bar.update(pixel_values.shape[0])
        self.embedded_images += len(sources)
        result = {
            "image_embeds": _normalize(torch.cat(image_embeds).numpy()),
            "instance_embeds": torch.cat(instance_embeds).numpy() if instance_embeds else None,
            "attention": torch.cat(attention).numpy() if attention else None,
        }
        self._images[key] = result
        return result


def image_text_scores(images: dict, text_embeds: np.ndarray, text_free: bool = False, chunk: int = 256) -> np.ndarray:
    """
    The model's image-text score (without the logit scale), images x texts: `max_k <q_k, t>` for ECLIP, `<g, t>`
    for the baseline; `text_free=True` scores with the text-free image embedding instead.
    """
    instances = images["instance_embeds"]
    if instances is None or text_free:
        return images["image_embeds"] @ text_embeds.T
    out = np.empty((instances.shape[0], text_embeds.shape[0]), dtype=np.float32)
    for start in range(0, instances.shape[0], chunk):
        block = np.einsum("ikd,jd->ijk", instances[start : start + chunk], text_embeds)
        out[start : start + chunk] = block.max(axis=-1)
    return out


# ===================================================================================================== plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: np.ndarray, row_names, col_names, path: str, title: str):
    plt = _pyplot()
    size = max(6.0, 0.45 * len(col_names) + 3)
    fig, ax = plt.subplots(figsize=(size, max(5.0, 0.45 * len(row_names) + 2.5)))
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(col_names)), col_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_names)), row_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (r, c), value in np.ndenumerate(matrix):
        if value >= 0.005:
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if value > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.04, label="fraction of the true class")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_retrieval_examples(queries: list[str], ranked: list[list], correct: list[list[bool]], path: str, title: str,
                            truth: list[tuple] | None = None):
    """One row per query: its title, the top-k gallery images (correct ones framed green), then the true image and
    its rank (`truth`: `(image, rank)` per query)."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    rows, cols = len(queries), max(len(r) for r in ranked)
    extra = 1 if truth else 0
    fig, axes = plt.subplots(rows, cols + 1 + extra, figsize=(2.0 * (cols + 1 + extra) + 1.2, 2.2 * rows),
                             squeeze=False)

    def show(ax, image, good, label=None):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.imshow(image)
        width, height = image.size
        color, lw = ("#1a9850", 6) if good else ("#bbbbbb", 1)
        ax.add_patch(Rectangle((0, 0), width - 1, height - 1, fill=False, edgecolor=color, linewidth=lw))
        for spine in ax.spines.values():
            spine.set_visible(False)
        if label:
            ax.set_title(label, fontsize=8)

    for r, (query, images, flags) in enumerate(zip(queries, ranked, correct)):
        text_ax = axes[r][0]
        text_ax.axis("off")
        text_ax.text(0.0, 0.5, "\n".join(textwrap.wrap(query, 22)), va="center", ha="left", fontsize=8,
                     transform=text_ax.transAxes)
        for c in range(cols):
            ax = axes[r][c + 1]
            if c >= len(images):
                ax.axis("off")
                continue
            show(ax, images[c], flags[c], f"rank {c + 1}" if r == 0 else None)
        if truth:
            image, rank = truth[r]
            show(axes[r][cols + 1], image, True, f"the product: rank {rank}")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_instance_attention(panels: list[dict], path: str, title: str):
    """Each panel: scene (PIL), heat (g, g), extent (l, r, b, t) in canvas pixels, box, peak (x, y), caption."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        scene = panel["scene"]
        ax.imshow(scene, extent=(0, scene.size[0], scene.size[1], 0))
        heat = panel["heat"]
        heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-12)
        ax.imshow(heat, cmap="jet", alpha=0.45, extent=panel["extent"], interpolation="bilinear")
        x0, y0, x1, y1 = panel["box"]
        inside = panel["inside"]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linewidth=2.5,
                               edgecolor="#1a9850" if inside else "#d73027"))
        ax.plot(*panel["peak"], marker="x", color="white", markersize=10, mew=3)
        ax.plot(*panel["peak"], marker="x", color="black", markersize=8, mew=1.5)
        ax.set_xlim(0, scene.size[0])
        ax.set_ylim(scene.size[1], 0)
        ax.set_title("\n".join(textwrap.wrap(panel["caption"], 34)[:3]), fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ===================================================================================================== tasks
class _Run:
    """What one model's tasks share: its embedder, the data, the output folder."""

    def __init__(self, embedder: Embedder, splits: dict, matching: dict | None, scenes: list | None,
                 output_dir: str, templates: list[str], seed: int, class_names: list[str],
                 restricted_negatives: list[str], confusion_classes: int, num_examples: int):
        self.embedder = embedder
        self.splits = splits
        self.matching = matching
        self.scenes = scenes
        self.output_dir = output_dir
        self.templates = templates
        self.seed = seed
        self.class_names = class_names
        self.restricted_negatives = restricted_negatives
        self.confusion_classes = confusion_classes
        self.num_examples = num_examples
        self.plots: dict[str, str] = {}
        self.notes: list[str] = []

    def split_images(self, split: str) -> dict:
        return self.embedder.images(split, [r["path"] for r in self.splits[split]])

    def split_titles(self, split: str) -> np.ndarray:
        return self.embedder.texts([r[TITLE_FIELD] for r in self.splits[split]], desc=f"{split} titles")

    def labels(self, split: str, field: str = LABEL_FIELD) -> list[str]:
        return [r[field] for r in self.splits[split]]


def _metric(name: str):
    from modeling_eclip.metrics import load_metric

    return load_metric(name)


def task_zero_shot(run: _Run) -> dict:
    images = run.split_images("test")
    class_embeds = run.embedder.class_embeddings(run.class_names, run.templates, desc="class prompts")
    scores = image_text_scores(images, class_embeds)
    predictions = scores.argmax(axis=1)
    index = {name: i for i, name in enumerate(run.class_names)}
    references = np.array([index[label] for label in run.labels("test")])
    present = sorted(set(references.tolist()))
    metrics = _metric("classification").compute(
        predictions=predictions.tolist(), references=references.tolist(), labels=present
    )
    # Confusion matrix of the most frequent test classes; the last column gathers predictions of any other class.
    support = np.bincount(references, minlength=len(run.class_names))
    top = [int(c) for c in np.argsort(-support, kind="stable")[: run.confusion_classes] if support[c] > 0]
    matrix = np.zeros((len(top), len(top) + 1))
    for r, c in enumerate(top):
        rows = predictions[references == c]
        for p in rows:
            matrix[r, top.index(p) if p in top else len(top)] += 1
        matrix[r] /= max(len(rows), 1)
    path = os.path.join(run.output_dir, PLOT_FILES["zero_shot"])
    plot_confusion(matrix, [run.class_names[c] for c in top], [run.class_names[c] for c in top] + ["(other)"], path,
                   f"{run.embedder.name}: zero-shot articleType, top-{len(top)} test classes "
                   f"(acc {metrics['accuracy']:.3f})")
    run.plots["zero_shot"] = os.path.basename(path)
    return {
        **metrics,
        DETAILS: {
            "num_classes": len(run.class_names),
            "num_test_classes": len(present),
            "templates": list(run.templates),
            "scoring": "max_k <q_k, c>" if run.embedder.is_eclip else "<g, c>",
            "f1_averaged_over": "classes present in the test rows",
        },
    }


def _retrieval_metrics(scores: np.ndarray, relevant: list[list[int]]) -> dict:
    return _metric("retrieval").compute(scores=scores.tolist(), relevant=relevant, k_values=(1, 5, 10))


def task_retrieval(run: _Run) -> dict:
    rows = run.splits["test"]
    images = run.split_images("test")
    texts = run.split_titles("test")
    by_id = defaultdict(list)
    for i, row in enumerate(rows):
        by_id[row["id"]].append(i)
    relevant = [by_id[row["id"]] for row in rows]
    scores = image_text_scores(images, texts)  # images x texts
    result = {
        "text_to_image": _retrieval_metrics(scores.T, relevant),
        "image_to_text": _retrieval_metrics(scores, relevant),
        # The text-free image embedding (what an index stores); equals the above for the CLIP baseline.
        "text_to_image_text_free": _retrieval_metrics(image_text_scores(images, texts, text_free=True).T, relevant),
    }
    titles = [row[TITLE_FIELD] for row in rows]
    duplicates = len(titles) - len(set(titles))
    # Retrieval examples: a few seeded queries with their top-5 gallery images.
    rng = np.random.default_rng(run.seed)
    picks = sorted(rng.choice(len(rows), size=min(run.num_examples, len(rows)), replace=False).tolist())
    ranked, correct, truth = [], [], []
    for q in picks:
        order = np.argsort(-scores[:, q], kind="stable")
        ranked.append([_load_image(rows[i]["path"]) for i in order[:5]])
        correct.append([rows[i]["id"] == rows[q]["id"] for i in order[:5]])
        truth.append((_load_image(rows[q]["path"]), int(np.nonzero(order == q)[0][0]) + 1))
    path = os.path.join(run.output_dir, PLOT_FILES["retrieval"])
    plot_retrieval_examples([titles[q] for q in picks], ranked, correct, path,
                            f"{run.embedder.name}: text-to-image retrieval, top-5 of {len(rows)} "
                            "(green frame = the product)", truth=truth)
    run.plots["retrieval"] = os.path.basename(path)
    result[DETAILS] = {
        "num_queries": len(rows),
        "gallery_size": len(rows),
        "relevant": "same product id",
        "duplicate_titles": duplicates,
        "scoring": "max_k <q_k, t>" if run.embedder.is_eclip else "<g, t>",
    }
    return result


def build_scenes(rows: list[dict], compose_fn: Callable, seed: int) -> list[dict]:
    """Each test product pasted into a scene with 1-3 distractor test products (seeded, so reproducible)."""
    import random

    rng = random.Random(seed)
    scenes = []
    for target in tqdm(range(len(rows)), desc="composing scenes", leave=False, disable=len(rows) < 50):
        count = min(rng.randint(*SCENE_DISTRACTORS), len(rows) - 1)
        distractors = rng.sample([i for i in range(len(rows)) if i != target], count) if count > 0 else []
        scene, box = compose_fn(
            _load_image(rows[target]["path"]),
            [_load_image(rows[i]["path"]) for i in distractors],
            rng,
            canvas_size=SCENE_CANVAS,
            scale_range=SCENE_SCALE_RANGE,
        )
        scenes.append({"image": scene.convert("RGB"), "box": tuple(float(v) for v in box), "target": target,
                       "members": [target, *distractors]})
    return scenes


def scene_relevance(scenes: list[dict]) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """
    The scene-retrieval queries (test rows that name a scene's product, sorted) and, per query, the scenes that show
    the product (as target or distractor) and the scenes built around it.
    """
    containing, targets = defaultdict(list), defaultdict(list)
    for s, scene in enumerate(scenes):
        for member in scene["members"]:
            containing[member].append(s)
        targets[scene["target"]].append(s)
    queries = sorted(targets)
    return queries, [sorted(containing[q]) for q in queries], [targets[q] for q in queries]


def first_relevant_ranks(scores: np.ndarray, relevant: list[list[int]]) -> np.ndarray:
    """Per query (row of `scores`), the 1-based rank of its best-scored relevant item; R@k is `ranks <= k`."""
    best = np.array([scores[i, items].max() for i, items in enumerate(relevant)])
    return 1 + (scores > best[:, None]).sum(axis=1)


def _processed_to_canvas(image_processor, canvas_w: int, canvas_h: int):
    """
    Where the processed (resized, centre-cropped) image lies on the canvas: `(left, top, sx, sy, width, height)`
    with canvas_x = left + x * sx for a processed pixel x. Handles CLIP-style `shortest_edge` + centre crop and
    plain `height` / `width` resizes.
    """
    size = getattr(image_processor, "size", None)
    crop = getattr(image_processor, "crop_size", None)
    do_crop = bool(getattr(image_processor, "do_center_crop", False)) and crop is not None
    shortest = _size_get(size, "shortest_edge")
    if shortest:
        scale = shortest / min(canvas_w, canvas_h)
        resized_w, resized_h = round(canvas_w * scale), round(canvas_h * scale)
    elif _size_get(size, "height") and _size_get(size, "width"):
        resized_w, resized_h = _size_get(size, "width"), _size_get(size, "height")
    else:
        resized_w, resized_h = canvas_w, canvas_h
    out_w, out_h = resized_w, resized_h
    left = top = 0.0
    if do_crop and _size_get(crop, "height") and _size_get(crop, "width"):
        out_w, out_h = _size_get(crop, "width"), _size_get(crop, "height")
        left, top = (resized_w - out_w) / 2.0, (resized_h - out_h) / 2.0
    sx, sy = canvas_w / resized_w, canvas_h / resized_h
    return left * sx, top * sy, sx, sy, out_w, out_h


def _attention_grid(attention_row: np.ndarray) -> np.ndarray | None:
    """(T,) attention over image tokens -> (g, g) over the patch grid (the CLS token dropped when present)."""
    tokens = attention_row.shape[0]
    for drop in (1, 0):
        side = math.isqrt(tokens - drop)
        if side * side == tokens - drop and side > 0:
            return attention_row[drop:].reshape(side, side)
    return None


def task_instance_retrieval(run: _Run) -> dict:
    rows = run.splits["test"]
    scenes = run.scenes
    embedder = run.embedder
    scene_images = embedder.images("scenes", [s["image"] for s in scenes], with_attention=True)
    texts = run.split_titles("test")
    scores = image_text_scores(scene_images, texts)  # scenes x titles
    queries, containing, targets = scene_relevance(scenes)
    result = {
        "text_to_image": _retrieval_metrics(scores.T[queries], containing),
        "text_to_image_target_only": _retrieval_metrics(scores.T[queries], targets),
    }
    details = {
        "num_scenes": len(scenes),
        "num_queries": len(queries),
        "relevant": "text_to_image: every scene that contains the product (as target or distractor); "
                    "target_only: the scene built around it",
        "distractors": list(SCENE_DISTRACTORS),
        "scale_range": list(SCENE_SCALE_RANGE),
        "scoring": "max_k <q_k, t>" if embedder.is_eclip else "<g, t>",
    }
    box_area = [((s["box"][2] - s["box"][0]) * (s["box"][3] - s["box"][1])) / float(s["image"].size[0] * s["image"].size[1])
                for s in scenes]
    details["attention_in_box_chance"] = float(np.mean(box_area)) if box_area else None
    if not embedder.is_eclip:
        result["attention_in_box_rate"] = None
        details["attention_note"] = "CLIP baseline (no instance decoder): no cross-attention, attention plot skipped."
        run.notes.append(details["attention_note"])
        result[DETAILS] = details
        return result
    attention = scene_images["attention"]
    instances = scene_images["instance_embeds"]
    image_processor = getattr(embedder.processor, "image_processor", embedder.processor)
    hits, panels = [], []
    for s, scene in enumerate(scenes):
        selected = int(np.argmax(instances[s] @ texts[scene["target"]]))
        grid = _attention_grid(attention[s, selected])
        if grid is None:
            details["attention_note"] = (f"{attention.shape[-1]} image tokens do not form a square patch grid: "
                                         "attention analysis skipped.")
            result["attention_in_box_rate"] = None
            result[DETAILS] = details
            return result
        width, height = scene["image"].size
        left, top, sx, sy, out_w, out_h = _processed_to_canvas(image_processor, width, height)
        g_rows, g_cols = grid.shape
        r, c = np.unravel_index(int(np.argmax(grid)), grid.shape)
        peak = (left + (c + 0.5) * out_w / g_cols * sx, top + (r + 0.5) * out_h / g_rows * sy)
        x0, y0, x1, y1 = scene["box"]
        inside = bool(x0 <= peak[0] <= x1 and y0 <= peak[1] <= y1)
        hits.append(inside)
        if len(panels) < 8:
            panels.append({
                "scene": scene["image"], "heat": grid, "box": scene["box"], "peak": peak, "inside": inside,
                "extent": (left, left + out_w * sx, top + out_h * sy, top),
                "caption": f"query {selected}: {rows[scene['target']][TITLE_FIELD]}",
            })
    result["attention_in_box_rate"] = float(np.mean(hits)) if hits else None
    details["attention_layer"] = "last decoder layer, mean over heads, text-selected query (argmax_k <q_k, t>)"
    path = os.path.join(run.output_dir, PLOT_FILES["instance_retrieval"])
    plot_instance_attention(
        panels, path,
        f"{embedder.name}: cross-attention of the text-selected query (last layer), x = peak; box = the named "
        f"product, green if the peak is inside\n(peak in box in {result['attention_in_box_rate']:.0%} of "
        f"{len(hits)} scenes; box area {details['attention_in_box_chance']:.0%} of the scene)",
    )
    run.plots["instance_retrieval"] = os.path.basename(path)
    result[DETAILS] = details
    return result


def _fit_logistic(x_train, y_train, x_val, y_val, select: Callable, Cs=LINEAR_PROBE_C, seed=0, **kwargs):
    """Logistic regression on standardised features; C picked by `select(model, x_val, y_val)` (higher is better)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    best = None
    for C in Cs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            # Small (--limit) runs have many classes per sample; the fit is still what we want.
            warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
            clf = LogisticRegression(C=C, max_iter=500, random_state=seed, **kwargs).fit(x_train, y_train)
        value = select(clf, x_val, y_val)
        if best is None or value > best[0]:
            best = (value, C, clf)
    return best[2], scaler, best[1], best[0]


def task_linear_probe(run: _Run) -> dict:
    features = {}
    for split in ("train", "validation", "test"):
        image = run.split_images(split)["image_embeds"]
        text = run.split_titles(split)
        features[split] = {"image": image, "text": text, "both": np.concatenate([image, text], axis=1)}
    y = {split: np.array(run.labels(split)) for split in features}
    if len(set(y["train"].tolist())) < 2:
        return {"skipped": "the train rows hold fewer than two articleType classes"}
    metric = _metric("classification")
    classes = sorted(set(y["train"].tolist()) | set(y["validation"].tolist()) | set(y["test"].tolist()))
    index = {c: i for i, c in enumerate(classes)}
    test_labels = sorted({index[c] for c in y["test"].tolist()})
    result = {}
    for kind in ("image", "text", "both"):
        clf, scaler, C, val_acc = _fit_logistic(
            features["train"][kind], y["train"], features["validation"][kind], y["validation"],
            select=lambda m, xv, yv: float(np.mean(m.predict(xv) == yv)), seed=run.seed,
        )
        predictions = clf.predict(scaler.transform(features["test"][kind]))
        scores = metric.compute(predictions=[index[p] for p in predictions],
                                references=[index[t] for t in y["test"].tolist()], labels=test_labels)
        result[kind] = {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}
        result.setdefault(DETAILS, {})[kind] = {"C": C, "validation_accuracy": val_acc}
    result[DETAILS]["C_grid"] = list(LINEAR_PROBE_C)
    result[DETAILS]["features"] = "L2-normalised embeddings, standardised on train; both = [image, text]"
    return result


def task_clustering(run: _Run) -> dict:
    from sklearn.cluster import KMeans

    embeds = run.split_images("test")["image_embeds"]
    labels = run.labels("test")
    classes = sorted(set(labels))
    k = min(len(classes), len(labels))
    assignments = KMeans(n_clusters=k, n_init=10, random_state=run.seed).fit_predict(embeds)
    index = {c: i for i, c in enumerate(classes)}
    metrics = _metric("clustering").compute(predictions=assignments.tolist(), references=[index[c] for c in labels])
    return {**metrics, DETAILS: {"k": k, "features": "text-free image embeddings (test)", "n": len(labels)}}


def _pair_scores(embedder: Embedder, pairs, desc) -> tuple[np.ndarray, np.ndarray]:
    left = embedder.texts([serialized_to_text(p[0]) for p in pairs], desc=f"{desc} left")
    right = embedder.texts([serialized_to_text(p[1]) for p in pairs], desc=f"{desc} right")
    return np.sum(left * right, axis=1), np.array([p[2] for p in pairs])


def task_matching(run: _Run) -> dict:
    from modeling_eclip.metrics import best_f1_threshold

    metric = _metric("pair_matching")
    result, details = {}, {}
    for name, splits in run.matching.items():
        valid_scores, valid_labels = _pair_scores(run.embedder, splits["valid"], f"{name} valid")
        threshold, valid_f1 = best_f1_threshold(valid_scores, valid_labels)
        test_scores, test_labels = _pair_scores(run.embedder, splits["test"], f"{name} test")
        scores = metric.compute(scores=test_scores.tolist(), references=test_labels.tolist(), threshold=threshold)
        result[name] = {k: scores[k] for k in ("f1", "precision", "recall", "roc_auc")}
        details[name] = {"threshold": threshold, "valid_f1": valid_f1, "valid_pairs": len(splits["valid"]),
                         "test_pairs": len(splits["test"])}
    details["scoring"] = "cosine of the two offers' text embeddings; threshold = best F1 on valid"
    result[DETAILS] = details
    return result


def _binary_report(metric, val_scores, val_labels, test_scores, test_labels) -> dict:
    from modeling_eclip.metrics import best_f1_threshold

    threshold, _ = best_f1_threshold(val_scores, val_labels)
    scores = metric.compute(scores=np.asarray(test_scores).tolist(), references=np.asarray(test_labels).tolist(),
                            threshold=threshold, target_precision=TARGET_PRECISION)
    return {
        "roc_auc": scores["roc_auc"],
        "recall_at_95_precision": scores["recall_at_precision"],
        "f1": scores["f1"],
        "precision": scores["precision"],
        "recall": scores["recall"],
    }, threshold


def task_restricted(run: _Run) -> dict:
    from sklearn.metrics import roc_auc_score

    labels = {s: np.array([r[RESTRICTED_FIELD] == RESTRICTED_VALUE for r in run.splits[s]], dtype=np.int64)
              for s in ("train", "validation", "test")}
    for split, y in labels.items():
        if y.min() == y.max():
            return {"skipped": f"the {split} rows hold only one class ({RESTRICTED_VALUE} vs rest): "
                               "raise --limit or use the full split"}
    metric = _metric("pair_matching")
    embeds = {s: run.split_images(s)["image_embeds"] for s in labels}
    # Zero-shot: the text-free image embedding against "innerwear" prompts vs the other subCategory names.
    positive = run.embedder.class_embeddings(RESTRICTED_PROMPTS, run.templates, desc="restricted prompts")
    positive = _normalize(positive.mean(axis=0, keepdims=True))
    negative = run.embedder.class_embeddings(run.restricted_negatives, run.templates, desc="restricted prompts")

    def zero_shot_score(x):
        return (x @ positive.T)[:, 0] - (x @ negative.T).max(axis=1)

    zero_shot, zs_threshold = _binary_report(metric, zero_shot_score(embeds["validation"]), labels["validation"],
                                             zero_shot_score(embeds["test"]), labels["test"])
    clf, scaler, C, val_auc = _fit_logistic(
        embeds["train"], labels["train"], embeds["validation"], labels["validation"],
        select=lambda m, xv, yv: float(roc_auc_score(yv, m.decision_function(xv))), seed=run.seed,
        class_weight="balanced",
    )
    probe, lp_threshold = _binary_report(
        metric, clf.decision_function(scaler.transform(embeds["validation"])), labels["validation"],
        clf.decision_function(scaler.transform(embeds["test"])), labels["test"],
    )
    return {
        "zero_shot": zero_shot,
        "linear_probe": probe,
        DETAILS: {
            "positive": f"{RESTRICTED_FIELD} == {RESTRICTED_VALUE}",
            "positives": {s: int(y.sum()) for s, y in labels.items()},
            "rows": {s: int(len(y)) for s, y in labels.items()},
            "zero_shot_prompts": list(RESTRICTED_PROMPTS),
            "zero_shot_negatives": "the other subCategory names",
            "zero_shot_threshold": zs_threshold,
            "linear_probe_C": C,
            "linear_probe_validation_roc_auc": val_auc,
            "linear_probe_threshold": lp_threshold,
            "thresholds": "best F1 on validation",
        },
    }


TASK_FUNCTIONS = {
    "zero_shot": task_zero_shot,
    "retrieval": task_retrieval,
    "instance_retrieval": task_instance_retrieval,
    "linear_probe": task_linear_probe,
    "clustering": task_clustering,
    "matching": task_matching,
    "restricted": task_restricted,
}


# =================================================================================================== results
def config_summary(model) -> dict:
    config = model.config
    vision, text = getattr(config, "vision_config", None), getattr(config, "text_config", None)
    use_decoder = bool(getattr(config, "use_instance_decoder", False))
    summary = {
        "model_type": getattr(config, "model_type", None),
        "use_instance_decoder": use_decoder,
        "num_instance_queries": getattr(config, "num_instance_queries", None) if use_decoder else None,
        "decoder_layers": getattr(config, "decoder_layers", None) if use_decoder else None,
        "projection_dim": getattr(config, "projection_dim", None),
        "vision_model_type": getattr(vision, "model_type", None),
        "text_model_type": getattr(text, "model_type", None),
        "image_size": getattr(vision, "image_size", None),
        "patch_size": getattr(vision, "patch_size", None),
        "text_pooling": getattr(config, "text_pooling", None),
        "vision_pooling": getattr(config, "vision_pooling", None),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
    }
    for name in ("itc_weight", "inter_weight", "intra_weight", "selection_weight"):
        summary[name] = getattr(config, name, None)
    return summary


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("eclip", "torch", "transformers", "evaluate", "datasets", "scikit-learn", "huggingface_hub",
                    "numpy", "matplotlib"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    return out


def flatten_metrics(tasks: dict) -> dict[str, float | None]:
    """`{"zero_shot": {"accuracy": .9, "details": ...}}` -> `{"zero_shot/accuracy": .9}` (details left out)."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, sub in value.items():
                if key in (DETAILS, "skipped"):
                    continue
                walk(f"{prefix}/{key}" if prefix else key, sub)
        elif value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            flat[prefix] = None if value is None else float(value)

    walk("", tasks)
    return flat


def compare(model_tasks: dict, baseline_tasks: dict) -> dict:
    a, b = flatten_metrics(model_tasks), flatten_metrics(baseline_tasks)
    out = {}
    for key in a:
        if key not in b:
            continue
        ratio = None
        if a[key] is not None and b[key] is not None and b[key] != 0:
            ratio = a[key] / b[key]
        out[key] = {"model": a[key], "baseline": b[key], "ratio": ratio}
    return out


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def results_markdown(results: dict) -> str:
    baseline = results.get("baseline")
    config = results["config"]
    lines = [
        "# ECLIP evaluation",
        "",
        f"- model: `{results['model_path']}` (use_instance_decoder={config['use_instance_decoder']}, "
        f"K={config['num_instance_queries']})",
    ]
    if baseline:
        bconf = baseline["config"]
        lines.append(f"- baseline: `{baseline['model_path']}` (use_instance_decoder={bconf['use_instance_decoder']}, "
                     f"K={bconf['num_instance_queries']})")
    data = results["data"]
    sizes = ", ".join(f"{k} {v}" for k, v in data.get("fashion_products", {}).items())
    lines += [
        f"- data: `{results['data_dir']}` (test split; fashion-products rows used: {sizes or 'none'}; "
        f"limit: {results['limit']})",
        f"- seed {results['seed']}, wall time {results['wall_time_s']:.1f} s",
        "",
    ]
    model_flat = flatten_metrics(results["tasks"])
    base_flat = flatten_metrics(baseline["tasks"]) if baseline else {}
    if baseline:
        lines += ["| task | metric | model | baseline | ratio |", "| --- | --- | ---: | ---: | ---: |"]
    else:
        lines += ["| task | metric | value |", "| --- | --- | ---: |"]
    for key, value in model_flat.items():
        task, metric = key.split("/", 1)
        if baseline:
            ratio = results.get("comparison", {}).get(key, {}).get("ratio")
            lines.append(f"| {task} | {metric} | {_fmt(value)} | {_fmt(base_flat.get(key))} | "
                         f"{'n/a' if ratio is None else f'{ratio:.3f}'} |")
        else:
            lines.append(f"| {task} | {metric} | {_fmt(value)} |")
    skipped = {t: v["skipped"] for t, v in results["tasks"].items() if isinstance(v, dict) and "skipped" in v}
    notes = list(results.get("notes", [])) + [f"{t} skipped: {why}" for t, why in skipped.items()]
    if baseline:
        notes += [f"baseline: {n}" for n in baseline.get("notes", [])]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    plots = dict(results.get("plots", {}))
    if plots:
        lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in plots.values())]
        if baseline and baseline.get("plots"):
            lines[-1] += "; baseline: " + ", ".join(f"`{BASELINE_SUBDIR}/{p}`" for p in baseline["plots"].values())
    return "\n".join(lines) + "\n"


def _finite(value):
    """NaN / inf (e.g. an AUC on a degenerate slice) become None, so results.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return None
    return value


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ======================================================================================================= API
def _evaluate_one(model, processor, name, model_path, tasks, splits, matching, scenes, output_dir, templates,
                  seed, class_names, restricted_negatives, batch_size, device, confusion_classes, num_examples,
                  show_progress) -> dict:
    os.makedirs(output_dir, exist_ok=True)
    model.eval()
    if device is not None:
        model.to(device)
    embedder = Embedder(model, processor, batch_size=batch_size, device=device, name=name,
                        show_progress=show_progress)
    run = _Run(embedder, splits, matching, scenes, output_dir, templates, seed, class_names, restricted_negatives,
               confusion_classes, num_examples)
    results, timings = {}, {}
    start = time.perf_counter()
    for task in tasks:
        t0 = time.perf_counter()
        logger.info("[%s] %s", name, task)
        results[task] = TASK_FUNCTIONS[task](run)
        timings[task] = round(time.perf_counter() - t0, 3)
    return {
        "model_path": model_path,
        "config": config_summary(model),
        "tasks": results,
        "task_wall_time_s": timings,
        "eval_wall_time_s": time.perf_counter() - start,
        "plots": run.plots,
        "notes": run.notes,
        "embedded": {"images": embedder.embedded_images, "texts": embedder.embedded_texts},
    }


def prepare(data_dir: str | None, tasks, limit: int | None = None, seed: int = 0,
            templates: Sequence[str] | None = None, compose_fn: Callable | None = None) -> dict:
    """
    Check every input and read the (limited) data rows, without touching a model: unknown tasks, a missing data
    folder, file or split, bad templates or a bad limit raise `ValueError` here, before any heavy work.
    """
    task_list = parse_tasks(tasks)
    data_dir = data_dir or resolve_data_dir()
    if not os.path.isdir(data_dir):
        raise ValueError(f"Data folder {data_dir} does not exist (set --data or ECLIP_DATA_DIR).")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}.")
    templates = _check_templates(templates if templates is not None else DEFAULT_TEMPLATES)
    needed_splits = [s for s in ("train", "validation", "test") if any(s in TASK_SPLITS[t] for t in task_list)]
    splits, class_names, restricted_negatives = {}, [], []
    if needed_splits:
        all_rows = read_fashion_metadata(data_dir)
        splits = load_split_rows(data_dir, needed_splits, limit, seed)
        class_names = sorted({r[LABEL_FIELD] for r in all_rows})
        restricted_negatives = sorted({r[RESTRICTED_FIELD] for r in all_rows} - {RESTRICTED_VALUE})
    matching = load_matching(data_dir, limit, seed) if "matching" in task_list else None
    if "instance_retrieval" in task_list and compose_fn is None:
        compose_fn = _default_compose_fn()
    return {"tasks": task_list, "data_dir": data_dir, "templates": templates, "splits": splits,
            "matching": matching, "class_names": class_names, "restricted_negatives": restricted_negatives,
            "compose_fn": compose_fn}


def evaluate_model(
    model,
    processor,
    data_dir: str | None = None,
    tasks: str | Sequence[str] = "all",
    output_dir: str = "eval",
    limit: int | None = None,
    *,
    baseline_model=None,
    baseline_processor=None,
    model_path: str | None = None,
    baseline_path: str | None = None,
    batch_size: int = 64,
    templates: Sequence[str] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    compose_fn: Callable | None = None,
    confusion_classes: int = 15,
    num_examples: int = 4,
    update_card: bool = False,
    show_progress: bool = True,
) -> dict:
    """
    Run the ECLIP benchmarks on one model (and, given `baseline_model`, the CLIP baseline with the same code) and
    write `results.json`, `results.md` and the plots to `output_dir`. Returns the results dict (= results.json).

    Args:
        model, processor: an `EclipModel` (or anything with `get_text_features` / `get_image_features` /
            `get_instance_features`) and its `EclipProcessor`.
        data_dir: the shared data folder (default `$ECLIP_DATA_DIR`, else `/work/shared/data`).
        tasks: `"all"`, a comma list or a list of names from `TASKS`.
        limit: cap on rows per split (and on pairs per matching split), chosen deterministically (seeded,
            stratified by subCategory / label) for quick runs; `None` uses everything.
        templates: prompt templates with one `{}` (zero-shot and restricted prompts); text embeddings are
            averaged over them.
        compose_fn: scene compositor for `instance_retrieval` (default `training.compositor.compose_scene`).
        update_card: also write the model card (README.md) into `model_path` (a local folder).

    Raises:
        ValueError: unknown task, missing data folder / file / split, bad template or limit -- before any
            embedding is computed.
    """
    t_start = time.perf_counter()
    prepared = prepare(data_dir, tasks, limit, seed, templates, compose_fn)
    task_list, splits, matching = prepared["tasks"], prepared["splits"], prepared["matching"]
    data_dir, templates, compose_fn = prepared["data_dir"], prepared["templates"], prepared["compose_fn"]
    class_names, restricted_negatives = prepared["class_names"], prepared["restricted_negatives"]
    if (baseline_model is None) != (baseline_processor is None):
        raise ValueError("Pass both baseline_model and baseline_processor, or neither.")
    model_path = model_path or getattr(model, "name_or_path", None) or "<in-memory model>"
    if update_card and not os.path.isdir(model_path):
        raise ValueError(f"update_card needs the model to be a local folder; {model_path!r} is not one.")
    os.makedirs(output_dir, exist_ok=True)

    scenes = build_scenes(splits["test"], compose_fn, seed) if "instance_retrieval" in task_list else None
    common = dict(tasks=task_list, splits=splits, matching=matching, scenes=scenes, templates=templates, seed=seed,
                  class_names=class_names, restricted_negatives=restricted_negatives, batch_size=batch_size,
                  device=device, confusion_classes=confusion_classes, num_examples=num_examples,
                  show_progress=show_progress)
    results = _evaluate_one(model, processor, "model", model_path, output_dir=output_dir, **common)
    data = {
        "fashion_products": {s: len(rows) for s, rows in splits.items()},
        "matching": {name: {s: len(p) for s, p in sp.items()} for name, sp in (matching or {}).items()},
        "instance_scenes": len(scenes) if scenes is not None else 0,
        "num_articletype_classes": len(class_names),
    }
    results = {
        "model_path": results.pop("model_path"),
        "tasks_run": task_list,
        "data_dir": os.path.abspath(data_dir),
        "data": data,
        "limit": limit,
        "seed": seed,
        "templates": templates,
        **results,
    }
    if baseline_model is not None:
        baseline = _evaluate_one(
            baseline_model, baseline_processor, "baseline",
            baseline_path or getattr(baseline_model, "name_or_path", None) or "<in-memory baseline>",
            output_dir=os.path.join(output_dir, BASELINE_SUBDIR), **common,
        )
        results["baseline"] = baseline
        results["comparison"] = compare(results["tasks"], baseline["tasks"])
    results["wall_time_s"] = time.perf_counter() - t_start
    results["versions"] = versions()
    results = _finite(results)
    atomic_write_text(os.path.join(output_dir, "results.json"),
                      json.dumps(results, indent=2, default=_json_default, allow_nan=False) + "\n")
    atomic_write_text(os.path.join(output_dir, "results.md"), results_markdown(results))
    if update_card:
        from model_cards.card import write_model_card

        results["model_card"] = write_model_card(model_path, results)
    return results


# ======================================================================================================= CLI
def _load(path: str, device):
    import modeling_eclip  # noqa: F401  (registers ECLIP with the Auto classes)
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    if device is not None:
        model.to(device)
    return model, processor


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eclip-evaluate",
        description="Evaluate an ECLIP checkpoint (and optionally the CLIP baseline) on the ECLIP benchmarks.",
    )
    parser.add_argument("--model", required=True, help="saved model folder or Hub id")
    parser.add_argument("--data", default=None, help="data folder (default $ECLIP_DATA_DIR or ../shared/data next to the project)")
    parser.add_argument("--tasks", default="all", help=f"'all' or a comma list of: {', '.join(TASKS)}")
    parser.add_argument("--output", required=True, help="output folder (results.json, results.md, plots)")
    parser.add_argument("--baseline", default=None, help="a second checkpoint (the CLIP baseline) to compare with")
    parser.add_argument("--limit", type=int, default=None, help="cap rows per split (deterministic) for quick runs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--templates", nargs="+", default=None, metavar="TEMPLATE",
                        help=f"prompt templates with one '{{}}' (default: {' / '.join(DEFAULT_TEMPLATES)})")
    parser.add_argument("--update-card", action="store_true", help="write README.md (model card) into --model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--confusion-classes", type=int, default=15, help="classes in the confusion-matrix plot")
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    try:
        # Every input is checked before a checkpoint is loaded, so a typo fails in a second.
        prepare(args.data, args.tasks, args.limit, args.seed, args.templates)
        if args.update_card and not os.path.isdir(args.model):
            raise ValueError(f"--update-card needs --model to be a local folder; {args.model!r} is not one.")
        model, processor = _load(args.model, device)
        baseline_model = baseline_processor = None
        if args.baseline:
            baseline_model, baseline_processor = _load(args.baseline, device)
        results = evaluate_model(
            model, processor, args.data, args.tasks, args.output, limit=args.limit,
            baseline_model=baseline_model, baseline_processor=baseline_processor,
            model_path=args.model, baseline_path=args.baseline, batch_size=args.batch_size,
            templates=args.templates, seed=args.seed, device=device, confusion_classes=args.confusion_classes,
            update_card=args.update_card, show_progress=not args.no_progress,
        )
    except ValueError as error:
        parser.error(str(error))  # exits with status 2 and the message
    sys.stdout.write(results_markdown(results))
    print(f"\nwrote {os.path.join(args.output, 'results.json')} and {os.path.join(args.output, 'results.md')}")
    if results.get("model_card"):
        print(f"wrote model card {results['model_card']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
