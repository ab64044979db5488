# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
The fashion ECLIP (pretrained towers, locked DINOv2-S, feature cache) against the from-scratch model, on the
fashion-products test split, and the validation sweep that chose its resolution and unlocked blocks.

```bash
python -m benchmarks.fashion --sweep --reuse   # validation sweep: resolution x unlocked blocks, short runs
python -m benchmarks.fashion --reuse           # the recipe (training/configs/fashion.yaml), trained then run
                                               # through the whole evaluation suite, beside the from-scratch model
```

The sweep trains each `--grid` point (`SIZE:UNLOCKED`) for `--sweep-steps` steps from a one-pass feature cache
(a cache taken before the first unlocked block of the grid's deepest point serves every point at that size) and
scores zero-shot articleType and text-to-image R@1 on the validation split (never the test split). Writes
`benchmarks/results/fashion_sweep.json`.

The recipe run trains `training/configs/fashion.yaml` with a validation probe (zero-shot articleType weighted F1
every `--probe-every` steps, from the locked tower's cached validation features), evaluates it with
`eclip.training.evaluation.runner.evaluate_model` (every task, test split) and writes
`benchmarks/results/fashion.json` and `fashion.md` (or into `--results-dir`), the from-scratch model beside it
(`training/configs/default.yaml`'s recipe on fashion-products: 64-px ViT from scratch, MiniLM text tower, 500
steps). That model's metrics come from the committed comparison
(`--scratch-from`, default `benchmarks/results/eclip_vs_clip.json:eclip_scene_matched`, the same train and test
splits); `--train-scratch` trains and evaluates it here instead (about half an hour more on 2 cores). `--reuse`
keeps trained models and evaluations whose settings match; models and evaluation folders live under `--output-dir`
(not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

from benchmarks.fashion_recipe import FASHION_CONFIG, ValidationZeroShot, locked_tower, validation_rows
from benchmarks.records import REPO, RESULTS, check_reuse, command, read_json, write_json, write_text

# What docs/fashion.md's table shows, in order: (flattened results key, label).
HEADLINE = (
    ("zero_shot/weighted_f1", "zero-shot articleType weighted F1"),
    ("zero_shot/accuracy", "zero-shot articleType accuracy"),
    ("retrieval/text_to_image/recall@1", "product retrieval t2i R@1"),
    ("retrieval/image_to_text/recall@1", "product retrieval i2t R@1"),
    ("retrieval/text_to_image/recall@10", "product retrieval t2i R@10"),
    ("linear_probe/image/accuracy", "linear probe (image) accuracy"),
    ("linear_probe/image/macro_f1", "linear probe (image) macro F1"),
    ("instance_retrieval/text_to_image/recall@1", "scene retrieval R@1"),
    ("instance_retrieval/text_to_image/recall@10", "scene retrieval R@10"),
    ("clustering/nmi", "clustering NMI"),
    ("restricted/zero_shot/roc_auc", "restricted (Innerwear) zero-shot ROC-AUC"),
)
SCRATCH_SETTINGS = {"steps": 500, "batch_size": 64, "learning_rate": 5e-4, "image_size": 64, "seed": 0,
                    "scene_probability": 0.5, "logging_steps": 10}


# ======================================================================================================= runs
def _fashion_config(output_dir: str, overrides: dict | None = None) -> dict:
    from eclip.training.pretrain import load_config

    config = load_config(FASHION_CONFIG)
    config["training"]["output_dir"] = output_dir
    config["training"]["feature_cache_dir"] = os.path.join(REPO, ".eclip-cache", "features")
    for key, value in (overrides or {}).items():
        section, name = key.split(".", 1)
        config[section][name] = value
    return config


def _train(config: dict, probe_rows: list[dict] | None, probe_every: int, folder: str) -> dict:
    """Pretrain one model with a validation zero-shot probe; writes `<folder>/train.json`."""
    from eclip.training.pretrain import build_processor, default_text_model, resolve_vision_model, run_pretraining

    callbacks, probe = [], None
    model_config = config["model"]
    if probe_rows is not None:
        vision_path = resolve_vision_model(model_config.get("vision_model"))
        processor = build_processor(default_text_model(), int(model_config["image_size"]), vision_path)
        if config["training"].get("lock_image_tower"):
            # The locked blocks never change, so the pretrained tower gives the hidden states the model will see.
            tower, layer = locked_tower(config)
            probe = ValidationZeroShot(tower, processor, probe_rows, layer)
            del tower
        else:
            probe = ValidationZeroShot(None, processor, probe_rows, None)
        callbacks.append(probe.callback(probe_every))
    summary = run_pretraining(config, callbacks=callbacks)
    record = {
        "steps": summary["steps"],
        "wall_time_s": summary["wall_time_s"],
        "feature_cache_s": summary["feature_cache_s"],
        "final_losses": summary["final_losses"],
        "loss_curve": [{k: v for k, v in e.items() if k == "step" or k.startswith("loss")}
                       for e in summary["log_history"] if "loss" in e],
        "probe": probe.history if probe is not None else [],
        "selection_refit": summary["selection_refit"],
        "config": config,
    }
    write_json(os.path.join(folder, "train.json"), record)
    return record


def _evaluate(model_dir: str, output_dir: str, data_dir: str) -> dict:
    from transformers import AutoModel, AutoProcessor

    import modeling_eclip  # noqa: F401  (registers the Auto classes)
    from eclip.training.evaluation.runner import evaluate_model

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    return evaluate_model(model, processor, data_dir=data_dir, tasks="all", output_dir=output_dir,
                          model_path=model_dir, seed=0, show_progress=False)


def _scratch_config(model_dir: str, data_dir: str) -> dict:
    from eclip.training.pretrain import DEFAULT_CONFIG, load_config

    config = load_config(DEFAULT_CONFIG)
    s = SCRATCH_SETTINGS
    config["model"]["image_size"] = s["image_size"]
    config["data"]["dataset"] = f"imagefolder:{os.path.join(data_dir, 'fashion-products')}"
    config["training"].update({
        "output_dir": model_dir, "max_steps": s["steps"], "per_device_train_batch_size": s["batch_size"],
        "learning_rate": s["learning_rate"], "warmup_steps": max(1, s["steps"] // 20), "seed": s["seed"],
        "logging_steps": s["logging_steps"], "scene_probability": s["scene_probability"],
        "dataloader_num_workers": 0,
    })
    return config


def _same_config(folder: str, config: dict) -> bool:
    """Whether `folder` holds a model trained with `config` (one trained with another stops `--reuse`)."""
    path = os.path.join(folder, "train.json")
    if not os.path.isfile(path) or not os.path.isfile(os.path.join(folder, "model", "config.json")):
        return False
    check_reuse(path, read_json(path)["config"], config)
    return True


def run_model(name: str, config: dict, folder: str, args, probe_rows) -> dict:
    if args.reuse and _same_config(folder, config):
        print(f"[{name}] reusing {folder}", flush=True)
        train = read_json(os.path.join(folder, "train.json"))
    else:
        train = _train(config, probe_rows, args.probe_every, folder)
    results_path = os.path.join(folder, "eval", "results.json")
    if args.reuse and os.path.isfile(results_path) and os.path.getmtime(results_path) > os.path.getmtime(
            os.path.join(folder, "train.json")):
        results = read_json(results_path)
    else:
        results = _evaluate(os.path.join(folder, "model"), os.path.join(folder, "eval"), args.data)
    return {"train": train, "results": results}


# ====================================================================================================== sweep
def sweep(args) -> int:
    recipe_lr = _fashion_config("unused")["training"]["learning_rate"]
    grid = []
    for point in args.grid.split(","):
        size, unlocked, *lr = point.split(":")
        grid.append((int(size), int(unlocked), float(lr[0]) if lr else recipe_lr))
    deepest = {}
    for size, unlocked, _ in grid:
        deepest[size] = max(deepest.get(size, 0), unlocked)
    rows = validation_rows(args.data, args.limit)
    points = []
    for size, unlocked, lr in grid:
        name = f"{size}px_unlocked{unlocked}" + ("" if lr == recipe_lr else f"_lr{lr:g}")
        folder = os.path.join(args.output_dir, "sweep", name)
        overrides = {
            "model.image_size": size,
            "training.unlocked_image_layers": unlocked,
            "training.feature_cache_layer": 12 - deepest[size],
            "training.max_steps": args.sweep_steps,
            "training.warmup_steps": max(1, args.sweep_steps // 10),
            "training.learning_rate": lr,
        }
        if args.limit:
            overrides["data.limit"] = args.limit
        config = _fashion_config(os.path.join(folder, "model"), overrides)
        if args.reuse and _same_config(folder, config):
            train = read_json(os.path.join(folder, "train.json"))
        else:
            train = _train(config, rows, args.sweep_steps, folder)
        final = train["probe"][-1]
        points.append({"image_size": size, "unlocked_image_layers": unlocked, "learning_rate": lr, "steps": train["steps"],
                       "feature_cache_layer": 12 - deepest[size], "wall_time_s": train["wall_time_s"],
                       "feature_cache_s": train["feature_cache_s"],
                       **{k: v for k, v in final.items() if k != "step"}})
        print(json.dumps(points[-1]), flush=True)
    best = max(points, key=lambda p: p["zero_shot_weighted_f1"])  # on validation
    report = {
        "command": command("benchmarks.fashion", args.argv),
        "what": "short runs of training/configs/fashion.yaml at each grid point; validation split only",
        "validation_rows": len(rows),
        "hardware": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "points": points,
        "chosen": {k: best[k] for k in ("image_size", "unlocked_image_layers", "learning_rate")},
    }
    write_json(os.path.join(args.results_dir, "fashion_sweep.json"), report)
    print(json.dumps(report["chosen"]))
    return 0


# ===================================================================================================== report
def flat(results: dict) -> dict:
    from eclip.training.evaluation.report import flatten_metrics

    return flatten_metrics(results["tasks"])


def _committed_scratch(reference: str) -> tuple[dict, dict]:
    """The from-scratch model of a committed comparison (`PATH:VARIANT`): its training record and test metrics.

    Training it again takes about half an hour on 2 cores (500 steps of a ViT and MiniLM at batch 64), time the
    fashion run need not spend: the committed comparison trained the same recipe (`training/configs/default.yaml`'s
    options, 64 px, 500 steps, seed 0) on the same train split and evaluated it on the same test split."""
    path, _, variant = reference.rpartition(":")
    results = read_json(path if os.path.isabs(path) else os.path.join(REPO, path))
    if variant not in results["variants"]:
        raise SystemExit(f"--scratch-from: {path} has no variant {variant!r}; it has {', '.join(results['variants'])}.")
    entry = results["variants"][variant]
    train = {"wall_time_s": entry["train"]["wall_time_s"], "steps": entry["train"]["steps"],
             "config": {"settings": results["settings"], "eclip_overrides": entry["eclip_overrides"]}}
    return {"train": train, "results": {"wall_time_s": entry.get("eval_wall_time_s")}}, entry["metrics"]


def report(args) -> int:
    rows = validation_rows(args.data)
    fashion_folder = os.path.join(args.output_dir, "fashion")
    fashion = run_model("fashion", _fashion_config(os.path.join(fashion_folder, "model")), fashion_folder, args, rows)
    metrics = {"fashion": flat(fashion["results"])}
    if args.train_scratch:
        scratch_folder = os.path.join(args.output_dir, "scratch")
        scratch = run_model("scratch", _scratch_config(os.path.join(scratch_folder, "model"), args.data),
                            scratch_folder, args, None)
        metrics["scratch"] = flat(scratch["results"])
        scratch_source = "trained and evaluated by this run"
    else:
        scratch, metrics["scratch"] = _committed_scratch(args.scratch_from)
        scratch_source = (f"{args.scratch_from}: trained and evaluated on the same test split by the from-scratch "
                          "comparison")
    out = {
        "command": command("benchmarks.fashion", args.argv),
        "hardware": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "models": {
            "fashion": {"description": "training/configs/fashion.yaml: DINOv2-S (locked, feature cache) + MiniLM-L6",
                        "train_wall_time_s": fashion["train"]["wall_time_s"], "steps": fashion["train"]["steps"],
                        "eval_wall_time_s": fashion["results"].get("wall_time_s"),
                        "validation_probe": fashion["train"]["probe"], "loss_curve": fashion["train"]["loss_curve"],
                        "selection_refit": fashion["train"].get("selection_refit"),
                        "config": fashion["train"]["config"], "metrics": metrics["fashion"]},
            "scratch": {"description": "training/configs/default.yaml on fashion-products: 64-px ViT from scratch "
                                       "+ MiniLM-L6 (the settings of the from-scratch comparison, "
                                       "benchmarks/results/eclip_vs_clip.json)",
                        "train_wall_time_s": scratch["train"]["wall_time_s"], "steps": scratch["train"]["steps"],
                        "eval_wall_time_s": scratch["results"].get("wall_time_s"),
                        "config": scratch["train"]["config"], "metrics": metrics["scratch"], "source": scratch_source},
        },
        "headline": [{"key": key, "label": label, "fashion": metrics["fashion"].get(key),
                      "scratch": metrics["scratch"].get(key)} for key, label in HEADLINE],
        "test_rows": fashion["results"]["data"]["fashion_products"].get("test"),
    }
    write_json(os.path.join(args.results_dir, "fashion.json"), out)
    table = markdown_table(out)
    write_text(os.path.join(args.results_dir, "fashion.md"), table + "\n")
    print(table)
    return 0


def markdown_table(out: dict) -> str:
    """docs/fashion.md's table: the headline metrics of `fashion.json`, fashion ECLIP beside the from-scratch model."""
    lines = ["| metric (test split) | fashion ECLIP | from scratch |", "| --- | --- | --- |"]
    for row in out["headline"]:
        lines.append(f"| {row['label']} | {_fmt(row['fashion'])} | {_fmt(row['scratch'])} |")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true", help="Run the validation sweep instead of the report.")
    parser.add_argument("--grid", default="112:0,112:1,168:0",
                        help="Sweep points SIZE:UNLOCKED_BLOCKS[:LEARNING_RATE] (default rate: the recipe's).")
    parser.add_argument("--sweep-steps", type=int, default=120)
    parser.add_argument("--probe-every", type=int, default=100)
    parser.add_argument("--data", default=None, help="The shared data folder (default: $ECLIP_DATA_DIR).")
    parser.add_argument("--output-dir", default=os.path.join(REPO, "runs", "fashion"))
    parser.add_argument("--results-dir", default=RESULTS,
                        help="Where fashion.json, fashion.md and fashion_sweep.json go (default: the committed ones).")
    parser.add_argument("--reuse", action="store_true", help="Keep trained models and evaluations with these settings.")
    parser.add_argument("--limit", type=int, help="Smoke runs: train on the first N rows, probe N validation rows.")
    parser.add_argument("--train-scratch", action="store_true",
                        help="Train and evaluate the from-scratch model here (about half an hour on 2 cores) "
                             "instead of reading it from --scratch-from.")
    parser.add_argument("--scratch-from", default="benchmarks/results/eclip_vs_clip.json:eclip_scene_matched",
                        help="PATH:VARIANT of a committed comparison whose from-scratch model is the baseline column.")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from eclip.training.data import resolve_data_dir

    args.data = os.path.abspath(args.data or resolve_data_dir())
    os.environ["ECLIP_DATA_DIR"] = args.data
    return sweep(args) if args.sweep else report(args)


if __name__ == "__main__":
    sys.exit(main())
