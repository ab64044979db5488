"""The pretrained-tower comparison (`python -m benchmarks.eclip_vs_clip_pretrained`): which runs it trains, the
bootstrap pooled over seeds (`benchmarks.stats`), its records, tables and figure, and the selection probe."""

import json
import os

import numpy as np
import pytest
from conftest import REPO_ROOT

from benchmarks import eclip_vs_clip_pretrained as bench
from benchmarks import records, scoring, stats


def test_every_seed_for_the_baseline_and_the_default_one_for_ablations():
    pairs = bench.runs(["clip", "eclip", "eclip_no_intra"], [0, 1, 2])
    assert sorted(pairs) == sorted([("clip", 0), ("eclip", 0), ("eclip_no_intra", 0), ("clip", 1), ("eclip", 1),
                                    ("clip", 2), ("eclip", 2)])


def test_a_derived_variant_runs_every_seed_and_needs_its_base_model(tmp_path):
    assert ("eclip_refit_selection", 2) in bench.runs(["clip", "eclip", "eclip_refit_selection"], [0, 1, 2])
    listed = list(bench.DEFAULT_VARIANTS)
    assert listed.index(bench.DERIVED["eclip_refit_selection"]) < listed.index("eclip_refit_selection")
    folder = tmp_path / "runs" / "eclip_refit_selection" / "seed3"
    with pytest.raises(SystemExit, match="run eclip for seed 3 first"):
        bench.refit("eclip_refit_selection", 3, {"data_dir": "/nonexistent", "train_limit": None, "features": None},
                    str(folder))
    assert not folder.exists()


def _outcomes(rng, n, hit_rate):
    ranks = np.where(rng.random(n) < hit_rate, 1, rng.integers(2, 50, n))
    return {"t2i_rank": ranks, "scene_standard_rank": ranks, "zero_shot_correct": (ranks == 1).astype(float)}


def test_pooled_bootstrap_pools_queries_and_brackets_the_true_ratio():
    rng = np.random.default_rng(0)
    model = {s: _outcomes(rng, 400, 0.6) for s in (0, 1, 2)}
    base = {s: _outcomes(rng, 400, 0.3) for s in (0, 1, 2)}
    result = bench.pooled_bootstrap(model, base, resamples=500)
    entry = result["measures"]["scene_standard_r1"]
    pooled = entry["pooled"]
    hits = lambda runs: np.mean(np.concatenate([(runs[s]["scene_standard_rank"] <= 1) for s in (0, 1, 2)]))
    assert pooled["model"] == pytest.approx(hits(model)) and pooled["baseline"] == pytest.approx(hits(base))
    assert pooled["queries"] == 1200
    low, high = pooled["ratio_ci95"]
    assert low < pooled["ratio"] < high and low < 2.0 < high and low > 1.0
    # Pooling three seeds narrows the interval against any one seed's.
    for seed in ("0", "1", "2"):
        seed_low, seed_high = entry["per_seed"][seed]["ratio_ci95"]
        assert high - low < seed_high - seed_low


def test_scene_sets_average_per_product_and_resample_with_it():
    """A product named in several scene sets is one query: its hits average over the sets, resampled whole."""
    sets_model = np.array([[1, 1, 9, 9], [1, 9, 9, 9], [1, 1, 1, 9]])  # 3 sets x 4 products
    sets_base = np.array([[1, 9, 9, 9], [9, 9, 9, 9], [1, 9, 9, 9]])
    t2i = np.array([1, 2, 3, 4])
    model = {0: {"t2i_rank": t2i, "scene_standard_rank": sets_model}}
    base = {0: {"t2i_rank": t2i, "scene_standard_rank": sets_base}}
    pooled = bench.pooled_bootstrap(model, base, resamples=300)["measures"]["scene_standard_r1"]["pooled"]
    assert pooled["queries"] == 4  # products, not product-set pairs
    assert pooled["model"] == pytest.approx(6 / 12) and pooled["baseline"] == pytest.approx(2 / 12)
    np.testing.assert_allclose(bench.per_query_values(lambda r: (r <= 1).astype(float), sets_model),
                               [1.0, 2 / 3, 1 / 3, 0.0])
    # The only product the baseline ever finds (product 0) is found by the model in every set: a resample without
    # product 0 has a zero baseline, every other resample a ratio of at least 1.
    assert pooled["ratio_ci95"][0] >= 1.0
    one_set = {0: {"t2i_rank": t2i, "scene_standard_rank": sets_base[:1]}}
    with pytest.raises(ValueError, match="same scene sets"):
        bench.pooled_bootstrap(model, one_set, resamples=10)


