"""Binary match / no-match metrics for scored pairs (e.g. same-product verification)."""

import datasets
import numpy as np
from sklearn.metrics import precision_recall_curve, precision_recall_fscore_support, roc_auc_score

from modeling_eclip.metrics import base  # the module, not its class: evaluate loads a module's first Metric class

_DESCRIPTION = """
Metrics for pair matching where each pair has a score (higher = more likely a
match) and a 0/1 label. A pair is predicted a match when score >= threshold.

precision / recall / f1: at `threshold`.
roc_auc: threshold-free ranking quality.
recall_at_precision: the highest recall over all operating points (thresholds)
whose precision is >= `target_precision`; 0.0 if no threshold reaches it.
threshold: the threshold used for precision / recall / f1.

Tune the threshold on the validation split with `best_f1_threshold` and pass it
for test. If `threshold` is None the F1-maximising threshold is searched on the
very data being scored, which is optimistic: use that only on validation.
"""

_KWARGS_DESCRIPTION = """
Args:
    scores (`list` of `float`): match score per pair.
    references (`list` of `int`): 1 for a true match, 0 otherwise; both classes must occur.
    threshold (`float`, optional): decision threshold. None = pick the
        F1-maximising threshold on these inputs (validation only, see above).
    target_precision (`float`, defaults to 0.95): precision floor for recall_at_precision.

Returns:
    `precision`, `recall`, `f1`, `roc_auc`, `recall_at_precision`, `threshold`: floats.

Examples:
    >>> metric = evaluate.load("modeling_eclip/metrics/pair_matching")
    >>> out = metric.compute(scores=[0.1, 0.4, 0.6, 0.9], references=[0, 0, 1, 1], threshold=0.5)
    >>> out["f1"], out["roc_auc"]
    (1.0, 1.0)
"""

def _validate(scores, labels):
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must be 1-D and equally long, got {scores.shape} and {labels.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not labels.any():
        raise ValueError("labels contain no positive pair; precision/recall are undefined")
    return scores, labels.astype(np.int64)


def best_f1_threshold(scores, labels):
    """Return `(threshold, f1)` maximising F1 for the rule `score >= threshold`.

    Every distinct score is a candidate (sklearn's precision_recall_curve), so the
    result is exact on this data. On equal F1 the lowest such threshold wins.
    Tune on the validation split and pass the threshold to test-time scoring;
    tuning on test inflates the reported F1.
    """
    scores, labels = _validate(scores, labels)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    # The last PR point (precision=1, recall=0) has no threshold.
    p, r = precision[:-1], recall[:-1]
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


class PairMatching(base.EclipMetric):
    DESCRIPTION, INPUTS_DESCRIPTION, CITATION = _DESCRIPTION, _KWARGS_DESCRIPTION, base.SKLEARN_CITATION
    FEATURES = {"scores": datasets.Value("float64"), "references": datasets.Value("int64")}

    def _compute(self, scores, references, threshold=None, target_precision=0.95):
        scores, labels = _validate(scores, references)
        if labels.all():
            raise ValueError("references contain no negative pair; roc_auc is undefined")
        if not 0.0 < target_precision <= 1.0:
            raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
        if threshold is None:
            threshold, _ = best_f1_threshold(scores, labels)
        p, r, f1, _ = precision_recall_fscore_support(
            labels, (scores >= threshold).astype(np.int64), average="binary", zero_division=0
        )
        pr_precision, pr_recall, _ = precision_recall_curve(labels, scores)
        # The appended (precision=1, recall=0) point makes this 0.0 when no threshold qualifies.
        recall_at_precision = pr_recall[pr_precision >= target_precision].max()
        return {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f1),
            "roc_auc": float(roc_auc_score(labels, scores)),
            "recall_at_precision": float(recall_at_precision),
            "threshold": float(threshold),
        }
