# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Per-query outcomes that the studies resample: on a scene set, the rank of each product's first scene (by the
model's score and text-free), and what the selection head picks against the queries the shown products' titles
pick, with the prior's picks beside it.
"""

from __future__ import annotations

import numpy as np


def scene_set_outcomes(images: dict, titles: np.ndarray, scenes: list[dict], label: str,
                       selection: bool = True) -> dict[str, np.ndarray]:
    """
    Per product, on one scene set that names every product once (scene i is built around product i; `images` are
    the scenes' embeddings, `titles` the products'): the rank of the first scene that shows the product, by the
    model's score (`rank`) and by the text-free embedding (`text_free_rank`); with `selection` and a model with the
    selection head, which queries the shown products' titles pick (`picked`, [products, K]) and the head's own choice
    (`head`), from which `selection_hits` works out the agreement and its prior. `label` names the set in the error.
    """
    from eclip.training.evaluation.embedder import image_text_scores
    from eclip.training.evaluation.scenes import first_relevant_ranks, scene_relevance

    queries, containing, _ = scene_relevance(scenes)
    if queries != list(range(len(titles))):  # every product is the named one of one scene per set
        raise ValueError(f"{label} does not name every test product once.")
    out = {"rank": first_relevant_ranks(image_text_scores(images, titles).T[queries], containing),
           "text_free_rank": first_relevant_ranks(image_text_scores(images, titles, text_free=True).T[queries],
                                                  containing)}
    if selection and images["selection_logits"] is not None:
        out["picked"], out["head"] = selection_choices(images, titles, [s["members"] for s in scenes])
    return out


def selection_choices(images: dict, titles: np.ndarray, members: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """
    Per image (`images` from a model with the selection head): which of the K queries the titles of the products it
    shows (`members[i]`) pick, `argmax_k <q_k, t>` ([N, K] bool), and the head's own choice ([N]).
    """
    from eclip.training.evaluation.tasks import member_queries

    chosen = member_queries(images["instance_embeds"], titles, members)
    k = images["instance_embeds"].shape[1]
    return np.array([[q in c for q in range(k)] for c in chosen]), images["selection_logits"].argmax(axis=1)


def selection_hits(per_query: dict) -> tuple[np.ndarray, np.ndarray]:
    """
    Per standard scene `(sets, queries)`: whether the selection head's top query is one a shown product's title picks,
    and whether the prior's is: the single query that is picked in most of the seed's scenes (the best a head that
    ignores the image can do, chosen with hindsight over all the sets).
    """
    picked, head = np.asarray(per_query["selection_picked"]), np.asarray(per_query["selection_head"])
    prior = picked.reshape(-1, picked.shape[-1]).mean(axis=0).argmax()
    head_hit = np.take_along_axis(picked, head[..., None], axis=-1)[..., 0]
    return head_hit.astype(float), picked[..., prior].astype(float)


__all__ = ["scene_set_outcomes", "selection_choices", "selection_hits"]
