# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""The default-recipe refit study (`python -m benchmarks.default_refit`): its verdict and its docs table."""

import os

import numpy as np
import pytest
from conftest import REPO_ROOT

from benchmarks.default_refit import OUTPUT, main, readme_table, report
from benchmarks.records import read_json, write_json


def _records(after_scene: float, text_free_after: float, products: int = 200, seeds=(0, 1)) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for seed in seeds:
        def hits(p):
            return (rng.random(products) < p).astype(float).tolist()
        out[seed] = {"products": products, "refit": {"wall_time_s": 1.0}, "training": {"wall_time_s": 2.0},
                     "scene_hit_before": hits(0.5), "scene_hit_after": hits(after_scene),
                     "scene_hit_prior": hits(0.5), "photo_hit_before": hits(0.6), "photo_hit_after": hits(0.8),
                     "photo_hit_prior": hits(0.6), "text_free_r1_before": hits(0.3),
                     "text_free_r1_after": hits(text_free_after)}
    return out


@pytest.mark.parametrize("after_scene, text_free_after, expected", [
    (0.8, 0.3, True),    # above the prior, text-free level: on
    (0.5, 0.3, False),   # no better than the prior: off
    (0.8, 0.05, False),  # above the prior but text-free retrieval falls: off
])
def test_the_verdict_follows_the_rule_fixed_before_the_runs(after_scene, text_free_after, expected):
    result = report(_records(after_scene, text_free_after), resamples=400)
    assert result["refit_on"] is expected
    pooled = result["measures"]["scene_agreement_refit_vs_prior"]["pooled"]
    assert pooled["queries"] == 400 and set(result["measures"]["scene_agreement_refit_vs_prior"]["per_seed"]) == {"0", "1"}
    assert pooled["ratio"] == pytest.approx(pooled["model"] / pooled["baseline"])


def test_the_table_prints_every_measure_with_its_interval_and_per_seed_ratios(capsys, tmp_path):
    result = report(_records(0.8, 0.3), resamples=200)
    table = readme_table(result)
    assert table.count("\n") == 2 + len(result["measures"])
    low, high = result["measures"]["text_free_scene_r1_refit_vs_trained"]["pooled"]["ratio_ci95"]
    assert f"[{low:.2f}, {high:.2f}]" in table
    write_json(str(tmp_path / "r.json"), result)
    assert main(["--table", "--output", str(tmp_path / "r.json")]) == 0
    assert capsys.readouterr().out == table


def test_a_reference_that_scored_zero_reads_as_no_ratio_in_the_summary_and_the_table(tmp_path, capsys):
    # A smoke run's untrained head can find nothing text-free: the summary must still print, not crash on the ratio.
    for seed, record in _records(0.8, 0.3).items():
        record.update(seed=seed, scene_sets=5, text_free_r1_before=[0.0] * record["products"])
        record["refit"].update(agreement_before=0.5, agreement_after=0.6, scenes=1500)
        write_json(str(tmp_path / "records" / f"seed{seed}.json"), record)
    assert main(["--seeds", "0,1", "--reuse", "--work-dir", str(tmp_path), "--output", str(tmp_path / "r.json")]) == 0
    assert "text_free_scene_r1_refit_vs_trained: 0.3" in (out := capsys.readouterr().out)
    assert next(l for l in out.splitlines() if l.startswith("text_free")).endswith(" / 0.000 = n/a")
    line = next(l for l in readme_table(read_json(str(tmp_path / "r.json"))).splitlines() if "text-free" in l)
    assert "/ 0.000 | n/a | n/a, n/a |" in line


def test_reuse_refuses_records_measured_another_way(tmp_path):
    for seed, record in _records(0.8, 0.3, seeds=(0,)).items():
        record.update(seed=seed, scene_sets=1)  # a smoke run's record
        record["refit"].update(agreement_before=0.5, agreement_after=0.6, scenes=40)
        write_json(str(tmp_path / "records" / f"seed{seed}.json"), record)
    with pytest.raises(SystemExit, match=r"other settings \(refit_images, scene_sets\)"):
        main(["--seeds", "0", "--reuse", "--work-dir", str(tmp_path), "--output", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("flags, message", [
    (["--sets", "0"], "--sets must be at least 1"),
    (["--refit-images", "1"], "--refit-images must be at least 2"),
    (["--seeds", "0,x"], "--seeds takes comma-separated integers"),
])
def test_bad_arguments_stop_before_any_training_with_a_clear_message(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([*flags, "--work-dir", str(tmp_path / "runs"), "--output", str(tmp_path / "r.json")])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "r.json").exists()


def test_the_readme_shows_the_committed_default_refit_report():
    if not os.path.isfile(OUTPUT):
        pytest.fail(f"{os.path.relpath(OUTPUT, REPO_ROOT)} is missing: "
                    "run `python -m benchmarks.default_refit --reuse`")
    with open(os.path.join(REPO_ROOT, "docs", "pretraining.md"), encoding="utf-8") as handle:
        assert readme_table(read_json(OUTPUT)) in handle.read(), \
            "paste `python -m benchmarks.default_refit --table` into docs/pretraining.md"
