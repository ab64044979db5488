# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""`evaluate_model`: every input checked first, then each task on the model (and the baseline), then the report."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence

import torch

from eclip.training.compositor import compose_scene
from eclip.training.data import resolve_data_dir
from eclip.training.evaluation.data import DEFAULT_TEMPLATES, check_templates, load_matching
from eclip.training.evaluation.embedder import Embedder, has_instance_decoder
from eclip.training.evaluation.images import DEFAULT_ON_BAD_IMAGE, SkippedImages, check_rows
from eclip.training.evaluation.report import BASELINE_SUBDIR, compare, config_summary, versions, write_results
from eclip.training.evaluation.scenes import build_hard_scenes, build_scenes
from eclip.training.evaluation.task_names import ATTENTION_TASKS
from eclip.training.evaluation.tasks import TASK_FUNCTIONS, TASK_SPLITS, TaskRun, parse_tasks
from eclip.training.fashion import (
    FASHION_DIR,
    LABEL_FIELD,
    RESTRICTED_FIELD,
    RESTRICTED_VALUE,
    load_split_rows,
    read_fashion_metadata,
)

logger = logging.getLogger("eclip.training.evaluation")


def check_model_tasks(model, tasks: Sequence[str], role: str = "model") -> None:
    """
    Raise `ValueError` when `model` cannot run one of `tasks`: a model with the instance decoder that gives no
    attention maps (an ONNX export, `EclipOnnxModel.can_output_attentions = False`) cannot run `instance_retrieval`.
    """
    blocked = [task for task in tasks if task in ATTENTION_TASKS]
    if blocked and has_instance_decoder(model) and not getattr(model, "can_output_attentions", True):
        kept = [task for task in tasks if task not in ATTENTION_TASKS]
        raise ValueError(
            f"the {role} ({type(model).__name__}) computes no attention maps, and {', '.join(blocked)} reads the "
            f"instance decoder's cross-attention: leave it out of the tasks ({','.join(kept) or 'zero_shot'}) or "
            "evaluate the PyTorch model."
        )


def model_summary(model) -> dict:
    """`report.config_summary` of a torch model; for a runtime without torch parameters (`EclipOnnxModel`), the same
    fields from its config, the parameter count its export recorded and how it ran (`runtime`)."""
    if isinstance(model, torch.nn.Module):
        return config_summary(model)
    from types import SimpleNamespace

    # config_summary reads `config` and counts `parameters()`: give it the config, and the count from the export.
    summary = config_summary(SimpleNamespace(config=model.config, parameters=lambda: iter(())))
    summary["num_parameters"] = model.num_parameters() if hasattr(model, "num_parameters") else None
    if hasattr(model, "runtime_info"):
        summary["runtime"] = model.runtime_info()
    return summary


def _evaluate_one(model, processor, name, model_path, tasks, splits, matching, scenes, output_dir, templates,
                  seed, class_names, restricted_negatives, batch_size, device, confusion_classes, num_examples,
                  show_progress, tower_features=None, hard_scenes=None) -> dict:
    os.makedirs(output_dir, exist_ok=True)
    if isinstance(model, torch.nn.Module):
        model.eval()
        if device is not None:
            model.to(device)
    else:  # an ONNX export runs where its onnxruntime session does; its inputs go, and outputs come, as it says
        device = None
    embedder = Embedder(model, processor, batch_size=batch_size, device=device, name=name,
                        show_progress=show_progress, tower_features=tower_features)
    run = TaskRun(embedder, splits, matching, scenes, output_dir, templates, seed, class_names, restricted_negatives,
                  confusion_classes, num_examples, hard_scenes=hard_scenes)
    results, timings = {}, {}
    start = time.perf_counter()
    for task in tasks:
        t0 = time.perf_counter()
        logger.info("[%s] %s", name, task)
        results[task] = TASK_FUNCTIONS[task](run)
        timings[task] = round(time.perf_counter() - t0, 3)
    return {
        "model_path": model_path,
        "config": model_summary(model),
        "tasks": results,
        "task_wall_time_s": timings,
        "eval_wall_time_s": time.perf_counter() - start,
        "plots": run.plots,
        "notes": run.notes,
        "embedded": {"images": embedder.embedded_images, "texts": embedder.embedded_texts},
    }


