# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""The instance-retrieval scenes: each test product pasted among distractors, their relevance, and where the
processed scene and its attention maps lie on the canvas."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

from eclip.training.compositor import SCENE_CANVAS, SCENE_DISTRACTORS, SCENE_SCALE_RANGE
from eclip.training.evaluation.embedder import load_image


def build_scenes(rows: list[dict], compose_fn: Callable, seed: int) -> list[dict]:
    """Each test product pasted into a scene with 1-3 distractor test products (seeded, so reproducible)."""
    import random

    rng = random.Random(seed)
    scenes = []
    for target in tqdm(range(len(rows)), desc="composing scenes", leave=False,
                      disable=True if len(rows) < 50 else None):
        count = min(rng.randint(*SCENE_DISTRACTORS), len(rows) - 1)
        distractors = rng.sample([i for i in range(len(rows)) if i != target], count) if count > 0 else []
        scene, box = compose_fn(
            load_image(rows[target]["path"]),
            [load_image(rows[i]["path"]) for i in distractors],
            rng,
            canvas_size=SCENE_CANVAS,
            scale_range=SCENE_SCALE_RANGE,
        )
        scenes.append({"image": scene.convert("RGB"), "box": tuple(float(v) for v in box), "target": target,
                       "members": [target, *distractors]})
    return scenes


def build_hard_scenes(rows: list[dict], seed: int) -> dict[str, list[dict]]:
    """
    The harder scene sets (see `eclip.training.compositor.compose_hard_scene`), one scene per test product in each:
    `"crowded"` (2-3 overlapping distractors of mixed scales on a shared busy background) and `"small"` (the named
    product small among 2-3 larger distractors). The background is another test photo; seeded per set.
    """
    import random

    from eclip.training.compositor import HARD_SCENE_KINDS, compose_hard_scene

    out = {}
    for kind in HARD_SCENE_KINDS:
        rng = random.Random(f"eclip-hard-scenes:{kind}:{seed}")
        scenes = []
        for target in tqdm(range(len(rows)), desc=f"composing {kind} scenes", leave=False,
                      disable=True if len(rows) < 50 else None):
            others = [i for i in range(len(rows)) if i != target]
            count = min(rng.randint(2, 3), len(others))
            distractors = rng.sample(others, count) if count else []
            spare = [i for i in others if i not in distractors] or [target]
            background = rng.choice(spare)
            scene, box, visible = compose_hard_scene(
                load_image(rows[target]["path"]), [load_image(rows[i]["path"]) for i in distractors],
                load_image(rows[background]["path"]), rng, kind=kind, canvas_size=SCENE_CANVAS,
            )
            scenes.append({"image": scene, "box": tuple(float(v) for v in box), "target": target,
                           "members": [target, *distractors], "visible": visible})
        out[kind] = scenes
    return out


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


def processed_to_canvas(image_processor, canvas_w: int, canvas_h: int):
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


def attention_grid(attention_row: np.ndarray) -> np.ndarray | None:
    """(T,) attention over image tokens -> (g, g) over the patch grid (the CLS token dropped when present)."""
    tokens = attention_row.shape[0]
    for drop in (1, 0):
        side = math.isqrt(tokens - drop)
        if side * side == tokens - drop and side > 0:
            return attention_row[drop:].reshape(side, side)
    return None


def _size_get(size, key):
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


__all__ = ["attention_grid", "build_scenes", "first_relevant_ranks", "processed_to_canvas", "scene_relevance"]
