"""Local `evaluate` metric modules, loadable without network access.

Each metric lives in ``<name>/<name>.py`` next to this file; ``evaluate.load`` on a
folder path never contacts the Hub.
"""

import os

import evaluate

from .pair_matching.pair_matching import best_f1_threshold

METRIC_NAMES = ("retrieval", "classification", "clustering", "pair_matching", "entity_f1")

_METRICS_DIR = os.path.dirname(os.path.abspath(__file__))

__all__ = ["METRIC_NAMES", "best_f1_threshold", "load_metric"]


def load_metric(name: str, **load_kwargs) -> evaluate.EvaluationModule:
    """Load one of ``METRIC_NAMES`` from its local folder; kwargs go to ``evaluate.load``."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; valid names: {', '.join(METRIC_NAMES)}")
    return evaluate.load(os.path.join(_METRICS_DIR, name), **load_kwargs)
