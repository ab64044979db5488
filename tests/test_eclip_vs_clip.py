"""The ECLIP-vs-CLIP benchmark's parts: `run_pretraining` with callbacks, the validation probe, the report."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, tiny_config

torch.set_num_threads(1)


def _benchmark():
    path = os.path.join(REPO_ROOT, "benchmarks", "eclip_vs_clip.py")
    spec = importlib.util.spec_from_file_location("eclip_vs_clip", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report():
    """The benchmark's report module (loading the script first puts the repository on sys.path)."""
    _benchmark()
    from benchmarks import eclip_vs_clip_report

    return eclip_vs_clip_report


@pytest.fixture(scope="module")
def probe_data(data_dir):
    from eclip.training.compositor import compose_scene
    from eclip.training.evaluation import build_scenes, load_split_rows

    rows = load_split_rows(data_dir, ["validation"], 16, 0)["validation"]
    return rows, build_scenes(rows, compose_scene, 0)


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


def test_probe_reports_a_collapsed_decoder(processor, probe_data):
    """Identical queries give identical instances: the probe must say so (one query takes every product)."""
    from modeling_eclip import EclipModel

    rows, scenes = probe_data
    torch.manual_seed(0)
    model = EclipModel(tiny_config()).eval()
    with torch.no_grad():
        model.instance_decoder.queries.embedding.weight[:] = model.instance_decoder.queries.embedding.weight[0]
    probe = _benchmark().ValidationProbe(processor, rows, scenes, every=1)
    entry = probe.measure(model, step=0)
    assert entry["top_query_share"] == 1.0 and entry["query_usage_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert entry["instance_similarity"] == pytest.approx(1.0, abs=1e-4)
    expected_distinct = sum(1 / len(scene["members"]) for scene in scenes) / len(scenes)
    assert entry["distinct_query_rate"] == pytest.approx(expected_distinct)
    assert 0.0 <= entry["scene_r10"] <= 1.0 and 0.0 <= entry["retrieval_r1"] <= entry["retrieval_r10"] <= 1.0
    assert model.training is False and probe.history == [entry]


def test_probe_on_the_clip_baseline_and_restores_train_mode(processor, probe_data):
    from modeling_eclip import EclipModel

    rows, scenes = probe_data
    model = EclipModel(tiny_config(use_instance_decoder=False)).train()
    entry = _benchmark().ValidationProbe(processor, rows, scenes, every=1).measure(model, step=5)
    assert model.training is True
    assert entry["step"] == 5 and "top_query_share" not in entry
    # 16 products: R@10 of a random gallery ranking is 10/16 per query on average; ours must be a real ranking.
    assert 0.0 <= entry["retrieval_r10"] <= 1.0


def test_probe_recall_on_a_hand_ranked_case(processor, probe_data):
    """The probe's recall@k is the evaluation suite's: any relevant item among the top k."""
    rows, scenes = probe_data
    probe = _benchmark().ValidationProbe(processor, rows, scenes, every=1)
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.1]])  # rankings: [0,2,1], [2,1,0], [0,1,2]
    relevant = [[0], [0], [1, 2]]
    recall = probe.retrieval.compute(scores=scores.tolist(), relevant=relevant, k_values=(1, 2, 3))
    assert recall["recall@1"] == pytest.approx(1 / 3)
    assert recall["recall@2"] == pytest.approx(2 / 3)
    assert recall["recall@3"] == 1.0
    assert probe._recall(scores, relevant) == (pytest.approx(1 / 3), 1.0)


def test_plateau_and_markdown_report():
    bench = _benchmark()
    probe = [{"step": s, "scene_r10": v} for s, v in [(0, 0.1), (100, 0.3), (200, 0.4), (300, 0.41), (400, 0.40)]]
    plateau = bench._plateau(probe, "scene_r10")
    assert plateau["best_before_last_quarter"] == 0.41 and plateau["best_in_last_quarter"] == 0.40
    assert plateau["gain_in_last_quarter"] == pytest.approx(-0.01)
    report = {"variants": {
        "clip": {"metrics": {"a/x": 0.5, "a/y": None}},
        "eclip": {"metrics": {"a/x": 0.6, "a/y": 0.1}, "ratio_to_baseline": {"a/x": 1.2, "a/y": None}},
    }}
    table = bench.report_markdown(report, [("a/x", "metric x"), ("a/y", "metric y")])
    assert "| metric x | 0.500 | 0.600 (1.20x) |" in table
    assert "| metric y | n/a | 0.100 |" in table