def test_the_seed_level_interval_widens_with_the_spread_between_seeds():
    steady, spread = stats.seed_level_interval([1.1, 1.1, 1.1]), stats.seed_level_interval([0.8, 1.1, 1.5])
    assert steady == pytest.approx([1.1, 1.1])
    assert spread[0] < 1.0 < 1.1 < spread[1]
    # exp(mean log -+ t_{0.975, 2} * sd / sqrt(3)), worked by hand for ratios e^0, e^0.2, e^0.4
    t = 4.302652729911275
    expected = np.exp(0.2 + np.array([-t, t]) * 0.2 / np.sqrt(3))
    assert stats.seed_level_interval(list(np.exp([0.0, 0.2, 0.4]))) == pytest.approx(expected.tolist())
    assert stats.seed_level_interval([1.2]) is None and stats.seed_level_interval([1.2, None]) is None
    assert stats.seed_level_interval([1.2, 0.0]) is None


def test_the_prior_is_the_query_picked_most_often_over_every_set_and_is_averaged_per_product():
    # 2 sets x 3 products x K=3: query 1 is picked 4 times in all, query 0 three times (but most often in set 0).
    picked = np.array([[[1, 0, 0], [1, 0, 0], [0, 1, 0]],
                       [[0, 1, 0], [1, 1, 0], [0, 1, 0]]], dtype=bool)
    head = np.zeros((2, 3), dtype=int)
    _, prior_hit = scoring.selection_hits({"selection_picked": picked, "selection_head": head})
    np.testing.assert_allclose(prior_hit.mean(axis=0), [0.5, 0.5, 1.0])
    _, prior_hit = scoring.selection_hits({"selection_picked": picked[:1], "selection_head": head[:1]})
    np.testing.assert_allclose(prior_hit[0], [1.0, 1.0, 0.0])  # photos (`default_refit`): one set, no averaging


def test_selection_hits_count_the_heads_query_against_the_most_picked_one():
    picked = np.zeros((2, 3, 4), dtype=bool)  # 2 sets x 3 scenes x 4 queries
    picked[:, :, 1] = True  # query 1 is picked in every scene: the prior
    picked[0, 0, 3] = picked[1, 2, 0] = True
    head = np.array([[3, 2, 1], [0, 0, 0]])
    head_hit, prior_hit = scoring.selection_hits({"selection_picked": picked, "selection_head": head})
    np.testing.assert_array_equal(head_hit, [[1, 0, 1], [0, 0, 1]])
    np.testing.assert_array_equal(prior_hit, np.ones((2, 3)))
    result = bench.selection_against_prior({0: {"selection_picked": picked, "selection_head": head}}, resamples=100)
    pooled = result["agreement"]["pooled"]
    assert pooled["model"] == pytest.approx(0.5) and pooled["baseline"] == 1.0 and pooled["ratio"] == 0.5
    assert bench.selection_against_prior({0: {"t2i_rank": np.ones(3)}}) is None


def test_the_readme_shows_the_selection_against_its_prior_when_the_report_has_it():
    report = _report(seeds=(0, 1), ablations=())
    rng = np.random.default_rng(4)
    per_query = {s: {"selection_picked": rng.random((2, 50, 4)) < 0.4, "selection_head": rng.integers(0, 4, (2, 50))}
                 for s in (0, 1)}
    report["selection_against_prior"] = {"eclip": bench.selection_against_prior(per_query, resamples=100)}
    text = bench.readme_markdown(report)
    pooled = report["selection_against_prior"]["eclip"]["agreement"]["pooled"]
    row = next(line for line in text.splitlines() if line.startswith("| `eclip` |") and "/" in line)
    assert row.endswith(f"| **{stats.ratio_cell(pooled)}** | {stats.interval_text(pooled['seed_ci95'])} |")
    assert "| model | seed 0 | seed 1 | pooled ratio | across seeds |" in text


