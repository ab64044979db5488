# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""What an evaluation writes: the flattened metrics, the comparison with a baseline, results.json and results.md."""

from __future__ import annotations

import json
import math
import os
import platform

import numpy as np

from eclip.training.atomic import atomic_write_text

BASELINE_SUBDIR = "baseline"
DETAILS = "details"  # per-task key for non-metric information (excluded from tables and ratios)


def config_summary(model) -> dict:
    config = model.config
    vision, text = getattr(config, "vision_config", None), getattr(config, "text_config", None)
    use_decoder = bool(getattr(config, "use_instance_decoder", False))
    summary = {
        "model_type": getattr(config, "model_type", None),
        "use_instance_decoder": use_decoder,
        "num_instance_queries": getattr(config, "num_instance_queries", None) if use_decoder else None,
        "decoder_layers": getattr(config, "decoder_layers", None) if use_decoder else None,
        "projection_dim": getattr(config, "projection_dim", None),
        "vision_model_type": getattr(vision, "model_type", None),
        "text_model_type": getattr(text, "model_type", None),
        "image_size": getattr(vision, "image_size", None),
        "patch_size": getattr(vision, "patch_size", None),
        "text_pooling": getattr(config, "text_pooling", None),
        "vision_pooling": getattr(config, "vision_pooling", None),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
    }
    for name in ("itc_weight", "inter_weight", "intra_weight", "selection_weight"):
        summary[name] = getattr(config, name, None)
    return summary


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("eclip", "torch", "transformers", "evaluate", "datasets", "scikit-learn", "huggingface_hub",
                    "numpy", "matplotlib"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    return out


def flatten_metrics(tasks: dict) -> dict[str, float | None]:
    """`{"zero_shot": {"accuracy": .9, "details": ...}}` -> `{"zero_shot/accuracy": .9}` (details left out)."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, sub in value.items():
                if key in (DETAILS, "skipped"):
                    continue
                walk(f"{prefix}/{key}" if prefix else key, sub)
        elif value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            flat[prefix] = None if value is None else float(value)

    walk("", tasks)
    return flat


def compare(model_tasks: dict, baseline_tasks: dict) -> dict:
    a, b = flatten_metrics(model_tasks), flatten_metrics(baseline_tasks)
    out = {}
    for key in a:
        if key not in b:
            continue
        ratio = None
        if a[key] is not None and b[key] is not None and b[key] != 0:
            ratio = a[key] / b[key]
        out[key] = {"model": a[key], "baseline": b[key], "ratio": ratio}
    return out


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def results_markdown(results: dict) -> str:
    baseline = results.get("baseline")
    config = results["config"]
    lines = [
        "# ECLIP evaluation",
        "",
        f"- model: `{results['model_path']}` (use_instance_decoder={config['use_instance_decoder']}, "
        f"K={config['num_instance_queries']})",
    ]
    if baseline:
        bconf = baseline["config"]
        lines.append(f"- baseline: `{baseline['model_path']}` (use_instance_decoder={bconf['use_instance_decoder']}, "
                     f"K={bconf['num_instance_queries']})")
    data = results["data"]
    sizes = ", ".join(f"{k} {v}" for k, v in data.get("fashion_products", {}).items())
    lines += [
        f"- data: `{results['data_dir']}` (test split; fashion-products rows used: {sizes or 'none'}; "
        f"limit: {results['limit']})",
        f"- seed {results['seed']}, wall time {results['wall_time_s']:.1f} s",
        "",
    ]
    model_flat = flatten_metrics(results["tasks"])
    base_flat = flatten_metrics(baseline["tasks"]) if baseline else {}
    if baseline:
        lines += ["| task | metric | model | baseline | ratio |", "| --- | --- | ---: | ---: | ---: |"]
    else:
        lines += ["| task | metric | value |", "| --- | --- | ---: |"]
    for key, value in model_flat.items():
        task, metric = key.split("/", 1)
        if baseline:
            ratio = results.get("comparison", {}).get(key, {}).get("ratio")
            lines.append(f"| {task} | {metric} | {_fmt(value)} | {_fmt(base_flat.get(key))} | "
                         f"{'n/a' if ratio is None else f'{ratio:.3f}'} |")
        else:
            lines.append(f"| {task} | {metric} | {_fmt(value)} |")
    skipped = {t: v["skipped"] for t, v in results["tasks"].items() if isinstance(v, dict) and "skipped" in v}
    notes = list(results.get("notes", [])) + [f"{t} skipped: {why}" for t, why in skipped.items()]
    if baseline:
        notes += [f"baseline: {n}" for n in baseline.get("notes", [])]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    plots = dict(results.get("plots", {}))
    if plots:
        lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in plots.values())]
        if baseline and baseline.get("plots"):
            lines[-1] += "; baseline: " + ", ".join(f"`{BASELINE_SUBDIR}/{p}`" for p in baseline["plots"].values())
    return "\n".join(lines) + "\n"


def finite(value):
    """NaN / inf (e.g. an AUC on a degenerate slice) become None, so results.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return None
    return value


def json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_results(output_dir: str, results: dict) -> dict:
    """`results` with non-finite numbers as `None` (strict JSON), written to `results.json` and `results.md`."""
    results = finite(results)
    atomic_write_text(os.path.join(output_dir, "results.json"),
                      json.dumps(results, indent=2, default=json_default, allow_nan=False) + "\n")
    atomic_write_text(os.path.join(output_dir, "results.md"), results_markdown(results))
    return results


__all__ = ["BASELINE_SUBDIR", "DETAILS", "compare", "config_summary", "flatten_metrics", "json_default",
           "results_markdown", "versions", "write_results"]
