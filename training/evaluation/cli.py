# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""`eclip-evaluate` (also `python -m training.evaluation`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import torch

from training.evaluation.data import DEFAULT_TEMPLATES
from training.evaluation.report import results_markdown
from training.evaluation.runner import evaluate_model, prepare
from training.evaluation.tasks import TASKS


def _load(path: str, device):
    import modeling_eclip  # noqa: F401  (registers ECLIP with the Auto classes)
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    if device is not None:
        model.to(device)
    return model, processor


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    parser.add_argument("--update-card", action="store_true", help="write README.md (model card) into --model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--confusion-classes", type=int, default=15, help="classes in the confusion-matrix plot")
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    try:
        # Every input is checked before a checkpoint is loaded, so a typo fails in a second.
        prepare(args.data, args.tasks, args.limit, args.seed, args.templates)
        if args.update_card and not os.path.isdir(args.model):
            raise ValueError(f"--update-card needs --model to be a local folder; {args.model!r} is not one.")
        model, processor = _load(args.model, device)
        baseline_model = baseline_processor = None
        if args.baseline:
            baseline_model, baseline_processor = _load(args.baseline, device)
        results = evaluate_model(
            model, processor, args.data, args.tasks, args.output, limit=args.limit,
            baseline_model=baseline_model, baseline_processor=baseline_processor,
            model_path=args.model, baseline_path=args.baseline, batch_size=args.batch_size,
            templates=args.templates, seed=args.seed, device=device, confusion_classes=args.confusion_classes,
            update_card=args.update_card, show_progress=not args.no_progress,
        )
    except ValueError as error:
        parser.error(str(error))  # exits with status 2 and the message
    sys.stdout.write(results_markdown(results))
    print(f"\nwrote {os.path.join(args.output, 'results.json')} and {os.path.join(args.output, 'results.md')}")
    if results.get("model_card"):
        print(f"wrote model card {results['model_card']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main"]
