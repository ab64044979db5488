"""NMI and ARI between cluster assignments and ground-truth classes."""

import datasets
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from modeling_eclip.metrics import base  # the module, not its class: evaluate loads a module's first Metric class

_DESCRIPTION = """
External clustering quality computed with scikit-learn. Both scores are
invariant to permutations of the cluster ids, so predicted ids need not match
class ids.

nmi: normalized mutual information (arithmetic-mean normalisation), in [0, 1].
ari: adjusted Rand index, 1 for a perfect match, ~0 for random labelling,
can be negative.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): cluster id per sample.
    references (`list` of `int`): class id per sample.

Returns:
    `nmi`, `ari`: floats.

Examples:
    >>> metric = evaluate.load("modeling_eclip/metrics/clustering")
    >>> metric.compute(predictions=[1, 1, 0, 0], references=[0, 0, 1, 1])
    {'nmi': 1.0, 'ari': 1.0}
"""

_CITATION = """
@article{hubert1985ari,
  title={Comparing partitions},
  author={Hubert, Lawrence and Arabie, Phipps},
  journal={Journal of Classification},
  volume={2},
  pages={193--218},
  year={1985}
}
"""


class Clustering(base.EclipMetric):
    DESCRIPTION, INPUTS_DESCRIPTION, CITATION = _DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION
    FEATURES = {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}

    def _compute(self, predictions, references):
        return {
            "nmi": float(normalized_mutual_info_score(references, predictions)),
            "ari": float(adjusted_rand_score(references, predictions)),
        }
