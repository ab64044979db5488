"""What the metric modules share: the `evaluate` description built from class attributes, and citations.

Each metric folder stays an `evaluate` module (`evaluate.load(folder)`); it imports this file as a library module,
so loading one needs the `eclip` package installed (as `modeling_eclip.metrics.load_metric` does).
"""

import datasets
import evaluate

SKLEARN_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


class EclipMetric(evaluate.Metric):
    """
    An `evaluate.Metric` described by class attributes: `DESCRIPTION`, `INPUTS_DESCRIPTION`, `CITATION` and
    `FEATURES` (input column -> `datasets` feature); `evaluate` exposes them as the lower-case properties. The class
    docstring is the description and the inputs', as `evaluate.utils.file_utils.add_start_docstrings` would make it.
    """

    DESCRIPTION = INPUTS_DESCRIPTION = CITATION = ""
    FEATURES: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__doc__ = cls.DESCRIPTION + cls.INPUTS_DESCRIPTION + (cls.__doc__ or "")

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.DESCRIPTION,
            citation=self.CITATION,
            inputs_description=self.INPUTS_DESCRIPTION,
            features=datasets.Features(self.FEATURES),
        )


__all__ = ["SKLEARN_CITATION", "EclipMetric"]
