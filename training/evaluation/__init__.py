# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
ECLIP benchmark runner (DESIGN.md, "Evaluation").

Evaluates a saved ECLIP folder (and optionally the CLIP baseline, `use_instance_decoder=False`) on the real data in
`$ECLIP_DATA_DIR` (default `../shared/data`): every benchmark reports on the `test` split, tunes only on
`validation` and trains (linear probes) only on `train`.

    eclip-evaluate --model runs/eclip --baseline runs/clip --data ../shared/data --tasks all --output eval/
    python -m training.evaluation --model runs/eclip --tasks zero_shot,retrieval --limit 200 --output eval-quick/

Python API: `evaluate_model(model, processor, data_dir, tasks, output_dir, limit=None, ...) -> dict`.

Outputs in `--output`: `results.json`, `results.md`, `zero_shot_confusion.png`, `retrieval_examples.png`,
`instance_attention.png` (ECLIP only); with `--baseline` the baseline's plots go to `--output/baseline/` and
`results.json` / `results.md` hold both models side by side with ratios (model / baseline).

Modules: `runner` (`evaluate_model`, `prepare`), `tasks` (the seven tasks), `embedder` (batched, cached embeddings and
the model's image-text score), `scenes` (the instance-retrieval scenes), `data` (matching pairs, prompt templates),
`plots`, `report` (results.json / results.md) and `cli` (`eclip-evaluate`); the fashion-products readers live in
`training.fashion`. The names below are re-exported here, so `from training.evaluation import X` keeps working.
"""

from training.evaluation.cli import build_parser, main
from training.evaluation.data import (
    DEFAULT_TEMPLATES,
    MATCHING_DATASETS,
    MATCHING_DIR,
    MATCHING_SPLITS,
    check_templates,
    load_matching,
)
from training.evaluation.embedder import Embedder, has_instance_decoder, image_text_scores, load_image, normalize
from training.evaluation.plots import PLOT_FILES, plot_confusion, plot_instance_attention, plot_retrieval_examples
from training.evaluation.report import (
    BASELINE_SUBDIR,
    DETAILS,
    compare,
    config_summary,
    flatten_metrics,
    json_default,
    results_markdown,
    versions,
    write_results,
)
from training.evaluation.runner import evaluate_model, prepare
from training.evaluation.scenes import (
    attention_grid,
    build_scenes,
    first_relevant_ranks,
    processed_to_canvas,
    scene_relevance,
)
from training.evaluation.tasks import (
    LINEAR_PROBE_C,
    RESTRICTED_PROMPTS,
    TARGET_PRECISION,
    TASK_FUNCTIONS,
    TASK_SPLITS,
    TASKS,
    TaskRun,
    fit_logistic,
    parse_tasks,
)
from training.fashion import (
    FASHION_DIR,
    LABEL_FIELD,
    RESTRICTED_FIELD,
    RESTRICTED_VALUE,
    TITLE_FIELD,
    load_split_rows,
    read_fashion_metadata,
    stratified_subset,
)

__all__ = [
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
