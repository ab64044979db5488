# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
The statistics of every study: the paired bootstrap of a model's per-query values against its baseline's, per seed
and pooled over seeds, the interval across seeds, the mean and spread over seeds, and how a ratio is written in the
docs' tables.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import numpy as np

RESAMPLES = 2000


def query_draws(rng: np.random.Generator, sizes: dict, resamples: int = RESAMPLES) -> Callable:
    """
    The bootstrap's resampled query indices as `draw(seed, n) -> (resamples, n)`: one draw per seed of `sizes`
    (`sizes[seed] = n`), made now in the order of `sizes` and shared by every measure of that seed over `n` queries;
    a measure over another count (or a seed not in `sizes`) gets a fresh draw.
    """
    draws = {s: rng.integers(0, n, size=(resamples, n)) for s, n in sizes.items()}

    def draw(seed, n: int) -> np.ndarray:
        if seed in draws and draws[seed].shape[1] == n:
            return draws[seed]
        return rng.integers(0, n, size=(resamples, n))

    return draw


def paired_ratios(values: dict, draw: Callable) -> dict:
    """
    The paired-bootstrap ratio of a model's per-query values to its baseline's (`values[seed] = (model, baseline)`,
    one value per query), per seed and pooled (every query of every seed weighs the same), with 95 % percentile
    intervals, the pooled count of queries and the across-seeds interval. `draw(seed, n)` gives the resamples'
    query indices, `(resamples, n)` (see `query_draws`): the same draw indexes the model and the baseline.
    """
    entry = {"per_seed": {}}
    draws_m, draws_b, total_m, total_b, count = 0.0, 0.0, 0.0, 0.0, 0
    for s, (m, b) in values.items():
        index = draw(s, len(m))
        sum_m, sum_b = m[index].sum(axis=1), b[index].sum(axis=1)
        entry["per_seed"][str(s)] = ratio_entry(m.mean(), b.mean(), sum_m / len(m), sum_b / len(m))
        draws_m, draws_b = draws_m + sum_m, draws_b + sum_b
        total_m, total_b, count = total_m + m.sum(), total_b + b.sum(), count + len(m)
    entry["pooled"] = {**ratio_entry(total_m / count, total_b / count, draws_m / count, draws_b / count),
                       "queries": int(count),
                       "seed_ci95": seed_level_interval([entry["per_seed"][str(s)]["ratio"] for s in values])}
    return entry


def ratio_entry(model_mean, base_mean, model_draws, base_draws) -> dict:
    """Levels, ratio, its 95 % percentile interval over the resampled means, and the share of resamples ahead."""
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample where the baseline scores 0: an infinite ratio
        ratios = np.where(base_draws > 0, model_draws / np.where(base_draws > 0, base_draws, 1.0),
                          np.where(model_draws > 0, np.inf, 1.0))
        interval = np.percentile(ratios, [2.5, 97.5])
    return {"model": float(model_mean), "baseline": float(base_mean),
            "ratio": float(model_mean / base_mean) if base_mean else None,
            # None stands for an unbounded end (resamples where the baseline scored 0).
            "ratio_ci95": [float(v) if np.isfinite(v) else None for v in interval],
            "share_ahead": float((model_draws > base_draws).mean())}


def seed_level_interval(ratios: list, confidence: float = 0.95) -> list[float] | None:
    """
    Across training runs: a t interval on the per-seed log ratios (n - 1 degrees of freedom). The query bootstrap
    holds each seed's models fixed, so it leaves out how much a ratio moves from one training run to the next; this
    interval counts that (and, with five seeds, is wide). None with fewer than two seeds or a ratio that is not
    positive.
    """
    from scipy import stats

    if len(ratios) < 2 or any(r is None or not r > 0 for r in ratios):
        return None
    logs = np.log(np.asarray(ratios, dtype=float))
    half = stats.t.ppf(0.5 + confidence / 2, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs))
    return [float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))]


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation over seeds (None for one seed)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


# ================================================================================================== formatting
def ratio_cell(entry: dict) -> str:
    """A ratio with its interval, `1.25x [1.05, 1.48]`: `n/a` where the baseline scored 0 (no ratio), `inf` for an
    unbounded end."""
    if entry["ratio"] is None:
        return "n/a"
    low, high = ("inf" if v is None else f"{v:.2f}" for v in entry["ratio_ci95"])
    return f"{entry['ratio']:.2f}x [{low}, {high}]"


def interval_text(interval) -> str:
    """`[0.94, 1.19]`, or `n/a` where there is no interval."""
    return "n/a" if interval is None else f"[{interval[0]:.2f}, {interval[1]:.2f}]"


__all__ = ["RESAMPLES", "interval_text", "mean_std", "paired_ratios", "query_draws", "ratio_cell", "ratio_entry",
           "seed_level_interval"]
