# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
`eclip-evaluate` (also `python -m eclip.training.evaluation`). Arguments, paths and the data are checked before torch and
the model load (a mistake is one line, exit status 2); `--help` imports nothing heavy. With `--update-card` the model
folder's card gets the results (and keeps the facts of the card it had); `--push-to-hub ORG/NAME` (implies
`--update-card`) then publishes the folder in one commit.

An image that cannot be decoded is skipped, counted and named in one warning (`--on-bad-image skip`, the default), or
stops the run before the model loads with one line naming it (`--on-bad-image error`, exit status 1). A fine-tuned
folder (an `eclip-finetune` head, a LoRA adapter) is evaluated through its backbone's embeddings, which one log line
says (the head's own metrics are in its `test_metrics.json`). The last lines say where each output went.

With `--onnx`, `--model` is an ONNX export (`eclip-export FOLDER OUT`, a local folder) and the benchmarks run through
onnxruntime on the CPU (`eclip.training.export.EclipOnnxModel`), its float32 graphs or, with `--onnx-precision int8`,
the int8 ones (`eclip-export --quantize int8`); `--device` then applies to the `--baseline` only. Every task runs
but `instance_retrieval` of a model with the instance decoder: it reads the decoder's cross-attention maps, which the
export does not compute (`--tasks all`, the default, leaves it out with one log line; naming it is refused). An
export has no model card to update (`--update-card` is refused).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence

from eclip.training.cli import (
    ArgumentParser,
    UsageError,
    add_hub_arguments,
    check_hub_arguments,
    check_model_reference,
    check_path,
    fail,
)
from eclip.training.evaluation.data import DEFAULT_TEMPLATES
from eclip.training.evaluation.images import UnreadableImage, add_on_bad_image_argument, one_line
from eclip.training.evaluation.task_names import ATTENTION_TASKS, TASKS
from eclip.training.export import PRECISIONS


def _load_onnx(path: str, precision: str, num_threads: int | None):
    """The ONNX export in `path` (its `precision` graphs on onnxruntime's CPU provider) and its processor."""
    import modeling_eclip  # noqa: F401  (registers ECLIP's processor with AutoProcessor)
    import onnxruntime
    from transformers import AutoProcessor

    from eclip.training.export import EclipOnnxModel

    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    model = EclipOnnxModel.from_pretrained(path, precision=precision, session_options=options)
    return model, AutoProcessor.from_pretrained(path)


def _load(path: str, device):
    import modeling_eclip  # noqa: F401  (registers ECLIP with the Auto classes)
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    if device is not None:
        model.to(device)
    return model, processor


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="eclip-evaluate",
        description="Evaluate an ECLIP checkpoint (and optionally the CLIP baseline) on the ECLIP benchmarks.",
    )
    parser.add_argument("--model", required=True, help="saved model folder or Hub id")
    parser.add_argument("--data", default=None, help="data folder (default $ECLIP_DATA_DIR or ../shared/data next to the project)")
    parser.add_argument("--tasks", default="all", help=f"'all' or a comma list of: {', '.join(TASKS)}")
    parser.add_argument("--output", required=True, help="output folder (results.json, results.md, plots)")
    parser.add_argument("--baseline", default=None, help="a second checkpoint (the CLIP baseline) to compare with")
    parser.add_argument("--limit", type=int, default=None, help="cap rows per split (deterministic) for quick runs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--templates", nargs="+", default=None, metavar="TEMPLATE",
                        help=f"prompt templates with one '{{}}' (default: {' / '.join(DEFAULT_TEMPLATES)})")
    parser.add_argument("--update-card", action="store_true",
                        help="write README.md (model card with the results) into --model, keeping its earlier facts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--onnx", action="store_true",
                        help="--model is an ONNX export (eclip-export): run it with onnxruntime on the CPU "
                        "(every task but instance_retrieval)")
    parser.add_argument("--onnx-precision", choices=PRECISIONS, default=None,
                        help="the export's graphs to run with --onnx (default float32; int8 needs "
                        "eclip-export --quantize int8)")
    parser.add_argument("--device", default=None,
                        help="torch device (default: cuda if available, else cpu); with --onnx, the --baseline's")
    parser.add_argument("--confusion-classes", type=int, default=15, help="classes in the confusion-matrix plot")
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_on_bad_image_argument(parser)
    add_hub_arguments(parser, "--model's folder with its updated card (implies --update-card)")
    return parser


