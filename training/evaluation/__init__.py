# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
ECLIP benchmark runner (DESIGN.md, "Evaluation").

Evaluates a saved ECLIP folder (and optionally the CLIP baseline, `use_instance_decoder=False`) on the real data in
`$ECLIP_DATA_DIR` (default `../shared/data`): every benchmark reports on the `test` split, tunes only on
`validation` and trains (linear probes) only on `train`.

    eclip-evaluate --model runs/eclip --baseline runs/clip --data ../shared/data --tasks all --output eval/
    python -m eclip.training.evaluation --model runs/eclip --tasks zero_shot,retrieval --limit 200 --output eval-quick/

Python API: `evaluate_model(model, processor, data_dir, tasks, output_dir, limit=None, ...) -> dict`.

Outputs in `--output`: `results.json`, `results.md`, `zero_shot_confusion.png`, `retrieval_examples.png`,
`instance_attention.png` (ECLIP only); with `--baseline` the baseline's plots go to `--output/baseline/` and
`results.json` / `results.md` hold both models side by side with ratios (model / baseline).

Modules: `runner` (`evaluate_model`, `prepare`), `tasks` (the seven tasks), `embedder` (batched, cached embeddings and
the model's image-text score), `scenes` (the instance-retrieval scenes), `data` (matching pairs, prompt templates),
`plots`, `report` (results.json / results.md) and `cli` (`eclip-evaluate`); the fashion-products readers live in
`eclip.training.fashion`. The names below are re-exported here (loaded on first use), so `from eclip.training.evaluation import X`
keeps working.
"""

import importlib

# Each name and the module it comes from. They load on first use (PEP 562), so `eclip-evaluate --help` and its
# argument checks run before torch is imported.
_EXPORTS = {
    "build_parser": "eclip.training.evaluation.cli",
    "main": "eclip.training.evaluation.cli",
    "DEFAULT_TEMPLATES": "eclip.training.evaluation.data",
    "MATCHING_DATASETS": "eclip.training.evaluation.data",
    "MATCHING_DIR": "eclip.training.evaluation.data",
    "MATCHING_SPLITS": "eclip.training.evaluation.data",
    "check_templates": "eclip.training.evaluation.data",
    "load_matching": "eclip.training.evaluation.data",
    "Embedder": "eclip.training.evaluation.embedder",
    "has_instance_decoder": "eclip.training.evaluation.embedder",
    "image_text_scores": "eclip.training.evaluation.embedder",
    "load_image": "eclip.training.evaluation.embedder",
    "normalize": "eclip.training.evaluation.embedder",
    "PLOT_FILES": "eclip.training.evaluation.plots",
    "plot_confusion": "eclip.training.evaluation.plots",
    "plot_instance_attention": "eclip.training.evaluation.plots",
    "plot_retrieval_examples": "eclip.training.evaluation.plots",
    "BASELINE_SUBDIR": "eclip.training.evaluation.report",
    "DETAILS": "eclip.training.evaluation.report",
    "compare": "eclip.training.evaluation.report",
    "config_summary": "eclip.training.evaluation.report",
    "flatten_metrics": "eclip.training.evaluation.report",
    "json_default": "eclip.training.evaluation.report",
    "results_markdown": "eclip.training.evaluation.report",
    "versions": "eclip.training.evaluation.report",
    "write_results": "eclip.training.evaluation.report",
    "evaluate_model": "eclip.training.evaluation.runner",
    "prepare": "eclip.training.evaluation.runner",
    "attention_grid": "eclip.training.evaluation.scenes",
    "build_hard_scenes": "eclip.training.evaluation.scenes",
    "build_scenes": "eclip.training.evaluation.scenes",
    "first_relevant_ranks": "eclip.training.evaluation.scenes",
    "processed_to_canvas": "eclip.training.evaluation.scenes",
    "scene_relevance": "eclip.training.evaluation.scenes",
    "LINEAR_PROBE_C": "eclip.training.evaluation.tasks",
    "RESTRICTED_PROMPTS": "eclip.training.evaluation.tasks",
    "TARGET_PRECISION": "eclip.training.evaluation.tasks",
    "TASK_FUNCTIONS": "eclip.training.evaluation.tasks",
    "TASK_SPLITS": "eclip.training.evaluation.task_names",
    "TASKS": "eclip.training.evaluation.task_names",
    "TaskRun": "eclip.training.evaluation.tasks",
    "fit_logistic": "eclip.training.evaluation.tasks",
    "parse_tasks": "eclip.training.evaluation.task_names",
    "selection_diagnostics": "eclip.training.evaluation.tasks",
    "FASHION_DIR": "eclip.training.fashion",
    "LABEL_FIELD": "eclip.training.fashion",
    "RESTRICTED_FIELD": "eclip.training.fashion",
    "RESTRICTED_VALUE": "eclip.training.fashion",
    "TITLE_FIELD": "eclip.training.fashion",
    "load_split_rows": "eclip.training.fashion",
    "read_fashion_metadata": "eclip.training.fashion",
    "stratified_subset": "eclip.training.fashion",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "build_hard_scenes", "selection_diagnostics",
    "BASELINE_SUBDIR", "DEFAULT_TEMPLATES", "DETAILS", "FASHION_DIR", "LABEL_FIELD", "LINEAR_PROBE_C", "MATCHING_DATASETS",
    "MATCHING_DIR", "MATCHING_SPLITS", "PLOT_FILES", "RESTRICTED_FIELD", "RESTRICTED_PROMPTS", "RESTRICTED_VALUE",
    "TARGET_PRECISION", "TASKS", "TASK_FUNCTIONS", "TASK_SPLITS", "TITLE_FIELD", "Embedder", "TaskRun",
    "attention_grid", "build_parser", "build_scenes", "check_templates", "compare", "config_summary",
    "evaluate_model", "first_relevant_ranks", "fit_logistic", "flatten_metrics", "has_instance_decoder",
    "image_text_scores", "json_default", "load_image", "load_matching", "load_split_rows", "main", "normalize",
    "parse_tasks", "plot_confusion", "plot_instance_attention", "plot_retrieval_examples", "prepare",
    "processed_to_canvas", "read_fashion_metadata", "results_markdown", "scene_relevance",
    "stratified_subset", "versions", "write_results",
]
