"""Accuracy plus macro / weighted F1 for single-label classification."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score, f1_score

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

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, labels=None):
        f1 = {
            f"{avg}_f1": float(f1_score(references, predictions, labels=labels, average=avg, zero_division=0))
            for avg in ("macro", "weighted")
        }
        return {"accuracy": float(accuracy_score(references, predictions)), **f1}