def prepare(data_dir: str | None, tasks, limit: int | None = None, seed: int = 0,
            templates: Sequence[str] | None = None, compose_fn: Callable | None = None,
            on_bad_image: str = DEFAULT_ON_BAD_IMAGE, show_progress: bool = False) -> dict:
    """
    Check every input and read the (limited) data rows, without touching a model: unknown tasks, a missing data
    folder, file or split, bad templates or a bad limit raise `ValueError` here, before any heavy work.

    Every image of the rows read is decoded once here (`eclip.training.evaluation.images.check_rows`): the tasks index
    the rows, so one whose image fails must go before any is embedded. Such a row is left out, and the files are
    counted and named in one warning and in `skipped_images` (`on_bad_image="skip"`); with `"error"` the first one
    raises `UnreadableImage` (a `ValueError`) naming the file. A `--limit`ed split keeps the rows that decode of its
    sample (so it may hold fewer).
    """
    task_list = parse_tasks(tasks)
    data_dir = data_dir or resolve_data_dir()
    if not os.path.isdir(data_dir):
        raise ValueError(f"Data folder {data_dir} does not exist (set --data or ECLIP_DATA_DIR).")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}.")
    templates = check_templates(templates if templates is not None else DEFAULT_TEMPLATES)
    needed_splits = [s for s in ("train", "validation", "test") if any(s in TASK_SPLITS[t] for t in task_list)]
    splits, class_names, restricted_negatives = {}, [], []
    skipped = SkippedImages(os.path.abspath(os.path.join(data_dir, FASHION_DIR)))
    if needed_splits:
        all_rows = read_fashion_metadata(data_dir)
        splits = load_split_rows(data_dir, needed_splits, limit, seed)
        for split in needed_splits:
            splits[split] = check_rows(splits[split], on_bad_image, skipped, split, show_progress=show_progress)
            if not splits[split]:
                raise ValueError(f"Split {split!r}: no image of its rows decodes ({skipped.summary()}).")
        if skipped:
            logger.warning("%s", skipped.summary())
        class_names = sorted({r[LABEL_FIELD] for r in all_rows})
        restricted_negatives = sorted({r[RESTRICTED_FIELD] for r in all_rows} - {RESTRICTED_VALUE})
    matching = load_matching(data_dir, limit, seed) if "matching" in task_list else None
    if "instance_retrieval" in task_list and compose_fn is None:
        compose_fn = compose_scene
    return {"tasks": task_list, "data_dir": data_dir, "templates": templates, "splits": splits,
            "matching": matching, "class_names": class_names, "restricted_negatives": restricted_negatives,
            "compose_fn": compose_fn, "skipped_images": skipped}


def evaluate_model(
    model,
    processor,
    data_dir: str | None = None,
    tasks: str | Sequence[str] = "all",
    output_dir: str = "eval",
    limit: int | None = None,
    *,
    baseline_model=None,
    baseline_processor=None,
    model_path: str | None = None,
    baseline_path: str | None = None,
    batch_size: int = 64,
    templates: Sequence[str] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    compose_fn: Callable | None = None,
    confusion_classes: int = 15,
    num_examples: int = 4,
    update_card: bool = False,
    show_progress: bool = True,
    tower_features=None,
    scenes: list[dict] | None = None,
    hard_scenes: dict[str, list[dict]] | None = None,
    repo_id: str | None = None,
    on_bad_image: str = DEFAULT_ON_BAD_IMAGE,
    prepared: dict | None = None,
) -> dict:
    """
    Run the ECLIP benchmarks on one model (and, given `baseline_model`, the CLIP baseline with the same code) and
    write `results.json`, `results.md` and the plots to `output_dir`. Returns the results dict (= results.json).

    Args:
        model, processor: an `EclipModel` (or anything with `get_text_features` / `get_image_features` /
            `get_instance_features`), or an ONNX export's `eclip.training.export.EclipOnnxModel` (run where its
            onnxruntime session runs, whatever `device`; every task but `instance_retrieval`, which reads attention
            maps), and its `EclipProcessor`.
        data_dir: the shared data folder (default `$ECLIP_DATA_DIR`, else `/work/shared/data`).
        tasks: `"all"`, a comma list or a list of names from `TASKS`.
        limit: cap on rows per split (and on pairs per matching split), chosen deterministically (seeded,
            stratified by subCategory / label) for quick runs; `None` uses everything.
        templates: prompt templates with one `{}` (zero-shot and restricted prompts); text embeddings are
            averaged over them.
        compose_fn: scene compositor for `instance_retrieval` (default `eclip.training.compositor.compose_scene`).
        update_card: also write the model card (README.md) into `model_path` (a local folder), keeping the facts of
            the card already there (the training run; see `eclip.model_cards.card.write_model_card`).
        tower_features: a [`TowerFeatures`] of the locked vision tower the model(s) were trained with: images are
            embedded from its cached hidden states (computed once per image set, shared across models).
        scenes, hard_scenes: the instance-retrieval scenes (`build_scenes`, `build_hard_scenes` of the test rows
            with this seed), when the caller shares them between evaluations; built here otherwise.
        repo_id: the Hub repo the folder is published as: the card's title and loading snippet.
        on_bad_image: a row whose image cannot be decoded is left out, counted and named (`"skip"`), or stops the
            evaluation before anything is embedded (`"error"`: `UnreadableImage`); see `prepare`.
        prepared: what `prepare` returned for these same arguments (`eclip-evaluate` checks its inputs first), so
            that the data is not read and checked twice.

    Raises:
        ValueError: unknown task, missing data folder / file / split, bad template or limit, an undecodable image
            with `on_bad_image="error"`, a task the model cannot run -- before any embedding is computed.

    `output_dir` is created here; when it did not exist and the evaluation fails, it is removed again (no half-written
    folder).
    """
    t_start = time.perf_counter()
    if prepared is None:
        prepared = prepare(data_dir, tasks, limit, seed, templates, compose_fn, on_bad_image)
    created = not os.path.exists(output_dir)
    try:
        return _evaluate(model, processor, prepared, output_dir, limit, t_start, baseline_model=baseline_model,
                         baseline_processor=baseline_processor, model_path=model_path, baseline_path=baseline_path,
                         batch_size=batch_size, seed=seed, device=device, confusion_classes=confusion_classes,
                         num_examples=num_examples, update_card=update_card, show_progress=show_progress,
                         tower_features=tower_features, scenes=scenes, hard_scenes=hard_scenes, repo_id=repo_id)
    except BaseException:
        if created and os.path.isdir(output_dir):
            shutil.rmtree(output_dir, ignore_errors=True)
        raise