def test_records_from_before_scene_sets_read_as_one_set_and_reports_use_the_first_sets():
    old = {"t2i_rank": np.array([1, 2]), "scene_standard_rank": np.array([3, 1])}
    assert bench.scene_set_count(old) == 1
    widened = bench.first_scene_sets(old, 5)
    assert widened["scene_standard_rank"].shape == (1, 2) and widened["t2i_rank"].shape == (2,)
    five = {"t2i_rank": np.array([1, 2]), "scene_standard_rank": np.arange(10).reshape(5, 2)}
    np.testing.assert_array_equal(bench.first_scene_sets(five, 2)["scene_standard_rank"], [[0, 1], [2, 3]])
    # Set 0 is the evaluation suite's scenes (the seed itself), the others are further seeded draws.
    assert bench.scene_seed(3, 0) == 3 and len({bench.scene_seed(3, i) for i in range(5)}) == 5


def test_too_few_scene_sets_is_refused_before_loading_anything():
    with pytest.raises(SystemExit, match="--scene-sets"):
        bench.main(["--scene-sets", "0", "--output-dir", "/nonexistent/never-created"])


def test_equal_models_give_an_interval_around_one_and_a_zero_baseline_an_open_end():
    rng = np.random.default_rng(1)
    runs = {0: _outcomes(rng, 300, 0.4)}
    same = bench.pooled_bootstrap(runs, runs, resamples=200)["measures"]["t2i_r1"]["pooled"]
    assert same["ratio"] == 1.0 and same["ratio_ci95"] == [1.0, 1.0]
    never = {0: {"t2i_rank": np.full(50, 7)}}
    once = {0: {"t2i_rank": np.array([1] + [7] * 49)}}
    entry = bench.pooled_bootstrap(once, never, resamples=200)["measures"]["t2i_r1"]["pooled"]
    assert entry["ratio"] is None and entry["ratio_ci95"][1] is None
    assert "inf" in stats.ratio_cell({**entry, "ratio": 2.0})


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]])
def test_markdown_tables_have_as_many_cells_as_columns(seeds):
    entry = {"ratio": 1.25, "ratio_ci95": [1.05, None]}
    measures = {key: {"per_seed": {str(s): entry for s in seeds}, "pooled": entry} for key, _ in bench.ROWS}
    text = bench.report_markdown({"comparisons": {"eclip": {"seeds": seeds, "measures": measures}}})
    rows = [line for line in text.splitlines() if line.startswith("|")]
    columns = 1 + len(seeds) + (len(seeds) > 1)
    assert len(rows) == 2 + len(bench.ROWS)
    for row in rows:
        assert row.endswith("|") and row.count("|") == columns + 1, row
    assert "1.25x [1.05, inf]" in text


def test_a_run_record_round_trips_and_a_partial_one_does_not_count(tmp_path):
    rng = np.random.default_rng(2)
    per_query = _outcomes(rng, 40, 0.5)
    folder = str(tmp_path / "eclip" / "seed1")
    record, results = {"variant": "eclip", "seed": 1, "settings": {"steps": 360}}, {"tasks": {"zero_shot": {"f1": 0.5}}}
    bench.save_record(folder, record, results, per_query)
    assert bench.has_record(folder)
    loaded_record, loaded_results, loaded_outcomes = bench.load_record(folder)
    assert loaded_record == record and loaded_results == results
    assert sorted(loaded_outcomes) == sorted(per_query)
    np.testing.assert_array_equal(loaded_outcomes["t2i_rank"], per_query["t2i_rank"])
    (tmp_path / "eclip" / "seed1" / "outcomes.npz").unlink()
    assert not bench.has_record(folder)


def test_reuse_keeps_a_record_only_with_the_same_settings():
    """Every study's `--reuse` check: equal as written to JSON passes; any other budget stops, naming what differs."""
    settings = {"steps": 360, "batch_size": 128, "learning_rate": 3e-4, "train_limit": None, "seeds": (0, 1)}
    records.check_reuse("kept/train.json", json.loads(json.dumps(settings)), settings)
    with pytest.raises(SystemExit, match=r"kept/train\.json was made with other settings \(batch_size, steps\)"):
        records.check_reuse("kept/train.json", settings, {**settings, "steps": 300, "batch_size": 64})
    with pytest.raises(SystemExit, match="other settings"):
        records.check_reuse("matching.json", None, settings)
    assert records.command("benchmarks.eclip_vs_clip_pretrained", ["--reuse", 3]) == (
        "python -m benchmarks.eclip_vs_clip_pretrained --reuse 3")


