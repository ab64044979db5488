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
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from benchmarks.records import REPO, RESULTS, command, cpu_name, read_json, write_json

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


def evaluate(runtime: str, args, export_dir: str) -> tuple[dict, float]:
    from eclip.training.evaluation import main as evaluate_main

    out = os.path.join(args.work_dir, runtime)
    if args.reuse and os.path.isfile(os.path.join(out, "results.json")):
        results = read_json(os.path.join(out, "results.json"))
        return results, float(results.get("wall_time_s", 0.0))
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
    if not (args.reuse and os.path.isfile(os.path.join(export_dir, "vision_model_int8.onnx"))):
        code = export_main([args.model, export_dir, "--quantize", "int8", "--overwrite"]
                           if os.path.exists(export_dir) else [args.model, export_dir, "--quantize", "int8"])
        if code:
            raise SystemExit(f"eclip-export failed (exit {code}).")
    runs = {runtime: evaluate(runtime, args, export_dir) for runtime in RUNTIMES}
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