def _evaluate(model, processor, prepared, output_dir, limit, t_start, *, baseline_model, baseline_processor,
              model_path, baseline_path, batch_size, seed, device, confusion_classes, num_examples, update_card,
              show_progress, tower_features, scenes, hard_scenes, repo_id) -> dict:
    task_list, splits, matching = prepared["tasks"], prepared["splits"], prepared["matching"]
    data_dir, templates, compose_fn = prepared["data_dir"], prepared["templates"], prepared["compose_fn"]
    class_names, restricted_negatives = prepared["class_names"], prepared["restricted_negatives"]
    if (baseline_model is None) != (baseline_processor is None):
        raise ValueError("Pass both baseline_model and baseline_processor, or neither.")
    model_path = model_path or getattr(model, "name_or_path", None) or "<in-memory model>"
    if update_card and not os.path.isdir(model_path):
        raise ValueError(f"update_card needs the model to be a local folder; {model_path!r} is not one.")
    check_model_tasks(model, task_list)
    if baseline_model is not None:
        check_model_tasks(baseline_model, task_list, "baseline")
    os.makedirs(output_dir, exist_ok=True)

    if "instance_retrieval" not in task_list:
        scenes = hard_scenes = None
    else:  # built here unless the caller built them (for these rows and seed) to share between evaluations
        scenes = scenes if scenes is not None else build_scenes(splits["test"], compose_fn, seed)
        hard_scenes = hard_scenes if hard_scenes is not None else build_hard_scenes(splits["test"], seed)
    common = dict(tasks=task_list, splits=splits, matching=matching, scenes=scenes, hard_scenes=hard_scenes,
                  templates=templates, seed=seed,
                  class_names=class_names, restricted_negatives=restricted_negatives, batch_size=batch_size,
                  device=device, confusion_classes=confusion_classes, num_examples=num_examples,
                  show_progress=show_progress, tower_features=tower_features)
    results = _evaluate_one(model, processor, "model", model_path, output_dir=output_dir, **common)
    data = {
        "fashion_products": {s: len(rows) for s, rows in splits.items()},
        "matching": {name: {s: len(p) for s, p in sp.items()} for name, sp in (matching or {}).items()},
        "instance_scenes": len(scenes) if scenes is not None else 0,
        "hard_scenes": {kind: len(v) for kind, v in (hard_scenes or {}).items()},
        "num_articletype_classes": len(class_names),
    }
    skipped = prepared.get("skipped_images")
    if skipped:
        results["notes"] = [*results.get("notes", []), skipped.summary()]
    results = {
        "model_path": results.pop("model_path"),
        "tasks_run": task_list,
        "data_dir": os.path.abspath(data_dir),
        "data": data,
        "limit": limit,
        "seed": seed,
        "templates": templates,
        **results,
        "skipped_images": skipped.as_dict() if skipped is not None else {"count": 0, "files": []},
    }
    if baseline_model is not None:
        baseline = _evaluate_one(
            baseline_model, baseline_processor, "baseline",
            baseline_path or getattr(baseline_model, "name_or_path", None) or "<in-memory baseline>",
            output_dir=os.path.join(output_dir, BASELINE_SUBDIR), **common,
        )
        results["baseline"] = baseline
        results["comparison"] = compare(results["tasks"], baseline["tasks"])
    results["wall_time_s"] = time.perf_counter() - t_start
    results["versions"] = versions()
    results = write_results(output_dir, results)
    if update_card:
        from eclip.model_cards.card import write_model_card

        results["model_card"] = write_model_card(model_path, results, repo_id=repo_id)
    return results


__all__ = ["check_model_tasks", "evaluate_model", "model_summary", "prepare"]
