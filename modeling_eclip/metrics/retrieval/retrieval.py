"""Recall@k and MRR for query x gallery retrieval (CLIP-style image<->text retrieval)."""

import datasets
import numpy as np

from modeling_eclip.metrics import base  # the module, not its class: evaluate loads a module's first Metric class

_DESCRIPTION = """
Retrieval metrics over a query x gallery similarity matrix.

For each query the gallery is ranked by score, descending. Ties are broken by a
stable sort, i.e. the gallery item with the lower index ranks first. This is
deterministic but optimistic when a relevant item ties with an irrelevant item
of higher index, so a degenerate model that scores everything equally still
gets rank-by-index rather than a random rank.

recall@k: fraction of queries with ANY relevant item in the top-k (the standard
CLIP retrieval R@k, not the fraction of relevant items retrieved).
mrr: mean over queries of 1 / rank of the FIRST (best-ranked) relevant item.
"""

_KWARGS_DESCRIPTION = """
Args:
    scores (`list` of `list` of `float`): one row per query, one score per gallery
        item (higher = more similar). All rows must have the same length.
    relevant (`list` of `list` of `int`): per query, the gallery indices that count
        as correct; at least one per query, several allowed.
    k_values (`tuple` of `int`, defaults to `(1, 5, 10)`): cut-offs for recall@k.

Returns:
    `recall@k` for every k in `k_values` and `mrr`, each a float in [0, 1].

Raises:
    ValueError: ragged or non-finite scores, a query with no relevant item, an
        out-of-range relevant index, or a non-positive k.

Examples:
    >>> metric = evaluate.load("modeling_eclip/metrics/retrieval")
    >>> metric.compute(scores=[[0.9, 0.1], [0.2, 0.8]], relevant=[[0], [0]], k_values=(1,))
    {'recall@1': 0.5, 'mrr': 0.75}
"""

_CITATION = """
@inproceedings{radford2021clip,
  title={Learning Transferable Visual Models From Natural Language Supervision},
  author={Radford, Alec and others},
  booktitle={ICML},
  year={2021}
}
"""


class Retrieval(base.EclipMetric):
    DESCRIPTION, INPUTS_DESCRIPTION, CITATION = _DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION
    FEATURES = {
        # float64, not float32: casting can create ties that change the ranking.
        "scores": datasets.Sequence(datasets.Value("float64")),
        "relevant": datasets.Sequence(datasets.Value("int64")),
    }

    def _compute(self, scores, relevant, k_values=(1, 5, 10)):
        k_values = tuple(int(k) for k in k_values)
        if any(k < 1 for k in k_values):
            raise ValueError(f"k_values must be positive, got {k_values}")
        n_gallery = {len(row) for row in scores}
        if len(n_gallery) != 1:
            raise ValueError(f"every query needs one score per gallery item; got row lengths {sorted(n_gallery)}")
        n_gallery = n_gallery.pop()
        sim = np.asarray(scores, dtype=np.float64)
        if not np.isfinite(sim).all():
            raise ValueError("scores contain NaN or inf")

        is_rel = np.zeros(sim.shape, dtype=bool)
        for q, rel in enumerate(relevant):
            if len(rel) == 0:
                raise ValueError(f"query {q} has no relevant gallery item")
            rel = np.asarray(rel)
            if rel.min() < 0 or rel.max() >= n_gallery:
                raise ValueError(f"query {q} has relevant index out of range [0, {n_gallery}): {rel.tolist()}")
            is_rel[q, rel] = True

        order = np.argsort(-sim, axis=1, kind="stable")
        # 0-based rank of the first relevant item; every row has one, so argmax finds it.
        first = np.take_along_axis(is_rel, order, axis=1).argmax(axis=1)
        out = {f"recall@{k}": float(np.mean(first < k)) for k in k_values}
        out["mrr"] = float(np.mean(1.0 / (first + 1)))
        return out
