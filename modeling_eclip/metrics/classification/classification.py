"""Accuracy plus macro / weighted F1 for single-label classification."""

import datasets
from sklearn.metrics import accuracy_score, f1_score

from modeling_eclip.metrics import base  # the module, not its class: evaluate loads a module's first Metric class

_DESCRIPTION = """
Single-label classification metrics computed with scikit-learn:
accuracy, macro F1 (unweighted mean of per-class F1, so rare classes count as
much as frequent ones) and weighted F1 (per-class F1 weighted by support).
Classes with no predicted or no true samples get F1 = 0 (zero_division=0)
instead of a warning.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids.
    labels (`list` of `int`, optional): classes to average F1 over; defaults to
        every class seen in predictions or references. Pass the full label set
        so a class absent from this batch still counts (as F1 = 0) in macro F1.
        Accuracy ignores it.

Returns:
    `accuracy`, `macro_f1`, `weighted_f1`: floats in [0, 1].

Examples:
    >>> metric = evaluate.load("modeling_eclip/metrics/classification")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])["accuracy"]
    0.6666666666666666
"""

class Classification(base.EclipMetric):
    DESCRIPTION, INPUTS_DESCRIPTION, CITATION = _DESCRIPTION, _KWARGS_DESCRIPTION, base.SKLEARN_CITATION
    FEATURES = {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}

    def _compute(self, predictions, references, labels=None):
        f1 = {
            f"{avg}_f1": float(f1_score(references, predictions, labels=labels, average=avg, zero_division=0))
            for avg in ("macro", "weighted")
        }
        return {"accuracy": float(accuracy_score(references, predictions)), **f1}
