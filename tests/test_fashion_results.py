"""The committed fashion results (benchmarks/results/fashion.json) are what docs/fashion.md shows, and they were
measured on the recipe that training/configs/fashion.yaml commits."""

import json
import os

import yaml
from conftest import REPO_ROOT

from benchmarks.fashion import markdown_table
from benchmarks.records import RESULTS
# Paths of the run (where the model and the cache went), not settings of the recipe.
RUN_PATHS = {"output_dir", "feature_cache_dir"}


def _results():
    with open(os.path.join(RESULTS, "fashion.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _readme():
    with open(os.path.join(REPO_ROOT, "docs", "fashion.md"), encoding="utf-8") as handle:
        return handle.read()


def test_the_readme_table_is_the_committed_json():
    table = markdown_table(_results())
    with open(os.path.join(RESULTS, "fashion.md"), encoding="utf-8") as handle:
        assert handle.read().strip() == table
    assert table in _readme(), "docs/fashion.md's fashion table differs from benchmarks/results/fashion.json"


def test_the_readme_headline_figure_is_the_json():
    f1 = _results()["models"]["fashion"]["metrics"]["zero_shot/weighted_f1"]
    assert f"zero-shot articleType weighted F1 of **{f1:.3f}**" in _readme()


def test_the_results_were_measured_on_the_committed_recipe():
    with open(os.path.join(REPO_ROOT, "training", "configs", "fashion.yaml"), encoding="utf-8") as handle:
        recipe = yaml.safe_load(handle)
    measured = _results()["models"]["fashion"]["config"]
    assert measured["model"] == recipe["model"]
    assert measured["data"] == recipe["data"]
    for key, value in recipe["training"].items():
        if key not in RUN_PATHS:
            assert measured["training"][key] == value, key
