"""
The from-scratch comparison (64-px image tower; docs/results.md, "Earlier"): its committed reports are the docs'
tables. The script that ran it is gone (superseded by `python -m benchmarks.eclip_vs_clip_pretrained`), so the tables
are rebuilt here from the JSON with the studies' shared formatting. Also what the studies rely on: `run_pretraining`'s
callbacks (their validation probes) and per-query ranks that reproduce the retrieval metric (what they resample).
"""

import json
import math
import os

import numpy as np
import pytest
import torch

from benchmarks.stats import ratio_cell
from conftest import REPO_ROOT

torch.set_num_threads(1)

# The variants of the committed seed-0 report: the first design and the fixed recipe, each with its baseline.
REPORTED_VARIANTS = ("clip", "eclip", "eclip_no_intra", "eclip_no_selection", "clip_scene", "eclip_scene_matched",
                     "eclip_scene_matched_no_intra", "eclip_scene_matched_no_selection")


def bootstrap_table(report: dict) -> str:
    """docs/results.md's table of a from-scratch report: per variant with a paired bootstrap, its scene-retrieval
    ratios to its baseline with their 95 % intervals."""
    lines = ["| variant (vs baseline) | scene R@1 | scene R@10 | scene MRR |", "| --- | ---: | ---: | ---: |"]
    for name, data in report["variants"].items():
        if data.get("scene_retrieval_bootstrap"):
            metrics = data["scene_retrieval_bootstrap"]["metrics"]
            cells = [ratio_cell(metrics[key]) for key in ("recall@1", "recall@10", "mrr")]
            lines.append(f"| `{name}` (vs `{data['baseline']}`) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("report_path", ["eclip_vs_clip.json",
                                         os.path.join("eclip_vs_clip_seed1", "eclip_vs_clip.json")])
def test_committed_results_match_the_readme(report_path):
    """docs/results.md keeps the from-scratch comparison as its bootstrap tables, from committed JSON of its runs."""
    path = os.path.join(REPO_ROOT, "benchmarks", "results", report_path)
    with open(path, encoding="utf-8") as handle:
        report = json.load(handle)
    with open(os.path.join(REPO_ROOT, "docs", "results.md"), encoding="utf-8") as handle:
        readme = handle.read()
    if report_path == "eclip_vs_clip.json":
        assert set(REPORTED_VARIANTS) <= set(report["variants"])
    for name, data in report["variants"].items():  # every variant is reported next to its own baseline
        assert data["baseline"] in report["variants"]
        assert name == data["baseline"] or data["ratio_to_baseline"]
    steps = {data["train"]["steps"] for data in report["variants"].values()}
    assert steps == {report["settings"]["steps"]}, "every variant must train for the same number of steps"
    table = bootstrap_table(report)
    assert table.count("\n") > 2, f"{report_path} has no variant with a bootstrap"
    assert table in readme, f"the docs/results.md's bootstrap table differs from {report_path}"
    for data in report["variants"].values():
        assert all(v is None or math.isfinite(v) for v in data["metrics"].values())


def test_run_pretraining_calls_callbacks_and_returns_the_log(tmp_path):
    from transformers import TrainerCallback

    from eclip.training.pretrain import load_config, run_pretraining

    config = load_config(os.path.join(REPO_ROOT, "training", "configs", "tiny.yaml"))
    config["training"].update(output_dir=str(tmp_path / "model"), max_steps=3)
    seen = []

    class Steps(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen.append((state.global_step, type(model).__name__))

    summary = run_pretraining(config, callbacks=[Steps()])
    assert seen == [(1, "EclipModel"), (2, "EclipModel"), (3, "EclipModel")]
    assert summary["steps"] == 3 and summary["output_dir"] == str(tmp_path / "model")
    assert {"loss", "loss_itc", "loss_inter", "loss_intra", "loss_selection"} <= set(summary["final_losses"])
    assert [entry["step"] for entry in summary["log_history"] if "loss" in entry] == [1, 2, 3]
    assert os.path.isfile(tmp_path / "model" / "model.safetensors")


def test_first_relevant_ranks_reproduce_the_retrieval_metric():
    """The per-query ranks the bootstrap resamples give the same R@k and MRR as the evaluation's metric module."""
    from eclip.training.evaluation.scenes import first_relevant_ranks
    from modeling_eclip.metrics import load_metric

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 30))
    relevant = [sorted(rng.choice(30, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(40)]
    ranks = first_relevant_ranks(scores, relevant)
    expected = load_metric("retrieval").compute(scores=scores.tolist(), relevant=relevant, k_values=(1, 10))
    assert (ranks <= 1).mean() == pytest.approx(expected["recall@1"])
    assert (ranks <= 10).mean() == pytest.approx(expected["recall@10"])
    assert (1.0 / ranks).mean() == pytest.approx(expected["mrr"])
