# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
What serving through ONNX costs in accuracy: one trained model evaluated three ways on the fashion test split, PyTorch
(eager, float32), its ONNX export in float32 and its int8 export (`eclip-export --quantize int8`), with the same
evaluation code (`eclip-evaluate`, `--onnx`).

```bash
python -m benchmarks.onnx_accuracy --model eclip-fashion --output benchmarks/results/onnx_accuracy.json
```

Reports zero-shot articleType (accuracy, weighted F1) and product retrieval (text-to-image and image-to-text R@1,
R@10) per runtime, and each ONNX runtime's difference to PyTorch. The export is written to `--export-dir` (made with
`--quantize int8` when missing; `--reuse` keeps an export and evaluations made before).

Each export and evaluation is recorded with the settings it was made with (`WORK_DIR/<name>.settings.json`: the
model's path and a hash of its config and weights, and for an evaluation the export, limit, data folder, tasks and
batch size); `--reuse` keeps one only when those match this run's, and otherwise stops naming what differs.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from benchmarks.records import REPO, RESULTS, check_reuse, command, cpu_name, read_json, write_json

TASKS = "zero_shot,retrieval"
METRICS = (
    ("zero_shot", "weighted_f1"),
    ("zero_shot", "accuracy"),
    ("retrieval", "text_to_image", "recall@1"),
    ("retrieval", "image_to_text", "recall@1"),
    ("retrieval", "text_to_image", "recall@10"),
)
RUNTIMES = ("pytorch", "onnx_float32", "onnx_int8")


def metric_name(path: tuple) -> str:
    return "/".join(path)


def read_metric(results: dict, path: tuple) -> float:
    value = results["tasks"]
    for key in path:
        value = value[key]
    return float(value)


def model_fingerprint(model: str) -> dict:
    """What identifies `--model`: its absolute path and a SHA-256 over its config.json and weight files (a Hub id or a
    path that is not a folder: the name alone)."""
    import hashlib

    from eclip.training.feature_cache import file_digest

    if not os.path.isdir(model):
        return {"model": model}
    names = sorted(name for name in os.listdir(model)
                   if name == "config.json" or name.endswith((".safetensors", ".bin")))
    digest = hashlib.sha256()
    for name in names:
        digest.update(f"{name}:{file_digest(os.path.join(model, name))}\n".encode("utf-8"))
    return {"model": os.path.abspath(model), "model_files": names, "model_sha256": digest.hexdigest()}


def settings_path(args, name: str) -> str:
    return os.path.join(args.work_dir, f"{name}.settings.json")


def can_reuse(args, name: str, result: str, settings: dict) -> bool:
    """With `--reuse`, whether the result at `result` (a file or folder) may be kept: it exists and was recorded
    with `settings` (else `check_reuse` stops, naming what differs). A result without recorded settings (made before
    they were recorded, or by a run cut off) cannot be checked: it stops too."""
    if not (args.reuse and os.path.exists(result)):
        return False
    path = settings_path(args, name)
    if not os.path.isfile(path):
        raise SystemExit(f"--reuse: {result} has no record of the settings it was made with ({path}); remove it or "
                         "run without --reuse.")
    check_reuse(result, read_json(path), settings)
    return True


def forget_settings(args, name: str) -> None:
    """Before a result is made again: its old settings go first, so a run cut off midway leaves nothing reusable."""
    path = settings_path(args, name)
    if os.path.isfile(path):
        os.remove(path)


def evaluation_settings(runtime: str, args, export_settings: dict) -> dict:
    from eclip.training.data import resolve_data_dir

    model = export_settings if runtime != "pytorch" else export_settings["model"]
    return {"runtime": runtime, "model": model, "limit": args.limit, "tasks": TASKS, "batch_size": args.batch_size,
            "data": os.path.abspath(args.data) if args.data else resolve_data_dir()}


def evaluate(runtime: str, args, export_dir: str, export_settings: dict) -> tuple[dict, float]:
    from eclip.training.evaluation import main as evaluate_main

    out = os.path.join(args.work_dir, runtime)
    settings = evaluation_settings(runtime, args, export_settings)
    if can_reuse(args, runtime, os.path.join(out, "results.json"), settings):
        results = read_json(os.path.join(out, "results.json"))
        return results, float(results.get("wall_time_s", 0.0))
    forget_settings(args, runtime)
    argv = ["--tasks", TASKS, "--output", out, "--no-progress", "--batch-size", str(args.batch_size)]
    if args.limit:
        argv += ["--limit", str(args.limit)]
    if args.data:
        argv += ["--data", args.data]
    if runtime == "pytorch":
        argv += ["--model", args.model]
    else:
        argv += ["--model", export_dir, "--onnx", "--onnx-precision", runtime.split("_")[1]]
    started = time.time()
    code = evaluate_main(argv)
    if code:
        raise SystemExit(f"eclip-evaluate failed for {runtime} (exit {code}).")
    write_json(settings_path(args, runtime), settings)
    return read_json(os.path.join(out, "results.json")), time.time() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A trained model folder (the fashion model).")
    parser.add_argument("--output", default=os.path.join(RESULTS, "onnx_accuracy.json"))
    parser.add_argument("--export-dir", default=None, help="Its ONNX export (default: WORK_DIR/export).")
    parser.add_argument("--work-dir", default=os.path.join(REPO, "runs", "onnx_accuracy"))
    parser.add_argument("--data", default=None, help="The shared data folder (default: $ECLIP_DATA_DIR).")
    parser.add_argument("--limit", type=int, default=None, help="Smoke runs: rows per split.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reuse", action="store_true", help="Keep an export and evaluations made before.")
    args = parser.parse_args(argv)

    from eclip.training.export import main as export_main

    export_dir = args.export_dir or os.path.join(args.work_dir, "export")
    export_settings = {"model": model_fingerprint(args.model), "export_dir": os.path.abspath(export_dir),
                       "quantize": "int8"}
    if not can_reuse(args, "export", os.path.join(export_dir, "vision_model_int8.onnx"), export_settings):
        forget_settings(args, "export")
        code = export_main([args.model, export_dir, "--quantize", "int8", "--overwrite"]
                           if os.path.exists(export_dir) else [args.model, export_dir, "--quantize", "int8"])
        if code:
            raise SystemExit(f"eclip-export failed (exit {code}).")
        write_json(settings_path(args, "export"), export_settings)
    runs = {runtime: evaluate(runtime, args, export_dir, export_settings) for runtime in RUNTIMES}
    table = {runtime: {metric_name(path): read_metric(results, path) for path in METRICS}
             for runtime, (results, _) in runs.items()}
    out = {
        "command": command("benchmarks.onnx_accuracy", argv if argv is not None else []),
        "hardware": {"machine": platform.machine(), "cpu": cpu_name(), "cpus": os.cpu_count()},
        "model": os.path.basename(os.path.normpath(args.model)),
        "limit": args.limit,
        "tasks": TASKS,
        "metrics": table,
        "difference_to_pytorch": {runtime: {name: table[runtime][name] - table["pytorch"][name] for name in table[runtime]}
                                  for runtime in RUNTIMES[1:]},
        "wall_time_s": {runtime: seconds for runtime, (_, seconds) in runs.items()},
    }
    write_json(args.output, out)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