def test_reuse_carries_over_an_earlier_reports_variants_only_with_the_same_settings(tmp_path):
    bench = _benchmark()
    settings = {"steps": 500, "batch_size": 64, "learning_rate": 5e-4, "image_size": 64, "scene_probability": 0.5,
                "seed": 0, "probe_every": 50, "probe_size": 400, "logging_steps": 10, "eval_limit": 2000,
                "jobs": 2, "threads": 1, "train_rows": 100, "data_dir": "/data", "argv": []}
    train = {"steps": 500, "wall_time_s": 60.0, "final_losses": {}, "num_skipped_images": 0, "loss_curve": [],
             "probe": [{"step": s, "retrieval_r10": 0.1, "scene_r10": 0.1} for s in (0, 250, 500)]}
    entry = {"description": "CLIP", "eclip_overrides": {}, "train": train, "eval_wall_time_s": 30.0,
             "metrics": {"a/x": 0.5}, "eval_notes": [], "baseline": "clip"}
    previous = {"command": "python benchmarks/eclip_vs_clip.py", "settings": {**settings, "jobs": 4},
                "variants": {"clip": entry}}
    path = tmp_path / "eclip_vs_clip.json"
    path.write_text(json.dumps(previous))
    carried = bench.carried_over(str(path), ["clip", "eclip"], settings)  # `eclip` is not in it: trained anew
    assert list(carried) == ["clip"] and carried["clip"]["carried_over_from"] == "python benchmarks/eclip_vs_clip.py"
    assert bench.carried_over(str(tmp_path / "missing.json"), ["clip"], settings) == {}
    with pytest.raises(SystemExit, match="made with"):  # another budget is never mixed in
        bench.carried_over(str(path), ["clip"], {**settings, "steps": 400})

    # A new variant's ratios are taken against the carried-over baseline.
    run = tmp_path / "runs" / "eclip"
    (run / "eval").mkdir(parents=True)
    (run / "train.json").write_text(json.dumps({**train, "description": "ECLIP", "eclip_overrides": {}}))
    (run / "eval" / "results.json").write_text(json.dumps({"tasks": {"a": {"x": 0.6}}, "wall_time_s": 40.0}))
    report = bench.build_report(["clip", "eclip"], str(tmp_path / "runs"), settings, {}, carried)
    assert report["variants"]["eclip"]["ratio_to_baseline"]["a/x"] == pytest.approx(1.2)
    assert report["variants"]["clip"]["carried_over_from"] and "ratio_to_baseline" not in report["variants"]["clip"]
    assert report["compute_time_s"] == pytest.approx(60 + 30 + 60 + 40)
    assert "`clip` is carried over" in _markdown(bench, report, tmp_path)


def _markdown(bench, report, tmp_path) -> str:
    report = {**report, "command": "x", "wall_time_s": 60.0, "hardware": {"processor": "cpu", "cpu_count": 2, "jobs_in_parallel": 2,
                                                     "torch_threads_per_job": 1}}
    bench.write_markdown(report, str(tmp_path / "report.md"))
    return (tmp_path / "report.md").read_text()


def test_variants_pin_the_objective_options_whatever_the_default_recipe():
    """`eclip` stays the first design (max matching, own-product targets) when the default config turns fixes on."""
    bench = _benchmark()
    settings = {"image_size": 64, "data_dir": "/data", "steps": 10, "batch_size": 8, "learning_rate": 1e-3,
                "logging_steps": 1, "seed": 0, "scene_probability": 0.5}
    fields = {name: bench._pretraining_config(name, settings, "/tmp/m")["model"]["eclip"]
              for name in ("clip", "eclip", "eclip_scene_matched")}
    assert fields["eclip"]["instance_matching"] == "max" and not fields["eclip"]["scene_positives"]
    assert not fields["eclip"]["instance_residual"] and fields["clip"]["use_instance_decoder"] is False
    assert fields["eclip_scene_matched"]["instance_matching"] == "one_to_one"
    assert fields["eclip_scene_matched"]["scene_positives"] and fields["eclip_scene_matched"]["instance_residual"]
    # the fixed recipe is EclipConfig's default (one definition), which the YAML of eclip-pretrain leaves alone
    from modeling_eclip import EclipConfig
    from modeling_eclip.configuration_eclip import FIRST_DESIGN
    from eclip.training.pretrain import DEFAULT_CONFIG, load_config

    defaults = EclipConfig()
    assert {name: fields["eclip_scene_matched"][name] for name in FIRST_DESIGN} == {
        name: getattr(defaults, name) for name in FIRST_DESIGN}
    assert not set(FIRST_DESIGN) & set(load_config(DEFAULT_CONFIG)["model"]["eclip"])