def _report(seeds=(0, 1), ablations=("eclip_no_intra",)):
    rng = np.random.default_rng(3)
    settings = {key: 1 for key in ("steps", "batch_size", "learning_rate", "image_size", "cache_passes",
                                   "probe_every", "logging_steps", "train_limit")}
    settings["eval_limit"] = None
    settings["scene_sets"] = 1
    records, per_query = {}, {}
    for variant, seed in bench.runs(["clip", "eclip", *ablations], list(seeds)):
        metrics = {"zero_shot/accuracy": 0.5}
        if variant != "clip":
            metrics.update({bench.SELECTION + "member_agreement": 0.6, bench.SELECTION + "member_top_query_share": 0.5,
                            bench.SELECTION + "agreement": 0.3, bench.SELECTION + "top_query_share": 0.25,
                            bench.PHOTO_SELECTION + "agreement": 0.9, bench.PHOTO_SELECTION + "top_query_share": 0.5})
        train = {"wall_time_s": 600.0, "feature_cache_s": 10.0, "final_losses": {},
                 "probe": [{"step": s, "t2i_r1": 0.3, "zero_shot_accuracy": 0.5} for s in (60, 120, 180)]}
        records[(variant, seed)] = {"train": train, "metrics": metrics, "eval_wall_time_s": 120.0}
        per_query[(variant, seed)] = _outcomes(rng, 200, 0.4 if variant == "clip" else 0.5)
    return bench.build_report(records, per_query, ["clip", "eclip", *ablations], list(seeds), settings, [])


def test_readme_tables_show_pooled_levels_per_seed_ratios_ablations_and_selection():
    report = _report()
    text = bench.readme_markdown(report)
    pooled = report["comparisons"]["eclip"]["measures"]["scene_standard_r1"]["pooled"]
    across = pooled["seed_ci95"]
    assert (f"| scene retrieval R@1 | {pooled['baseline']:.3f} | {pooled['model']:.3f} | "
            f"**{stats.ratio_cell(pooled)}** | "
            f"[{across[0]:.2f}, {across[1]:.2f}] |") in text
    assert "pooled over seeds 0, 1" in text and "| measure | seed 0 | seed 1 | pooled |" in text
    assert text.count("| `eclip_no_intra` |") == 3  # its ablation, selection and wall-time rows
    assert "| `eclip` | 1 | 0.600 | 0.500 | 0.300 | 0.250 | 0.900 | 0.500 |" in text
    assert "| `clip` | 0 | 0.300 @60, 0.300 @120, 0.300 @180 | 10.0 | 2.0 |" in text
    for line in text.splitlines():  # every table row has as many cells as its header
        if line.startswith("|"):
            assert line.endswith("|")
    single = bench.readme_markdown(_report(seeds=(0,), ablations=()))
    assert "seed 0 (" in single and "Ablations" not in single


