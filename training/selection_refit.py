# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
A final, head-only stage for the selection head: refit it on the trained model's frozen decoder states.

Trained jointly, the head learns only which query is picked most often (README, "Results"): its target (the queries
the shown products' titles pick) moves while the queries settle, and by then the learning rate has decayed. With
everything else frozen the same objective is convex in the head's weight (a softmax over the K queries of a shared
linear score), so it is fitted exactly, in seconds, on composed scenes and photos of the training split. Only the head
changes: text-to-image scores (`max_k <q_k, t>`) and every text-conditioned result stay as they were; the text-free
embedding and the head's choice of query change.

`eclip-pretrain` runs it as its last stage when the training settings say `selection_refit: true` (both shipped
recipes do: `fashion.yaml`, `default.yaml`), on rows of its own training data (`DatasetRows`). On a model already
trained:

```python
from eclip.training.selection_refit import refit_selection_head
stats = refit_selection_head(model, processor, train_rows, scenes=1500, photos=1500, seed=0)
model.save_pretrained("eclip-refit")
```
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)


class DatasetRows(Sequence):
    """
    A product dataset (`eclip.training.data.load_product_dataset`: map-style, or a list of its rows) seen as the refit's
    rows, `{"path": image, TITLE_FIELD: title}`, read one row at a time so that only the drawn rows are touched. The
    image is the file path of an undecoded `{"bytes": None, "path": ...}` reference (loaded when used), else the
    decoded PIL image, else `None` when it cannot be decoded (`refit_selection_head` skips and counts such rows);
    `title_of(row)` names the product (the collator's `title` field).
    """

    def __init__(self, dataset, title_of: Callable[[Mapping], str | None]):
        self.dataset, self.title_of = dataset, title_of

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        from eclip.training.data import decode_image
        from eclip.training.fashion import TITLE_FIELD

        row = self.dataset[int(index)]
        image = row.get("image")
        if isinstance(image, Mapping) and image.get("path") and not image.get("bytes"):
            source = image["path"]
        else:
            try:
                source = decode_image(image)
            except Exception:  # noqa: BLE001  (any undecodable value: the refit skips the row and counts it)
                source = None
        return {"path": source, TITLE_FIELD: self.title_of(row)}


def usable_rows(rows: Sequence[dict]) -> tuple[list[dict], int]:
    """
    The rows with a non-empty title and an image that loads, and how many were left out. The check loads each image
    and lets it go (composing and embedding load it again): holding thousands of decoded photos would not be bounded.
    """
    from eclip.training.evaluation.embedder import load_image
    from eclip.training.fashion import TITLE_FIELD

    kept = []
    for row in rows:
        title = row.get(TITLE_FIELD)
        if row.get("path") is None or not isinstance(title, str) or not title.strip():
            continue
        try:
            load_image(row["path"])
        except ValueError:
            continue
        kept.append(row)
    return kept, len(rows) - len(kept)


def selection_objective(states: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                        weight_decay: float = 1e-3) -> torch.Tensor:
    """The head-only objective: mean soft cross-entropy of `softmax_k(w . h_k)` to `targets`, plus `wd * |w|^2`."""
    logits = (states @ weight.T).squeeze(-1)
    return -(targets * logits.log_softmax(-1)).sum(-1).mean() + weight_decay * weight.pow(2).sum()


def fit_selection_head(states: torch.Tensor, targets: torch.Tensor, initial: torch.Tensor | None = None,
                       weight_decay: float = 1e-3, max_iter: int = 500) -> torch.Tensor:
    """
    The selection head's weight that minimises the soft cross-entropy of `softmax_k(w . h_k)` to `targets`, plus
    `weight_decay * |w|^2` (convex; solved with L-BFGS).

    Args:
        states: [N, K, H] decoder states (the head's input) of N images.
        targets: [N, K] target distributions over the K queries (rows sum to 1).
        initial: [1, H] starting weight (default zeros); weight_decay: L2 penalty; max_iter: L-BFGS iterations.

    Returns:
        [1, H] float32 weight.
    """
    if states.dim() != 3 or targets.shape != states.shape[:2]:
        raise ValueError(f"states must be [N, K, H] and targets [N, K]; got {tuple(states.shape)} and "
                         f"{tuple(targets.shape)}.")
    if not torch.allclose(targets.sum(-1), torch.ones(targets.shape[0]), atol=1e-4):
        raise ValueError("every target row must be a distribution over the queries (sum to 1).")
    states, targets = states.detach().float(), targets.detach().float()
    weight = (torch.zeros(1, states.shape[-1]) if initial is None else initial.detach().float().clone())
    weight.requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = selection_objective(states, targets, weight, weight_decay)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach()


