# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
`eclip-evaluate` (also `python -m eclip.training.evaluation`). Arguments, paths and the data are checked before torch and
the model load (a mistake is one line, exit status 2); `--help` imports nothing heavy. With `--update-card` the model
folder's card gets the results (and keeps the facts of the card it had); `--push-to-hub ORG/NAME` (implies
`--update-card`) then publishes the folder in one commit.
"""

from __future__ import annotations

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
    fail,
)
from eclip.training.evaluation.data import DEFAULT_TEMPLATES
from eclip.training.evaluation.task_names import TASKS


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
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--confusion-classes", type=int, default=15, help="classes in the confusion-matrix plot")
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
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
    check_model_reference(args.model, local_because="--update-card (and --push-to-hub) write the card into the "
                          "model's folder" if args.update_card else None)
    if args.baseline is not None:
        check_model_reference(args.baseline, "--baseline")
    for flag, value in (("--batch-size", args.batch_size), ("--confusion-classes", args.confusion_classes),
                        ("--num-threads", args.num_threads)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be positive, got {value}.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_args(args)
        # Every input is checked before a checkpoint is loaded, so a typo fails in seconds.
        from eclip.training.evaluation.runner import prepare

        prepare(args.data, args.tasks, args.limit, args.seed, args.templates)
    except (UsageError, ValueError) as error:  # prepare's ValueErrors name a task, a file or a split
        return fail(parser.prog, error)

    import torch

    from eclip.training.evaluation.report import results_markdown
    from eclip.training.evaluation.runner import evaluate_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    model, processor = _load(args.model, device)
    baseline_model = baseline_processor = None
    if args.baseline:
        baseline_model, baseline_processor = _load(args.baseline, device)
    results = evaluate_model(
        model, processor, args.data, args.tasks, args.output, limit=args.limit,
        baseline_model=baseline_model, baseline_processor=baseline_processor,
        model_path=args.model, baseline_path=args.baseline, batch_size=args.batch_size,
        templates=args.templates, seed=args.seed, device=device, confusion_classes=args.confusion_classes,
        update_card=args.update_card, show_progress=not args.no_progress, repo_id=args.push_to_hub,
    )
    sys.stdout.write(results_markdown(results))
    print(f"\nwrote {os.path.join(args.output, 'results.json')} and {os.path.join(args.output, 'results.md')}")
    if results.get("model_card"):
        print(f"wrote model card {results['model_card']}", flush=True)
    if args.push_to_hub:
        from eclip.training.hub import PushError, push_folder

        try:
            commit = push_folder(args.model, args.push_to_hub, private=args.hub_private, revision=args.hub_revision)
        except PushError as error:
            return fail(parser.prog, error, status=1)
        print(f"pushed {args.model} to {getattr(commit, 'commit_url', None) or args.push_to_hub}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "check_args", "main"]