def test_first_relevant_ranks_reproduce_the_retrieval_metric():
    """The per-query ranks the bootstrap resamples give the same R@k and MRR as the evaluation's metric module."""
    from modeling_eclip.metrics import load_metric
    from eclip.training.evaluation import first_relevant_ranks

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 30))
    relevant = [sorted(rng.choice(30, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(40)]
    ranks = first_relevant_ranks(scores, relevant)
    expected = load_metric("retrieval").compute(scores=scores.tolist(), relevant=relevant, k_values=(1, 10))
    assert (ranks <= 1).mean() == pytest.approx(expected["recall@1"])
    assert (ranks <= 10).mean() == pytest.approx(expected["recall@10"])
    assert (1.0 / ranks).mean() == pytest.approx(expected["mrr"])


def test_paired_bootstrap_interval():
    bench = _benchmark()
    rng = np.random.default_rng(1)
    base = rng.integers(1, 50, size=500)
    same = bench.paired_bootstrap(base, base.copy())["metrics"]["recall@10"]
    assert same["ratio"] == 1.0 and same["ratio_ci95"] == [1.0, 1.0] and same["share_of_resamples_ahead"] == 0.0
    better = np.where(rng.random(500) < 0.3, 1, base)  # 30 % of the queries now find the product first
    result = bench.paired_bootstrap(better, base)["metrics"]
    assert result["recall@1"]["ratio_ci95"][0] > 1.0 and result["recall@1"]["share_of_resamples_ahead"] == 1.0
    low, high = result["mrr"]["ratio_ci95"]
    assert low <= result["mrr"]["ratio"] <= high
    with pytest.raises(ValueError, match="same queries"):
        bench.paired_bootstrap(base[:10], base)
    table = _report().bootstrap_markdown({"variants": {"b": {"baseline": "b"}, "m": {
        "baseline": "b", "scene_retrieval_bootstrap": bench.paired_bootstrap(better, base)}}})
    assert table.splitlines()[-1].startswith("| `m` (vs `b`) | ")


def test_cli_rejects_an_unknown_variant():
    with pytest.raises(SystemExit, match="siglip"):
        _benchmark().main(["--variants", "clip,siglip", "--output-dir", "/nonexistent/never-created"])
@pytest.mark.parametrize("report_path", ["eclip_vs_clip.json", os.path.join("eclip_vs_clip_seed1", "eclip_vs_clip.json")])
def test_committed_results_match_the_readme(report_path):
    """docs/results.md keeps the from-scratch comparison as its bootstrap tables, from committed JSON of runs of the script."""
    path = os.path.join(REPO_ROOT, "benchmarks", "results", report_path)
    with open(path, encoding="utf-8") as handle:
        report = json.load(handle)
    with open(os.path.join(REPO_ROOT, "docs", "results.md"), encoding="utf-8") as handle:
        readme = handle.read()
    bench = _benchmark()
    if report_path == "eclip_vs_clip.json":
        assert set(bench.DEFAULT_VARIANTS) <= set(report["variants"])
    for name, data in report["variants"].items():  # every variant is reported next to its own baseline
        assert data["baseline"] in report["variants"]
        assert name == data["baseline"] or data["ratio_to_baseline"]
    steps = {data["train"]["steps"] for data in report["variants"].values()}
    assert steps == {report["settings"]["steps"]}, "every variant must train for the same number of steps"
    assert _report().bootstrap_markdown(report) in readme, f"the docs/results.md's bootstrap table differs from {report_path}"
    for data in report["variants"].values():
        assert all(v is None or math.isfinite(v) for v in data["metrics"].values())