def check_args(args) -> None:
    """Everything but the data files (`prepare` reads those), checked before torch loads: raises `UsageError`."""
    from eclip.training.evaluation.task_names import parse_tasks

    try:
        parse_tasks(args.tasks)
    except ValueError as error:
        raise UsageError(str(error)) from None
    check_hub_arguments(args)
    if args.push_to_hub:
        args.update_card = True
    if args.onnx_precision is not None and not args.onnx:
        raise UsageError(f"--onnx-precision {args.onnx_precision} needs --onnx (--model an ONNX export).")
    if args.onnx:
        check_onnx_model(args)
    else:
        check_model_reference(args.model, local_because="--update-card (and --push-to-hub) write the card into "
                              "the model's folder" if args.update_card else None)
    if args.baseline is not None:
        check_model_reference(args.baseline, "--baseline")
    for flag, value in (("--batch-size", args.batch_size), ("--confusion-classes", args.confusion_classes),
                        ("--num-threads", args.num_threads)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be positive, got {value}.")


def check_onnx_model(args) -> None:
    """`--onnx`: `--model` must be a local ONNX export holding the graphs of `--onnx-precision` and its config, and
    the tasks must be ones an export can run. Reads JSON only (no torch); raises `UsageError`."""
    from eclip.training.evaluation.task_names import asks_for_all, parse_tasks
    from eclip.training.export import read_export_info

    if args.update_card:
        raise UsageError("--onnx evaluates an export, which has no model card: --update-card and --push-to-hub "
                         "write the PyTorch model's card (evaluate its folder without --onnx for that).")
    try:
        folder = check_path(args.model, "--model")  # names a near miss, or that it is a file
    except UsageError as error:
        raise UsageError(f"{str(error).rstrip('.')}: with --onnx, --model must be a local ONNX export folder "
                         "(eclip-export FOLDER OUT writes one).") from None
    precision = args.onnx_precision or PRECISIONS[0]
    try:
        info, _ = read_export_info(folder, precision)
    except ValueError as error:
        raise UsageError(f"--model with --onnx: {error}") from None
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise UsageError(f"--model {args.model!r} has no config.json beside its graphs: export it again with "
                         "eclip-export.")
    tasks = parse_tasks(args.tasks)
    blocked = [task for task in tasks if task in ATTENTION_TASKS]
    if blocked and info.get("use_instance_decoder"):
        kept = ",".join(task for task in tasks if task not in ATTENTION_TASKS) or "zero_shot"
        if asks_for_all(args.tasks):  # "all" means all an export can run; only a task named outright is refused
            logging.getLogger("eclip-evaluate").warning(
                "--onnx: leaving out %s (it reads the instance decoder's cross-attention maps, which the ONNX export "
                "does not compute); evaluate the PyTorch model for it.", ", ".join(blocked))
            args.tasks = kept
            return
        raise UsageError(f"--onnx: {', '.join(blocked)} reads the instance decoder's cross-attention maps, which "
                         f"the ONNX export does not compute; pass --tasks {kept}, or evaluate the PyTorch model.")


HEAD_TASKS = {"EclipForProductClassification": "classification", "EclipForTokenClassification": "attribute-tagging",
              "EclipForProductMatching": "product-matching"}


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def fine_tuned_note(folder: str) -> str | None:
    """
    One line saying what eclip-evaluate scores when `folder` is a fine-tuned head or a LoRA adapter (its backbone's
    embeddings, not the head), naming the head's task and labels and where its own test metrics are; `None` for an
    `EclipModel` folder, a Hub id or anything else.
    """
    if not os.path.isdir(folder):
        return None
    config = _read_json(os.path.join(folder, "config.json"))
    head = next((name for name in config.get("architectures") or [] if name in HEAD_TASKS), None)
    adapter = os.path.isfile(os.path.join(folder, "adapter_config.json"))
    if head is None:
        return None
    # eclip-finetune --merge-lora writes the merged model to OUTPUT/merged, next to the run's test_metrics.json.
    places = [folder]
    if os.path.basename(os.path.normpath(folder)) == "merged":
        places.append(os.path.dirname(os.path.normpath(folder)) or os.curdir)
    metrics_path = next((os.path.join(where, "test_metrics.json") for where in places
                         if os.path.isfile(os.path.join(where, "test_metrics.json"))), None)
    metrics = _read_json(metrics_path) if metrics_path else {}
    task = metrics.get("task") or HEAD_TASKS[head]
    labels = [str(label) for _, label in sorted((config.get("id2label") or {}).items(), key=lambda kv: int(kv[0]))]
    shown = ", ".join(labels[:8]) + (f", ... ({len(labels)} labels)" if len(labels) > 8 else "")
    if shown:
        shown = f", {metrics['label_column'] + ' ' if metrics.get('label_column') else ''}labels: {shown}"
    what = f"a LoRA adapter of a {task} head" if adapter else f"a {task} head"
    scored = "its base model's embeddings with the adapter applied" if adapter else "its backbone's embeddings"
    where = (f"; the head's own test metrics are in {metrics_path}" if metrics_path
             else "; the head itself is not evaluated")
    return f"{folder} holds {what} ({head}{shown}); eclip-evaluate scores {scored}, not the head{where}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_args(args)
        from eclip.training.progress import disable_progress_bars_off_terminal

        disable_progress_bars_off_terminal()  # a log file gets plain lines, no carriage-return redraws
        # Every input is checked before a checkpoint is loaded, so a typo fails in seconds; every image is decoded.
        from eclip.training.evaluation.runner import prepare

        prepared = prepare(args.data, args.tasks, args.limit, args.seed, args.templates,
                           on_bad_image=args.on_bad_image, show_progress=not args.no_progress)
    except UnreadableImage as error:  # --on-bad-image error
        return fail(parser.prog, one_line(error), status=1)
    except (UsageError, ValueError) as error:  # prepare's ValueErrors name a task, a file or a split
        return fail(parser.prog, error)
    for folder in (args.model, args.baseline):
        note = fine_tuned_note(folder) if folder else None
        if note:
            logging.getLogger("eclip-evaluate").warning("%s", note)

    import torch

    from eclip.training.evaluation.report import results_markdown
    from eclip.training.evaluation.runner import evaluate_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    if args.onnx:
        model, processor = _load_onnx(args.model, args.onnx_precision or PRECISIONS[0], args.num_threads)
    else:
        model, processor = _load(args.model, device)
    baseline_model = baseline_processor = None
    if args.baseline:
        baseline_model, baseline_processor = _load(args.baseline, device)
    try:
        results = evaluate_model(
            model, processor, args.data, args.tasks, args.output, limit=args.limit,
            baseline_model=baseline_model, baseline_processor=baseline_processor,
            model_path=args.model, baseline_path=args.baseline, batch_size=args.batch_size,
            templates=args.templates, seed=args.seed, device=device, confusion_classes=args.confusion_classes,
            update_card=args.update_card, show_progress=not args.no_progress, repo_id=args.push_to_hub,
            on_bad_image=args.on_bad_image, prepared=prepared,
        )
    except UnreadableImage as error:  # an image that changed since it was checked
        return fail(parser.prog, one_line(error), status=1)
    sys.stdout.write(results_markdown(results))
    print("\n".join(summary_lines(results, args.output)), flush=True)
    if args.push_to_hub:
        from eclip.training.hub import PushError, push_folder

        try:
            commit = push_folder(args.model, args.push_to_hub, private=args.hub_private, revision=args.hub_revision)
        except PushError as error:
            return fail(parser.prog, error, status=1)
        print(f"  pushed:        {args.model} to {getattr(commit, 'commit_url', None) or args.push_to_hub}", flush=True)
    return 0


def summary_lines(results: dict, output: str) -> list[str]:
    """The run's last lines: what was evaluated, the images skipped, and where every output went."""
    from eclip.training.evaluation.report import BASELINE_SUBDIR

    tasks = results.get("tasks_run", [])
    runtime = (results.get("config") or {}).get("runtime") or {}
    onnx = runtime.get("backend") == "onnxruntime"
    how = f" (ONNX export, {runtime.get('precision')} graphs, onnxruntime)" if onnx else ""
    lines = ["", f"eclip-evaluate finished: {len(tasks)} task(s) ({', '.join(tasks)}) on {results.get('model_path')}"
             f"{how}"]
    skipped = results.get("skipped_images") or {}
    if skipped.get("count"):
        lines.append(f"  skipped images: {skipped['count']} unreadable (named in the warning above and in results.json)")
    lines.append(f"  results:        {os.path.join(output, 'results.json')}")
    lines.append(f"  report:         {os.path.join(output, 'results.md')}")
    plots = [os.path.join(output, name) for name in (results.get("plots") or {}).values()]
    if plots:
        lines.append(f"  plots:          {', '.join(plots)}")
    baseline_plots = [os.path.join(output, BASELINE_SUBDIR, name)
                      for name in ((results.get("baseline") or {}).get("plots") or {}).values()]
    if baseline_plots:
        lines.append(f"  baseline plots: {', '.join(baseline_plots)}")
    if results.get("model_card"):
        lines.append(f"  model card:     {results['model_card']}")
    return lines


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "check_args", "main"]
