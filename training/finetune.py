"""``eclip-finetune``: fine-tune an ECLIP checkpoint on a downstream task with ``transformers.Trainer``.

One module of ~830 lines because it is one command's pipeline, read top to bottom: the argument checks that run
before anything loads, the four tasks' collators and metrics, the unreadable-image skipping, LoRA and the Hub step.

Tasks (data and label rules in :mod:`eclip.training.finetune_data`):

* ``category``    -- product category (``--label-column``, default ``articleType``) from image, text or both
                     (``EclipForProductClassification``); test accuracy, macro F1 and weighted F1.
* ``restricted``  -- Innerwear vs the rest as the stand-in for adult / restricted products, binary with one sigmoid
                     logit; test ROC-AUC, recall at 95 % precision, and F1 at the threshold tuned on validation.
* ``attributes``  -- BIO tagging of titles (BRAND, GENDER, COLOUR, TYPE; ``EclipForTokenClassification``); test
                     entity-level F1.
* ``matching``    -- product matching on Walmart-Amazon and Abt-Buy text pairs (``EclipForProductMatching``); test F1
                     at the threshold tuned on each benchmark's validation split, ROC-AUC.

The backbone starts from ``--model`` (an ``EclipModel`` folder, or a fine-tuned head). ``--lora`` trains LoRA adapters
plus the head instead of every weight; ``--freeze-backbone`` trains the head alone. The output folder gets the model
(or the adapter and the head config, see the README's "LoRA adapters"), the processor, a model card and
``test_metrics.json`` (the test metrics with a trivial baseline next to them: majority class, all-``O`` tags, or
"always a match / always restricted"). It is written atomically; one that already holds a model is replaced only with
``--overwrite``, and ``--push-to-hub ORG/NAME`` publishes it in one commit; nothing is written there (not even an
empty folder) unless the run succeeds. Arguments, paths, the label column and the LoRA spec are checked before torch,
a model or the data load (one line, exit status 2); this module imports no torch at import time, so ``--help`` answers
at once.

Images are decoded in the collator, as ``eclip-pretrain`` decodes them (``eclip.training.data.decode_image``); one
that cannot be decoded (a truncated JPEG, a file that is no image) drops its row, and the run ends with one log line
counting and naming such files (``test_metrics.json`` lists them all). ``--on-bad-image error`` stops at the first
instead, with one line naming the file (exit status 1). The last lines printed say where each artefact went.

Example::

    eclip-finetune --task category --label-column masterCategory --model runs/eclip --data ../shared/data \\
        --modality image --lora r=16,alpha=32,dropout=0.05 --epochs 1 --output-dir runs/category
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import shutil
import sys
import tempfile

import numpy as np

from eclip.training.cli import (
    ArgumentParser,
    UsageError,
    add_hub_arguments,
    check_hub_arguments,
    check_model_reference,
    check_output_dir,
    fail,
    suggest,
)
from eclip.training.evaluation.images import add_on_bad_image_argument
from eclip.training.fashion import FASHION_DIR, LABEL_FIELD, METADATA_FILE
from eclip.training.matching_data import DEFAULT_SERIALIZATION, SERIALIZATIONS

logger = logging.getLogger("eclip-finetune")

TASKS = ("category", "attributes", "matching", "restricted")
DEFAULT_MODALITY = {"category": "image", "restricted": "image", "attributes": "text", "matching": "text"}
DEFAULT_MAX_LENGTH = {"category": 64, "restricted": 64, "attributes": 64, "matching": None}  # None: measured
# Matching's default max_length: this quantile of the training pairs' token counts (measured per run).
MAX_LENGTH_QUANTILE = 0.95
TARGET_PRECISION = 0.95
# The batch key under which a collator lists the rows it left out, `(position in the batch, image, why)`: the trainer
# and `predict` take it off before the model sees the batch.
SKIPPED_KEY = "skipped_images"


# ----------------------------------------------------------------------------------------------------- collators
class ClassificationCollator:
    """
    Rows with ``image`` and/or ``productDisplayName`` and ``labels`` -> model inputs, processed on the fly.

    Images (undecoded ``{"bytes", "path"}`` dicts, paths or PIL images) are decoded here with pretraining's decoder
    (``eclip.training.data.decode_image``: fully loaded, so a truncated file fails here). A row whose image cannot be
    decoded is left out of the batch and listed under ``SKIPPED_KEY`` as ``(position, image, why)``
    (``on_bad_image="skip"``), or raises ``UnreadableImage`` naming the file (``"error"``). A batch whose every image
    failed holds only empty ``labels`` (and that list).
    """

    def __init__(self, processor, modality: str, max_length: int, label_dtype=None, on_bad_image: str = "skip"):
        self.processor, self.modality, self.max_length, self.label_dtype = processor, modality, max_length, label_dtype
        self.on_bad_image = on_bad_image

    def _decode(self, rows):
        """The rows whose image decodes, their images, and `(position, image, why)` of the others."""
        from eclip.training.data import decode_image
        from eclip.training.evaluation.images import image_problem, image_source, unreadable

        kept, images, dropped = [], [], []
        for position, row in enumerate(rows):
            try:
                image = decode_image(row.get("image"))
            # PIL raises OSError, SyntaxError, ValueError, struct.error... by format and damage (as in pretraining).
            except Exception as error:  # noqa: BLE001
                if self.on_bad_image == "error":
                    raise unreadable(image_source(row.get("image")), error) from None
                dropped.append((position, image_source(row.get("image")), image_problem(error)))
                continue
            kept.append(row)
            images.append(image)
        return kept, images, dropped

    def __call__(self, rows):
        import torch

        batch, dropped = {}, []
        if self.modality in ("image", "both"):
            rows, images, dropped = self._decode(rows)
            if not rows:
                return {"labels": torch.zeros(0, dtype=self.label_dtype or torch.long), SKIPPED_KEY: dropped}
            batch["pixel_values"] = self.processor(images=images, return_tensors="pt")["pixel_values"]
        if self.modality in ("text", "both"):
            texts = [row.get("productDisplayName") or "" for row in rows]
            batch.update(
                self.processor.tokenizer(
                    texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                )
            )
        batch["labels"] = torch.tensor([row["labels"] for row in rows], dtype=self.label_dtype or torch.long)
        if dropped:
            batch[SKIPPED_KEY] = dropped
        return batch


class TokenTagCollator:
    """Rows with ``words`` and ``tags`` -> token inputs; the first sub-word of each word carries its tag, other
    sub-words and special tokens ``-100``."""

    def __init__(self, tokenizer, label2id: dict[str, int], max_length: int):
        self.tokenizer, self.label2id, self.max_length = tokenizer, label2id, max_length

    def __call__(self, rows):
        import torch

        batch = self.tokenizer(
            [row["words"] for row in rows], is_split_into_words=True, padding=True, truncation=True,
            max_length=self.max_length, return_tensors="pt",
        )
        labels = torch.full(batch["input_ids"].shape, -100, dtype=torch.long)
        for i, row in enumerate(rows):
            previous = None
            for position, word in enumerate(batch.word_ids(i)):
                if word is not None and word != previous:
                    labels[i, position] = self.label2id[row["tags"][word]]
                previous = word
        batch["labels"] = labels
        return dict(batch)


class PairCollator:
    """
    Rows with ``text_a``, ``text_b`` and ``labels`` -> matcher inputs, padded to the batch's longest row (dynamic
    padding). Bi-encoder: the two products' token inputs (``*_b`` for the second), each cut at ``max_length``.
    Cross-encoder: one sequence per pair, ``[CLS] a [SEP] b [SEP]`` cut at ``max_length`` with ``longest_first``
    (tokens come off the longer side until the pair fits, so a long description cannot crowd out the other product).
    """

    def __init__(self, tokenizer, max_length: int, mode: str = "bi_encoder"):
        self.tokenizer, self.max_length, self.mode = tokenizer, max_length, mode

    def __call__(self, rows):
        import torch

        texts_a, texts_b = [row["text_a"] for row in rows], [row["text_b"] for row in rows]
        if self.mode == "cross_encoder":
            batch = dict(self.tokenizer(texts_a, texts_b, padding=True, truncation="longest_first",
                                        max_length=self.max_length, return_tensors="pt"))
        else:
            batch = {}
            for texts, suffix in ((texts_a, ""), (texts_b, "_b")):
                encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                         return_tensors="pt")
                batch.update({name + suffix: value for name, value in encoded.items()})
        batch["labels"] = torch.tensor([row["labels"] for row in rows], dtype=torch.float)
        return batch


def pair_lengths(tokenizer, split, mode: str) -> dict[str, list[int]]:
    """Untruncated token counts of each pair: ``joint`` (the cross-encoder's sequence) or ``a`` and ``b`` (each
    side, bi-encoder); the length grouping and the measured ``max_length`` read them."""
    if mode == "cross_encoder":
        return {"joint": [len(ids) for ids in tokenizer(list(split["text_a"]), list(split["text_b"]))["input_ids"]]}
    return {side: [len(ids) for ids in tokenizer(list(split[f"text_{side}"]))["input_ids"]] for side in ("a", "b")}


def measured_max_length(lengths: dict[str, list[int]], limit: int, quantile: float = MAX_LENGTH_QUANTILE) -> int:
    """The ``quantile`` of the training lengths (every side pooled), rounded up to a multiple of 8, at most ``limit``
    (the tower's position limit): the longest rows are cut, the bulk is not."""
    values = np.concatenate([np.asarray(v) for v in lengths.values()])
    return int(min(limit, 8 * math.ceil(np.quantile(values, quantile) / 8)))


# ----------------------------------------------------------------------------------------------------- helpers
def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="eclip-finetune", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--model", required=True, help="EclipModel folder (or a fine-tuned ECLIP head) to start from.")
    parser.add_argument("--data", default=None, help="data root (default $ECLIP_DATA_DIR or ../shared/data).")
    parser.add_argument("--modality", choices=("image", "text", "both"), default=None,
                        help="towers describing a product (default: image for category/restricted, text otherwise; "
                             "attributes and matching are text-only).")
    parser.add_argument("--label-column", default=LABEL_FIELD, help="category task: fashion-products column.")
    parser.add_argument("--matching-datasets", default="walmart-amazon,abt-buy",
                        help="matching task: comma-separated product-matching benchmarks.")
    parser.add_argument("--matching-mode", choices=("bi_encoder", "cross_encoder"), default="bi_encoder",
                        help="matching task: embed each product (bi_encoder) or read both as one sequence "
                             "(cross_encoder).")
    parser.add_argument("--serialization", choices=SERIALIZATIONS, default=DEFAULT_SERIALIZATION,
                        help=f"matching task: record text (default {DEFAULT_SERIALIZATION}; README, 'Product matching').")
    parser.add_argument("--skip-invalid-pairs", action="store_true",
                        help="matching task: skip (and count) invalid lines instead of stopping at the first one.")
    parser.add_argument("--bf16", action="store_true",
                        help="train under bfloat16 autocast (GPU, or a CPU with bf16 instructions); evaluation stays "
                             "float32.")
    parser.add_argument("--lora", nargs="?", const="", default=None, metavar="SPEC",
                        help="train LoRA adapters: r=16,alpha=32,dropout=0.05[,targets=name,name...]")
    parser.add_argument("--merge-lora", action="store_true", help="also write the merged model to OUTPUT/merged.")
    parser.add_argument("--freeze-backbone", action="store_true", help="train the head only.")
    parser.add_argument("--output-dir", default=None, help="default runs/finetune-<task>.")
    parser.add_argument("--processor", default=None, help="processor folder when --model has none.")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="overrides --epochs when > 0.")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most N rows per split (matching: per benchmark and split), a seeded sample.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="backbone / adapter learning rate (default 5e-5 full fine-tuning, 5e-4 LoRA).")
    parser.add_argument("--head-learning-rate", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-steps", type=float, default=0.06, help="steps, or a fraction of them when < 1.")
    parser.add_argument("--classifier-dropout", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=None,
                        help="token limit (default 64; matching: measured, the 95th percentile of the training "
                             "pairs' token counts).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--logging-steps", type=int, default=20)
    parser.add_argument("--overwrite", action="store_true", help="replace an output folder that already holds a model.")
    add_on_bad_image_argument(parser)
    add_hub_arguments(parser, "the output folder (model or adapter, merged/, processor, card, test metrics)")
    parser.add_argument("--base-model-id", default=None, metavar="REPO_ID",
                        help="Hub id of --model when it is a local folder: the pushed adapter's base model (default: "
                             "--model when it is a Hub id, else the repo id in --model's card).")
    return parser


def _check_args(args, parser):
    """Every argument, path and name, checked before torch, a model or the data load; raises `UsageError`."""
    if args.modality is None:
        args.modality = DEFAULT_MODALITY[args.task]
    if args.task == "attributes" and args.modality != "text":
        parser.error("--task attributes tags title tokens: --modality must be text.")
    if args.task == "matching" and args.modality != "text":
        parser.error("--task matching uses the text pairs of the product-matching benchmarks: --modality must be text.")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be positive.")
    for flag, value, low in (("--epochs", args.epochs, 0), ("--batch-size", args.batch_size, 0),
                             ("--eval-batch-size", args.eval_batch_size, 0), ("--head-learning-rate", args.head_learning_rate, 0),
                             ("--learning-rate", args.learning_rate, 0), ("--max-length", args.max_length, 0),
                             ("--logging-steps", args.logging_steps, 0)):
        if value is not None and not value > low:
            parser.error(f"{flag} must be positive, got {value}.")
    if args.lora is not None and args.freeze_backbone:
        logger.info("--lora already freezes the backbone; --freeze-backbone is implied.")
    if args.merge_lora and args.lora is None:
        parser.error("--merge-lora needs --lora.")
    if args.task != "matching" and args.matching_mode != "bi_encoder":
        parser.error("--matching-mode is for --task matching.")
    if args.lora is not None:
        from eclip.training.lora import parse_lora_spec

        try:
            parse_lora_spec(args.lora)
        except ValueError as error:
            raise UsageError(str(error)) from None
    args.max_length = args.max_length or DEFAULT_MAX_LENGTH[args.task]
    if args.learning_rate is None:
        args.learning_rate = 5e-4 if args.lora is not None else 5e-5
    args.output_dir = args.output_dir or os.path.join("runs", f"finetune-{args.task}")
    check_output_dir(args.output_dir, args.overwrite)
    check_hub_arguments(args)
    _check_model(args)
    _check_data(args)


def _check_model(args) -> None:
    """`--model` (and `--processor`) exist; a local model has a config and a processor; a pushed adapter has a base
    model on the Hub (`--base-model-id`)."""
    kind = check_model_reference(args.model)
    if kind == "local":
        if not os.path.isfile(os.path.join(args.model, "config.json")):
            raise UsageError(f"--model {args.model!r} is not a model folder: it has no config.json.")
        has_processor = any(os.path.isfile(os.path.join(args.model, name))
                            for name in ("processor_config.json", "tokenizer_config.json"))
        if not has_processor and args.processor is None:
            raise UsageError(f"--model {args.model!r} has no processor (processor_config.json): pass --processor FOLDER.")
    if args.processor is not None:
        check_model_reference(args.processor, "--processor")
    if args.base_model_id is not None:
        from eclip.training.cli import looks_like_repo_id

        if not looks_like_repo_id(args.base_model_id) or "/" not in args.base_model_id:
            raise UsageError(f"--base-model-id {args.base_model_id!r} is not a Hub repo id (ORG/NAME).")
    if args.push_to_hub and args.lora is not None and hub_base_model(args) is None:
        raise UsageError(
            f"--push-to-hub with --lora: the adapter's base model must be on the Hub, and --model {args.model!r} is a "
            "local folder whose card names no repo id: push it first, or pass --base-model-id ORG/NAME."
        )


def hub_base_model(args) -> str | None:
    """The Hub id of `--model`: `--base-model-id`, else `--model` itself when it is one, else the repo id its card
    was written for (`eclip-pretrain --push-to-hub`, `eclip-evaluate --update-card --push-to-hub`)."""
    if args.base_model_id:
        return args.base_model_id
    if not os.path.isdir(args.model):
        return args.model
    from eclip.model_cards.card import previous_card_fields

    return previous_card_fields(args.model).get("repo_id")


def _check_data(args) -> None:
    """The task's data files exist under `--data`; the label column and the matching benchmarks are real names."""
    import csv

    from eclip.training.data import resolve_data_dir

    data_dir = args.data or resolve_data_dir()
    if not os.path.isdir(data_dir):
        raise UsageError(f"--data {data_dir!r}: no such folder (set --data or ECLIP_DATA_DIR to the data root).")

    def source(*parts) -> str:
        path = os.path.join(data_dir, *parts)
        if not os.path.exists(path):
            here = os.path.dirname(path)
            names = os.listdir(here) if os.path.isdir(here) else []
            raise UsageError(f"{os.path.join(*parts)!r} not found under --data {data_dir!r}{suggest(parts[-1], names)}.")
        return path

    if args.task in ("category", "restricted"):
        with open(source(FASHION_DIR, METADATA_FILE), encoding="utf-8", newline="") as handle:
            columns = next(csv.reader(handle), [])
        if args.task == "category" and args.label_column not in columns:
            raise UsageError(f"--label-column {args.label_column!r} is not a fashion-products column"
                             f"{suggest(args.label_column, columns)}; columns: {', '.join(columns)}.")
    elif args.task == "attributes":
        source("fashion-titles.csv")
    else:
        names = [name.strip() for name in args.matching_datasets.split(",") if name.strip()]
        if not names:
            raise UsageError("--matching-datasets names no benchmark.")
        for name in names:
            source("product-matching", name)


def _with_lengths(splits, tokenizer, args):
    """Matching splits with a ``length`` column (token count after truncation: what a row costs, for the length
    grouping and the evaluation order) and the ``max_length``: ``--max-length``, else measured on the training pairs."""
    lengths = {name: pair_lengths(tokenizer, part, args.matching_mode) for name, part in splits.items()}
    max_length = args.max_length
    if max_length is None:
        limit = tokenizer.model_max_length if tokenizer.model_max_length <= 100_000 else 512
        max_length = measured_max_length(lengths["train"], limit)
        logger.info("max_length %d: the %.0fth percentile of the %d training pairs' token counts (%s), rounded up to "
                    "a multiple of 8", max_length, 100 * MAX_LENGTH_QUANTILE, len(splits["train"]),
                    "joint sequence" if args.matching_mode == "cross_encoder" else "each side")
    for name in splits:
        cost = sum(np.minimum(np.asarray(v), max_length) for v in lengths[name].values())
        splits[name] = splits[name].add_column("length", cost.tolist())
    return splits, max_length


def _is_head_parameter(name: str) -> bool:
    return "eclip." not in name


def build_optimizer(model, learning_rate: float, head_learning_rate: float, weight_decay: float):
    """AdamW with the head (any parameter outside the backbone ``eclip.*``) at its own, higher learning rate."""
    import torch

    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault((_is_head_parameter(name), parameter.ndim >= 2), []).append(parameter)
    param_groups = [
        {"params": params, "lr": head_learning_rate if head else learning_rate, "weight_decay": weight_decay if decay else 0.0}
        for (head, decay), params in groups.items()
    ]
    return torch.optim.AdamW(param_groups)


def predict(model, dataset, collator, batch_size: int, skipped=None, split: str | None = None):
    """Logits and labels of every row, in order (token task: lists of per-row arrays at labelled positions).

    Rows with a ``length`` column go through the model shortest first, so each batch pads to similar lengths; the
    results come back in the dataset's order. Rows the collator leaves out (an image that does not decode) are not
    in the results (the labels come from the same batches, so they stay aligned); they are recorded in ``skipped``
    (a ``SkippedImages``, under ``split``) when given."""
    import torch

    with torch.inference_mode():
        return _predict(model, dataset, collator, batch_size, skipped, split)


def _predict(model, dataset, collator, batch_size: int, skipped=None, split=None):
    model.eval()
    device = next(model.parameters()).device
    order = np.arange(len(dataset))
    if "length" in dataset.column_names:
        order = np.argsort(np.asarray(dataset["length"]), kind="stable")
    all_logits, all_labels, done, per_row = [], [], [], False
    for start in range(0, len(dataset), batch_size):
        indices = [int(i) for i in order[start : start + batch_size]]
        batch = collator([dataset[i] for i in indices])
        dropped = batch.pop(SKIPPED_KEY, None) or []
        if dropped:
            for _, source, why in dropped:
                if skipped is not None:
                    skipped.add(source, why, split)
            gone = {position for position, _, _ in dropped}
            indices = [index for position, index in enumerate(indices) if position not in gone]
        labels = batch.pop("labels")
        if not indices:  # every image of the batch was skipped
            continue
        done.extend(indices)
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
        if logits.dim() == 3:  # token classification: keep the first sub-word of each word
            per_row = True
            for row_logits, row_labels in zip(logits, labels):
                keep = row_labels != -100
                all_logits.append(row_logits[keep].numpy())
                all_labels.append(row_labels[keep].numpy())
        else:
            all_logits.append(logits.numpy())
            all_labels.append(labels.numpy())
    if not done and len(dataset):
        from eclip.training.evaluation.images import UnreadableImage

        raise UnreadableImage(f"no image of the {split or 'evaluated'} split decodes (all {len(dataset)} skipped)")
    inverse = np.argsort(done, kind="stable")  # position of each (kept) dataset row in the processing order
    if per_row:
        return [all_logits[i] for i in inverse], [all_labels[i] for i in inverse]
    if not all_logits:
        return [], []
    return [np.concatenate(all_logits)[inverse]], [np.concatenate(all_labels)[inverse]]


def _concat(parts):
    return np.concatenate(parts) if parts else np.zeros((0,))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _pair_metrics(val_scores, val_labels, test_scores, test_labels, threshold=None):
    """pair_matching on test at the F1-best threshold of validation (0.5 if validation has no positive)."""
    from modeling_eclip.metrics import best_f1_threshold, load_metric

    if threshold is None:
        threshold = 0.5
        if np.any(val_labels == 1):
            threshold, _ = best_f1_threshold(val_scores, val_labels)
    if not (np.any(test_labels == 1) and np.any(test_labels == 0)):
        return {"error": "the test rows hold one class only: pair metrics are undefined", "threshold": threshold}
    metrics = load_metric("pair_matching").compute(
        scores=test_scores.tolist(), references=test_labels.astype(int).tolist(), threshold=threshold,
        target_precision=TARGET_PRECISION,
    )
    metrics["target_precision"] = TARGET_PRECISION
    return metrics


def _always_positive(labels):
    if not (np.any(labels == 1) and np.any(labels == 0)):
        return None
    return _pair_metrics(None, None, np.zeros(len(labels)), labels, threshold=0.0)


def evaluate_task(task, model, splits, collator, batch_size, id2label=None, train_labels=None, skipped=None) -> dict:
    """Test metrics (and the trivial baseline) of a trained head, with modeling_eclip.metrics; rows whose image does
    not decode are left out and recorded in ``skipped`` (see ``predict``)."""
    from modeling_eclip.metrics import load_metric

    if task == "category":
        logits, labels = predict(model, splits["test"], collator, batch_size, skipped, "test")
        logits, labels = _concat(logits), _concat(labels)
        metric = load_metric("classification")
        label_ids = list(range(len(id2label)))
        test = metric.compute(predictions=logits.argmax(-1).tolist(), references=labels.tolist(), labels=label_ids)
        majority = int(np.bincount(np.asarray(train_labels, dtype=int), minlength=len(label_ids)).argmax())
        baseline = metric.compute(predictions=[majority] * len(labels), references=labels.tolist(), labels=label_ids)
        baseline["rule"] = f"majority class {id2label[majority]!r}"
        return {"test": test, "baseline": baseline}
    if task == "attributes":
        logits, labels = predict(model, splits["test"], collator, batch_size, skipped, "test")
        predictions = [[id2label[int(i)] for i in row.argmax(-1)] for row in logits]
        references = [[id2label[int(i)] for i in row] for row in labels]
        metric = load_metric("entity_f1")
        test = metric.compute(predictions=predictions, references=references)
        baseline = metric.compute(predictions=[["O"] * len(r) for r in references], references=references)
        baseline["rule"] = "every word O"
        return {"test": test, "baseline": baseline}
    if task == "restricted":
        val_logits, val_labels = predict(model, splits["validation"], collator, batch_size, skipped, "validation")
        test_logits, test_labels = predict(model, splits["test"], collator, batch_size, skipped, "test")
        val_scores, test_scores = _sigmoid(_concat(val_logits)[:, 0]), _sigmoid(_concat(test_logits)[:, 0])
        test_labels = _concat(test_labels)
        test = _pair_metrics(val_scores, _concat(val_labels), test_scores, test_labels)
        baseline = _always_positive(test_labels)
        if baseline is not None:
            baseline["rule"] = "always restricted (constant score)"
        return {"test": test, "baseline": baseline}
    if task == "matching":
        from modeling_eclip.metrics import best_f1_threshold

        val_logits, val_labels = predict(model, splits["validation"], collator, batch_size, skipped, "validation")
        test_logits, test_labels = predict(model, splits["test"], collator, batch_size, skipped, "test")
        val_scores, test_scores = _sigmoid(_concat(val_logits)), _sigmoid(_concat(test_logits))
        val_labels, test_labels = _concat(val_labels), _concat(test_labels)
        val_source, test_source = np.asarray(splits["validation"]["source"]), np.asarray(splits["test"]["source"])
        test, baseline, validation = {}, {}, {}
        for name in list(dict.fromkeys(test_source.tolist())) + ["all"]:
            v = np.ones_like(val_source, dtype=bool) if name == "all" else val_source == name
            t = np.ones_like(test_source, dtype=bool) if name == "all" else test_source == name
            test[name] = _pair_metrics(val_scores[v], val_labels[v], test_scores[t], test_labels[t])
            baseline[name] = _always_positive(test_labels[t])
            if np.any(val_labels[v] == 1):  # what model selection may read: F1 at validation's own best threshold
                threshold, f1 = best_f1_threshold(val_scores[v], val_labels[v])
                validation[name] = {"f1": f1, "threshold": threshold}
        baseline["rule"] = "always a match (constant score)"
        return {"test": test, "baseline": baseline, "validation": validation}
    raise ValueError(f"unknown task {task!r}")


# ----------------------------------------------------------------------------------------------------- main
def run(args) -> dict:
    import torch
    from transformers import AutoProcessor, set_seed

    import modeling_eclip
    from eclip.training import finetune_data as data
    from eclip.training.data import resolve_source
    from eclip.training.evaluation.images import SkippedImages
    from eclip.training.lora import apply_lora, parse_lora_spec
    from eclip.training.progress import progress_callbacks

    set_seed(args.seed)
    try:
        processor = AutoProcessor.from_pretrained(args.processor or args.model)
    except (OSError, ValueError, TypeError) as error:
        raise SystemExit(
            f"eclip-finetune: no processor in {args.processor or args.model!r} ({error}); pass --processor FOLDER."
        ) from error
    tokenizer = getattr(processor, "tokenizer", None)

    head_kwargs = {"modality": args.modality, "classifier_dropout": args.classifier_dropout}
    id2label = None
    if args.task == "category":
        splits, id2label = data.category_dataset(args.data, args.label_column, args.modality, args.limit, args.seed)
        head_class = modeling_eclip.EclipForProductClassification
        head_kwargs.update(num_labels=len(id2label), id2label=id2label, problem_type="single_label_classification")
        collator = ClassificationCollator(processor, args.modality, args.max_length, on_bad_image=args.on_bad_image)
    elif args.task == "restricted":
        splits = data.restricted_dataset(args.data, args.modality, args.limit, args.seed)
        head_class = modeling_eclip.EclipForProductClassification
        id2label = {0: "restricted"}
        head_kwargs.update(num_labels=1, id2label=id2label, problem_type="multi_label_classification")
        collator = ClassificationCollator(processor, args.modality, args.max_length, label_dtype=torch.float,
                                          on_bad_image=args.on_bad_image)
    elif args.task == "attributes":
        splits = data.attribute_dataset(args.data, args.limit, args.seed)
        head_class = modeling_eclip.EclipForTokenClassification
        id2label = dict(enumerate(data.BIO_LABELS))
        head_kwargs.update(num_labels=len(id2label), id2label=id2label)
        collator = TokenTagCollator(tokenizer, {v: k for k, v in id2label.items()}, args.max_length)
    else:
        names = [name.strip() for name in args.matching_datasets.split(",") if name.strip()]
        splits = data.matching_dataset(args.data, names, args.limit, args.seed, args.serialization,
                                       args.skip_invalid_pairs)
        head_class = modeling_eclip.EclipForProductMatching
        head_kwargs["matching_mode"] = args.matching_mode
        splits, args.max_length = _with_lengths(splits, tokenizer, args)
        collator = PairCollator(tokenizer, args.max_length, args.matching_mode)
    if id2label is not None:
        head_kwargs["label2id"] = {v: k for k, v in id2label.items()}
    rows = {name: len(part) for name, part in splits.items()}
    logger.info("rows per split: %s", rows)
    if rows["train"] == 0 or rows["test"] == 0:
        raise SystemExit(f"eclip-finetune: empty split(s) {rows}.")

    model = head_class.from_pretrained(args.model, ignore_mismatched_sizes=True, **head_kwargs)
    lora = None
    if args.lora is not None:
        lora = parse_lora_spec(args.lora)
        model = apply_lora(model, r=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"], targets=lora["targets"])
    elif args.freeze_backbone:
        for parameter in model.eclip.parameters():
            parameter.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100.0 * trainable / total)

    matching = args.task == "matching"
    # Images are named relative to the dataset folder in the skipped-images line.
    skipped = SkippedImages(os.path.abspath(resolve_source(args.data, FASHION_DIR))
                            if args.task in ("category", "restricted") else None)
    # Trainer creates its output_dir at once; with save_strategy "no" it writes nothing there, so it gets a scratch
    # folder: the real one appears only in `write_outputs`' atomic swap, never empty or half-written after a failure.
    scratch = tempfile.mkdtemp(prefix="eclip-finetune-")
    try:
        train_result, model = _train(args, model, splits, collator, skipped, scratch, progress_callbacks)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    results = evaluate_task(
        args.task, model, splits, collator, args.eval_batch_size, id2label,
        splits["train"]["labels"] if args.task == "category" else None, skipped,
    )
    if skipped:
        logger.warning("%s", skipped.summary())
    report = {
        "task": args.task,
        "model": args.model,
        "modality": args.modality,
        "label_column": args.label_column if args.task == "category" else None,
        "lora": lora,
        "freeze_backbone": bool(args.freeze_backbone or lora is not None),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "rows": rows,
        "skipped_images": skipped.as_dict(),
        "train_loss": float(train_result.training_loss),
        "steps": int(train_result.global_step),
        "train_seconds": float(train_result.metrics.get("train_runtime", float("nan"))),
        "max_length": args.max_length,
        **({"matching_mode": args.matching_mode, "serialization": args.serialization} if matching else {}),
        **results,
    }
    report["artefacts"] = write_outputs(args, model, processor, report)
    return report


def _train(args, model, splits, collator, skipped, output_dir, progress_callbacks):
    """`Trainer.train` on the training split (Trainer's scratch folder: `output_dir`); returns its result and the
    model."""
    import torch
    from transformers import TrainingArguments

    matching = args.task == "matching"
    training_args = TrainingArguments(
        output_dir=output_dir,
        # Matching: batches of similar lengths (sampled at random among groups), so dynamic padding pads little.
        train_sampling_strategy="group_by_length" if matching else "random",
        length_column_name="length",
        bf16=args.bf16,
        use_cpu=args.bf16 and not torch.cuda.is_available(),  # transformers asks for it to allow bf16 on a CPU
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        warmup_steps=args.warmup_steps,
        lr_scheduler_type="linear",
        logging_steps=args.logging_steps,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=args.num_workers,
        seed=args.seed,
        disable_tqdm=not sys.stderr.isatty(),
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    optimizer = build_optimizer(model, args.learning_rate, args.head_learning_rate, args.weight_decay)
    trainer = skipping_trainer_class()(
        model=model, args=training_args, train_dataset=splits["train"], data_collator=collator,
        optimizers=(optimizer, None), callbacks=progress_callbacks("eclip-finetune"),
    )
    trainer.skipped_images = skipped
    return trainer.train(), model


def skipping_trainer_class():
    """
    `transformers.Trainer` that takes the collator's list of left-out rows (`SKIPPED_KEY`) off each batch, records
    them in its `skipped_images` (a `SkippedImages`, split `train`), and skips a batch left with no row (no forward,
    no gradient: its loss counts as 0), as `EclipTrainer` skips such a pretraining batch.
    """
    import torch
    from transformers import Trainer

    class SkippingTrainer(Trainer):
        skipped_images = None

        def training_step(self, model, inputs, num_items_in_batch=None):
            dropped = inputs.pop(SKIPPED_KEY, None) or []
            if self.skipped_images is not None:
                for _, source, why in dropped:
                    self.skipped_images.add(source, why, "train")
            if inputs["labels"].shape[0] == 0:
                return torch.zeros((), device=self.args.device)
            return super().training_step(model, inputs, num_items_in_batch)

    return SkippingTrainer


def artefacts(args, report: dict) -> dict[str, tuple[str, str]]:
    """What `write_outputs` writes where: `{label: (path, what)}`, in the order the final lines list them."""
    out = args.output_dir
    head = {"category": "EclipForProductClassification", "restricted": "EclipForProductClassification",
            "attributes": "EclipForTokenClassification", "matching": "EclipForProductMatching"}[report["task"]]
    paths = {}
    if report["lora"] is not None:
        paths["adapter"] = (out, f"LoRA adapter + {head} head config and processor; load with "
                                 "eclip.training.lora.load_adapter")
        if args.merge_lora:
            paths["merged model"] = (os.path.join(out, "merged"), f"{head}, LoRA merged in, with its processor and card")
    else:
        paths["model"] = (out, f"{head}, with its processor")
    paths["test metrics"] = (os.path.join(out, "test_metrics.json"), "")
    paths["model card"] = (os.path.join(out, "README.md"), "")
    return paths


def write_outputs(args, model, processor, report: dict) -> dict[str, tuple[str, str]]:
    """
    The output folder, swapped in whole (`atomic_directory`; an old one was accepted by `--overwrite` at the start):
    the model, or the adapter and the head config; the processor; a model card (title and snippets: the repo id
    when pushed, else the folder's name); `test_metrics.json`; with `--merge-lora`, `merged/` with its own card.
    Returns `artefacts(args, report)`.
    """
    from eclip.model_cards.finetune_card import build_finetune_card
    from modeling_eclip import atomic_directory
    from eclip.training.lora import save_adapter

    name = args.push_to_hub or os.path.basename(os.path.abspath(args.output_dir))
    base = hub_base_model(args) if args.push_to_hub else None
    base = base or (os.path.abspath(args.model) if os.path.isdir(args.model) else args.model)
    card = functools.partial(build_finetune_card, report, repo_id=args.push_to_hub, base_model=base)
    with atomic_directory(args.output_dir, keep_existing=False) as staging:
        if report["lora"] is not None:
            config = model.get_base_model().config
            save_adapter(model, staging, processor, card=card("adapter", config, model_name=name))
            if args.merge_lora:
                merged, folder = model.merge_and_unload(), os.path.join(staging, "merged")
                merged.save_pretrained(folder)
                processor.save_pretrained(folder)
                if args.push_to_hub:
                    merged_card = card("merged", merged.config, model_name=f"{name} (merged)", subfolder="merged")
                else:
                    merged_card = build_finetune_card(report, "merged", merged.config, model_name=f"{name}/merged",
                                                      repo_id=os.path.join(args.output_dir, "merged"), base_model=base)
                merged_card.save(os.path.join(folder, "README.md"))
        else:
            model.save_pretrained(staging)
            processor.save_pretrained(staging)
            card("head" if args.freeze_backbone else "full", model.config, model_name=name).save(
                os.path.join(staging, "README.md"))
        with open(os.path.join(staging, "test_metrics.json"), "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2, default=_json_default)
    return artefacts(args, report)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_args(args, parser)
    except UsageError as error:
        return fail(parser.prog, error)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from eclip.training.evaluation.images import UnreadableImage, one_line
    from eclip.training.progress import disable_progress_bars_off_terminal

    disable_progress_bars_off_terminal()  # a log file gets plain lines, no carriage-return redraws

    try:
        report = run(args)
    except UnreadableImage as error:  # --on-bad-image error (also when a DataLoader worker met the image)
        return fail(parser.prog, one_line(error), status=1)
    print(json.dumps({"task": report["task"], "test": report["test"], "baseline": report["baseline"]}, indent=2,
                     default=_json_default))
    print("\n".join(summary_lines(report)), flush=True)
    if args.push_to_hub:
        from eclip.training.hub import PushError, adapter_config_for_hub, push_folder

        replace = adapter_config_for_hub(args.output_dir, hub_base_model(args)) if report["lora"] is not None else None
        try:
            commit = push_folder(args.output_dir, args.push_to_hub, private=args.hub_private,
                                 revision=args.hub_revision, replace=replace)
        except PushError as error:
            return fail(parser.prog, error, status=1)
        print(f"  pushed to:      {getattr(commit, 'commit_url', None) or args.push_to_hub}", flush=True)
    return 0


def summary_lines(report: dict) -> list[str]:
    """The run's last lines: what was trained, the images skipped, and where every artefact went."""
    label = f" ({report['label_column']})" if report.get("label_column") else ""
    lines = ["", f"eclip-finetune finished: {report['task']}{label}, {report['steps']} steps"]
    skipped = report.get("skipped_images") or {}
    if skipped.get("count"):
        splits: dict[str, int] = {}
        for entry in skipped["files"]:
            for split in entry["splits"]:
                splits[split] = splits.get(split, 0) + 1
        per_split = ", ".join(f"{split} {count}" for split, count in splits.items())
        lines.append(f"  skipped images: {skipped['count']} unreadable ({per_split}; named in the warning above, all "
                     "of them in test_metrics.json)")
    for name, (path, what) in report["artefacts"].items():
        lines.append(f"  {name + ':':<15} {path}" + (f"  ({what})" if what else ""))
    return lines


if __name__ == "__main__":
    sys.exit(main())