def member_targets(chosen: Sequence[Sequence[int]], num_queries: int) -> torch.Tensor:
    """[N, K] targets: uniform over the queries the shown products' titles pick (`chosen[i]`, duplicates merged)."""
    targets = torch.zeros(len(chosen), num_queries)
    for row, queries in enumerate(chosen):
        if not queries:
            raise ValueError(f"image {row} shows no product with a title: it has no selection target.")
        targets[row, sorted(set(queries))] = 1.0
    return targets / targets.sum(-1, keepdim=True)


def decoder_states(embedder, key: str, sources: Sequence) -> tuple[dict, torch.Tensor]:
    """An image set's embeddings (`Embedder.images`) and the decoder states the selection head reads, [N, K, H]."""
    head = embedder.model.instance_decoder.selection_head
    captured = []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach().float().cpu()))
    try:
        embedder.forget_images(key)  # embed afresh, so that the hook sees every batch
        images = embedder.images(key, sources)
    finally:
        hook.remove()
    return images, torch.cat(captured)


def refit_selection_head(model, processor, rows: Sequence[dict], scenes: int = 1500, photos: int = 1500,
                         seed: int = 0, weight_decay: float = 1e-3, tower_features=None,
                         show_progress: bool = False) -> dict:
    """
    Refit `model`'s selection head (in place) on frozen decoder states of `scenes` composed scenes (each product with
    1-3 others, as the evaluation composes them) and `photos` plain photos drawn from `rows` (training rows with a
    `path` and a title), towards the queries the shown products' titles pick (`argmax_k <q_k, t>`, the choice the
    text makes at inference). Drawn rows without a title or with an image that does not load are skipped, logged and
    counted (`skipped_rows`). Returns the head's agreement with those choices before and after, on the fitted images.
    """
    from eclip.training.compositor import compose_scene
    from eclip.training.evaluation.embedder import Embedder
    from eclip.training.evaluation.scenes import build_scenes
    from eclip.training.fashion import TITLE_FIELD
    from eclip.training.evaluation.tasks import member_agreement, member_prior_share, member_queries

    if not getattr(model.config, "use_instance_decoder", False):
        raise ValueError("refit_selection_head needs a model with the instance decoder (use_instance_decoder=True).")
    if len(rows) < 2:
        raise ValueError(f"refit_selection_head needs at least 2 rows to compose scenes, got {len(rows)}.")
    rng = np.random.default_rng(seed)
    scene_rows = [rows[i] for i in sorted(rng.choice(len(rows), size=min(scenes, len(rows)), replace=False))]
    photo_rows = [rows[i] for i in sorted(rng.choice(len(rows), size=min(photos, len(rows)), replace=False))]
    scene_rows, skipped_scenes = usable_rows(scene_rows)
    photo_rows, skipped_photos = usable_rows(photo_rows)
    if skipped_scenes + skipped_photos:
        logger.warning("selection refit: skipped %d drawn rows without a title or with an image that does not load.",
                       skipped_scenes + skipped_photos)
    if len(scene_rows) < 2 or not photo_rows:
        raise ValueError(f"refit_selection_head: only {len(scene_rows)} scene rows and {len(photo_rows)} photo rows "
                         "have a title and an image that loads; it needs at least 2 and 1.")
    model.eval()
    embedder = Embedder(model, processor, show_progress=show_progress, tower_features=tower_features)
    composed = build_scenes(scene_rows, compose_scene, f"selection-refit:{seed}")
    scene_images, scene_states = decoder_states(embedder, "refit scenes", [s["image"] for s in composed])
    photo_images, photo_states = decoder_states(embedder, "refit photos", [r["path"] for r in photo_rows])
    chosen = (member_queries(scene_images["instance_embeds"], embedder.texts([r[TITLE_FIELD] for r in scene_rows]),
                             [s["members"] for s in composed])
              + member_queries(photo_images["instance_embeds"], embedder.texts([r[TITLE_FIELD] for r in photo_rows]),
                               [[i] for i in range(len(photo_rows))]))
    states = torch.cat([scene_states, photo_states])
    targets = member_targets(chosen, states.shape[1])
    head = model.instance_decoder.selection_head

    def agreement(weight):
        return member_agreement((states @ weight.T).squeeze(-1).argmax(-1).tolist(), chosen)

    before = head.weight.detach().float().cpu().clone()  # a copy: the head is overwritten below
    weight = fit_selection_head(states, targets, initial=before, weight_decay=weight_decay)
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight.dtype))
    prior = member_prior_share(chosen, states.shape[1])
    loss = lambda w: float(selection_objective(states, targets, w, weight_decay))  # noqa: E731
    return {"images": len(chosen), "scenes": len(composed), "photos": len(photo_rows),
            "skipped_rows": skipped_scenes + skipped_photos, "seed": seed,
            "weight_decay": weight_decay, "loss_before": loss(before), "loss_after": loss(weight),
            "agreement_before": agreement(before), "agreement_after": agreement(weight), "top_query_share": prior}


__all__ = ["DatasetRows", "decoder_states", "fit_selection_head", "member_targets", "refit_selection_head",
           "selection_objective", "usable_rows"]