def test_the_forest_plot_is_written_whole_with_a_row_per_measure(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    report = _report(seeds=(0, 1, 2))
    drawn = []
    original = plt.subplots

    def subplots(*args, **kwargs):
        fig, ax = original(*args, **kwargs)
        drawn.append(ax)
        return fig, ax

    monkeypatch.setattr(plt, "subplots", subplots)
    path = tmp_path / "forest.png"
    bench.plot_report(report, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob("*.partial*"))
    labels = [tick.get_text() for tick in drawn[0].get_yticklabels()]
    measured = [label for key, label in bench.ROWS if key in report["comparisons"]["eclip"]["measures"]]
    assert labels == measured and "scene retrieval R@1" in labels
    assert "1x" in [tick.get_text() for tick in drawn[0].get_xticklabels()]


def test_a_report_needs_the_baseline_and_runs_only_does_not():
    with pytest.raises(SystemExit, match="baseline"):
        bench.main(["--variants", "eclip", "--output-dir", "/nonexistent/never-created"])
    with pytest.raises(SystemExit, match="siglip"):
        bench.main(["--variants", "eclip,siglip", "--runs-only", "--output-dir", "/nonexistent/never-created"])


RESULTS = os.path.join(REPO_ROOT, "benchmarks", "results")


def _committed_report() -> dict:
    with open(os.path.join(RESULTS, "eclip_vs_clip_pretrained.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_the_readme_shows_the_committed_report():
    with open(os.path.join(REPO_ROOT, "docs", "results.md"), encoding="utf-8") as handle:
        readme = handle.read()
    assert bench.readme_markdown(_committed_report()) in readme, (
        "docs/results.md's pretrained-tower results differ from benchmarks/results/eclip_vs_clip_pretrained.json: paste "
        "bench.readme_markdown(report) there")


def test_the_committed_report_comes_from_the_committed_run_records():
    """Each comparison is the pooled bootstrap of the committed per-query outcomes, every run at one budget."""
    report = _committed_report()
    per_query = {}
    for variant, seeds in report["runs"].items():
        for seed in seeds:
            folder = os.path.join(RESULTS, bench.RECORDS, variant, f"seed{seed}")
            record, _, per_query[(variant, int(seed))] = bench.load_record(folder)
            assert bench.scene_set_count(per_query[(variant, int(seed))]) == report["settings"]["scene_sets"]
            assert record["settings"] == {k: report["settings"][k] for k in record["settings"]}
            assert record["steps"] == report["settings"]["steps"]
    baseline = {s: per_query[("clip", s)] for (v, s) in per_query if v == "clip"}
    for variant, comparison in report["comparisons"].items():
        model = {s: per_query[(variant, s)] for (v, s) in per_query if v == variant}
        again = bench.pooled_bootstrap(model, baseline, resamples=comparison["resamples"])
        for key, entry in comparison["measures"].items():
            assert again["measures"][key]["pooled"]["ratio"] == pytest.approx(entry["pooled"]["ratio"])
            assert again["measures"][key]["pooled"]["ratio_ci95"] == pytest.approx(entry["pooled"]["ratio_ci95"])


def test_selection_profile_tells_a_prior_only_head_from_one_that_finds_the_products():
    from benchmarks.selection_probe import selection_profile

    rng = np.random.default_rng(4)
    k, n = 4, 60
    texts = np.eye(k)[rng.integers(0, k, n)]  # product i's title picks query argmax(texts[i])
    instances = np.repeat(np.eye(k)[None], n, axis=0)  # every image: instance q_k = e_k
    members = [[i, (i + 1) % n] for i in range(n)]
    wanted = [sorted({int(texts[m].argmax()) for m in shown}) for shown in members]
    finds = np.full((n, k), -5.0)
    for i, picked in enumerate(wanted):
        finds[i, picked] = 5.0
    prior = np.tile([5.0, -5.0, -5.0, -5.0], (n, 1))
    good = selection_profile({"instance_embeds": instances, "selection_logits": finds}, texts, members)
    bad = selection_profile({"instance_embeds": instances, "selection_logits": prior}, texts, members)
    assert good["mass_on_member_queries"] > 0.99 > bad["mass_on_member_queries"]
    assert bad["head_query_histogram"] == [n, 0, 0, 0]
    assert sum(good["member_query_histogram"]) == 2 * n
    assert good["uniform_mass_on_member_queries"] == pytest.approx(np.mean([len(w) / k for w in wanted]))


def test_text_free_by_weighting_scores_the_oracle_mix_above_a_head_stuck_on_the_wrong_query():
    """The oracle mix (the shown products' queries) finds every product's scenes first; a head stuck on a query
    that holds something else (here a product the scene does not show) finds none."""
    from benchmarks.selection_probe import text_free_by_weighting

    k, n = 4, 12
    texts = np.eye(n + 1)[:n]  # title i along axis i; axis n is empty background
    members = [[i, (i + 5) % n] for i in range(n)]
    instances = np.zeros((n, k, n + 1), dtype=np.float32)
    for i, shown in enumerate(members):
        instances[i, 0] = texts[(i + 2) % n]  # the query the head is stuck on holds a product not in the scene
        instances[i, 1], instances[i, 2] = texts[shown[0]], texts[shown[1]]
        instances[i, 3, n] = 1.0
    stuck = np.tile([5.0, -5.0, -5.0, -5.0], (n, 1)).astype(np.float32)
    out = text_free_by_weighting({"instance_embeds": instances, "selection_logits": stuck}, texts, members)
    assert out["oracle_members"]["recall@1"] == 1.0
    assert out["head"]["recall@1"] == 0.0
    assert 0.0 <= out["uniform"]["recall@1"] <= 1.0 and out["uniform"]["mrr"] > out["head"]["mrr"]


def test_the_readme_shows_the_committed_selection_probes():
    from benchmarks.selection_probe import load_probes, readme_table

    probes = load_probes()
    assert {variant for variant, _ in probes} >= {"eclip"}
    table = readme_table(probes)
    assert table.count("\n") == 2 + sum("scenes_text_free_by_weighting" in probe for _, probe in probes)
    with open(os.path.join(REPO_ROOT, "docs", "results.md"), encoding="utf-8") as handle:
        assert table in handle.read(), "paste `python -m benchmarks.selection_probe --table` into docs/results.md"
