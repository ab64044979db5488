# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Model cards of what `eclip-finetune` writes (`finetune_template.md`): a fully fine-tuned or head-only model, a LoRA
adapter (which replaces peft's blank template) and the merged copy of an adapter. Each says what the model does, on
which data and for how many steps it trained, how to load it by repo id (Auto class, pipeline, `PeftModel`), and
holds the test metrics as `model-index` metadata (huggingface_hub's `EvalResult`).

    card = build_finetune_card(report, "adapter", config, model_name="org/category-lora", repo_id="org/category-lora",
                               base_model="org/eclip-fashion")
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "finetune_template.md")
KINDS = ("full", "head", "adapter", "merged")
FASHION = ("fashion-products", "Fashion Product Images (Myntra, 224 px)")
_MATCHING_NAMES = {"walmart-amazon": "Walmart-Amazon", "abt-buy": "Abt-Buy"}
# What each task is, the metrics of its test results that go into the model-index: (key, metric type, config, name).
_CLASSIFICATION = [("accuracy", "accuracy", None, "Accuracy"), ("macro_f1", "f1", "macro", "Macro F1"),
                   ("weighted_f1", "f1", "weighted", "Weighted F1")]
_BINARY = [("roc_auc", "roc_auc", None, "ROC-AUC"), ("f1", "f1", None, "F1"),
           ("precision", "precision", None, "Precision"), ("recall", "recall", None, "Recall"),
           ("recall_at_precision", "recall_at_precision", "precision>=0.95", "Recall at 95% precision")]
TASKS = {
    "category": "Product category classification",
    "restricted": "Restricted-product recognition (Innerwear as the stand-in for adult products)",
    "attributes": "Attribute extraction from titles (BIO tags: brand, gender, colour, type)",
    "matching": "Product matching (is this pair the same product?)",
}


def _head(task: str, modality: str) -> tuple[str, str | None, str]:
    """(head class, pipeline task or None, Auto class) of a task and modality."""
    if task == "attributes":
        return "EclipForTokenClassification", "token-classification", "AutoModelForTokenClassification"
    if task == "matching":
        return "EclipForProductMatching", None, "EclipForProductMatching"
    if modality == "image":
        return "EclipForProductClassification", "image-classification", "AutoModelForImageClassification"
    pipeline_task = "text-classification" if modality == "text" else None  # "both" takes an image and a title
    return "EclipForProductClassification", pipeline_task, "AutoModelForSequenceClassification"


def eval_results(report: Mapping | None) -> list[EvalResult]:
    """The test metrics of an `eclip-finetune` report (`test_metrics.json`) as `EvalResult`s."""
    if not report or not isinstance(report.get("test"), Mapping):
        return []
    task, test, modality = report["task"], report["test"], report.get("modality", "text")
    _, pipeline_task, _ = _head(task, modality)
    task_type = pipeline_task or ("product-matching" if task == "matching" else "multimodal-classification")
    blocks = []
    if task == "category":
        blocks.append((test, FASHION, report.get("label_column"), _CLASSIFICATION))
    elif task == "restricted":
        blocks.append((test, FASHION, "innerwear-vs-rest", _BINARY))
    elif task == "attributes":
        blocks.append((test, ("fashion-titles", "Fashion product titles (silver BIO tags)"), "bio-tags",
                       [("f1", "f1", "entity", "Entity F1"), ("precision", "precision", "entity", "Entity precision"),
                        ("recall", "recall", "entity", "Entity recall")]))
    elif task == "matching":
        for name, metrics in test.items():
            if name != "all" and isinstance(metrics, Mapping):
                label = _MATCHING_NAMES.get(name, name)
                blocks.append((metrics, (name, f"{label} (Magellan, Ditto serialisation)"), None, _BINARY))
    out = []
    for metrics, (dataset_type, dataset_name), dataset_config, table in blocks:
        for key, metric_type, metric_config, metric_name in table:
            value = metrics.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
                out.append(EvalResult(
                    task_type=task_type, task_name=TASKS[task], dataset_type=dataset_type, dataset_name=dataset_name,
                    dataset_config=dataset_config, dataset_split="test", metric_type=metric_type,
                    metric_name=metric_name, metric_config=metric_config, metric_value=round(float(value), 6),
                ))
    return out


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _results_section(report: Mapping | None) -> str:
    if not report or not isinstance(report.get("test"), Mapping):
        return "No test results recorded with this card."
    test, baseline = report["test"], report.get("baseline") or {}

    def rows(metrics, base, prefix=""):
        for key, value in metrics.items():
            if isinstance(value, Mapping):
                yield from rows(value, base.get(key) or {} if isinstance(base, Mapping) else {}, f"{prefix}{key}/")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                other = base.get(key) if isinstance(base, Mapping) else None
                yield f"| {prefix}{key} | {_fmt(value)} | {_fmt(other) if other is not None else 'n/a'} |"

    lines = ["Test split, with the trivial baseline of the same code next to it"
             + (f" ({baseline['rule']})" if isinstance(baseline, Mapping) and baseline.get("rule") else "") + ":", "",
             "| metric | this model | trivial baseline |", "| --- | ---: | ---: |"]
    lines += list(rows(test, baseline))
    return "\n".join(lines)


def build_finetune_card(
    report: Mapping | None,
    kind: str,
    config,
    *,
    model_name: str,
    repo_id: str | None = None,
    base_model: str | None = None,
    subfolder: str | None = None,
) -> ModelCard:
    """
    The card of a fine-tuned ECLIP head.

    Args:
        report: the run's report (`test_metrics.json` of `eclip-finetune`), or `None` (no results: a card built by
            `eclip.training.lora.save_adapter` outside the command).
        kind: `"full"` (every weight trained), `"head"` (backbone frozen), `"adapter"` (LoRA adapter) or `"merged"`.
        config: the head's config (`EclipConfig` or its dict): labels, modality.
        model_name: the card's title (the repo id when pushed, else the folder's name).
        repo_id: where the snippets load it from (default `model_name`).
        base_model: the pretrained ECLIP model it started from (a Hub id goes into the metadata).
        subfolder: the card of a folder inside the repo (`merged`): the snippets pass `subfolder=`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    report = dict(report or {})
    task = report.get("task") or {"EclipForTokenClassification": "attributes",
                                  "EclipForProductMatching": "matching"}.get((config.get("architectures") or [""])[0],
                                                                               "category")
    modality = report.get("modality") or config.get("modality") or "text"
    head, pipeline_task, auto_class = _head(task, modality)
    repo_id = repo_id or model_name
    base_is_hub = bool(base_model) and not os.path.isabs(base_model) and not os.path.exists(base_model)
    labels = [str(v) for _, v in sorted((int(k), v) for k, v in (config.get("id2label") or {}).items())]
    results = eval_results(report)

    card_data = ModelCardData(
        model_name=model_name,
        base_model=base_model if base_is_hub else None,
        library_name="peft" if kind == "adapter" else "transformers",
        license="apache-2.0",
        pipeline_tag=pipeline_task,
        tags=["eclip", "e-commerce", task] + (["lora"] if kind in ("adapter", "merged") else []),
        metrics=sorted({r.metric_type for r in results} & {"accuracy", "f1", "precision", "recall", "roc_auc"}) or None,
        eval_results=results or None,
    )
    lora = report.get("lora") or {}
    how = {
        "full": "every weight fine-tuned",
        "head": "the head trained on a frozen ECLIP backbone",
        "adapter": f"a LoRA adapter (r={lora.get('r', '?')}, alpha={lora.get('alpha', '?')}) and the head; "
                   "this folder holds only those, the backbone comes from the base model",
        "merged": "a LoRA adapter merged into the backbone: a plain model, no peft needed",
    }[kind]
    facts = [("task", TASKS[task]), ("head", f"`{head}`"), ("inputs", {"image": "product photo", "text": "product title",
                                                                     "both": "product photo and title"}[modality]),
             ("training", how), ("base model", f"`{base_model}`" if base_model else "n/a")]
    if labels and task != "matching":
        shown = ", ".join(f"`{label}`" for label in labels[:12]) + (f" and {len(labels) - 12} more" if len(labels) > 12 else "")
        facts.append(("labels", f"{len(labels)}: {shown}"))
    if report.get("steps") is not None:
        facts.append(("optimizer steps", report["steps"]))
    if report.get("train_loss") is not None:
        facts.append(("final training loss", f"{report['train_loss']:.4f}"))
    if report.get("trainable_parameters"):
        facts.append(("trainable parameters", f"{report['trainable_parameters']:,} of {report['total_parameters']:,}"))

    description = (
        f"An ECLIP e-commerce vision-language model (`modeling_eclip`) with a `{head}` head, fine-tuned with "
        "`eclip-finetune`. Weights are safetensors; the folder carries the model code (`auto_map`), so it also loads "
        "with `trust_remote_code=True` where the `eclip` package is not installed."
        if kind != "adapter" else
        "A LoRA adapter (peft) for the ECLIP model named in `adapter_config.json`, plus the head's config (labels, "
        "modality) and the processor. The head and, for image inputs, the instance queries are trained in full and "
        "saved with the adapter."
    )
    data = {"category": f"`fashion-products`, label column `{report.get('label_column') or config.get('problem_type')}`",
            "restricted": "`fashion-products`, `subCategory == \"Innerwear\"` against every other product",
            "attributes": "`fashion-titles.csv`, silver BIO tags derived from the attribute columns",
            "matching": "`product-matching` (Walmart-Amazon, Abt-Buy) text pairs"}[task]
    rows = report.get("rows")
    training_data = f"{data}; each dataset's own train / validation / test split" + (
        f" (rows: {', '.join(f'{k} {v}' for k, v in rows.items())})." if rows else ".")

    load = f'"{repo_id}"' + (f', subfolder="{subfolder}"' if subfolder else "")
    code = ["import modeling_eclip  # registers ECLIP with transformers' Auto classes"
            + ("" if kind == "adapter" else " (or pass trust_remote_code=True)")]
    if task == "matching":
        code += ["from modeling_eclip import EclipForProductMatching", "",
                 f"matcher = EclipForProductMatching.from_pretrained({load}).eval()",
                 "# inputs: product A as input_ids / attention_mask, product B as input_ids_b / attention_mask_b"]
        if kind == "adapter":
            code[-2] = f"matcher = EclipForProductMatching.from_pretrained({load}).eval()  # base + adapter"
    elif pipeline_task and not subfolder:
        sample = 'Image.open("product.jpg")' if modality == "image" else '"Nike Men Red Running Shoes"'
        code += (["from PIL import Image"] if modality == "image" else []) + [
            "from transformers import pipeline", "",
            f'classifier = pipeline("{pipeline_task}", model={load})'
            + ("  # loads the base model it names, then the adapter" if kind == "adapter" else ""),
            f"classifier({sample})"]
    elif subfolder:  # transformers' Auto classes take the repo's root adapter for the model: name the class
        code += [f"from modeling_eclip import {head}", "from transformers import AutoProcessor", "",
                 f"model = {head}.from_pretrained({load}).eval()",
                 f"processor = AutoProcessor.from_pretrained({load})"]
    else:
        code += [f"from transformers import {auto_class}, AutoProcessor", "",
                 f"model = {auto_class}.from_pretrained({load}).eval()",
                 f"processor = AutoProcessor.from_pretrained({load})"]
    if kind == "adapter":
        base_line = f'"{base_model}"' if base_model else '"<base model>"'
        code += ["", "# or with peft (what eclip.training.lora.load_adapter does):", "from peft import PeftModel",
                 f"from transformers import AutoConfig, {auto_class if auto_class.startswith('Auto') else 'AutoModel'}",
                 "", f"config = AutoConfig.from_pretrained({load})  # labels, modality"]
        if auto_class.startswith("Auto"):
            code.append(f"base = {auto_class}.from_pretrained({base_line}, config=config)")
        else:
            code.append(f"base = modeling_eclip.{head}.from_pretrained({base_line}, config=config)")
        code += [f"model = PeftModel.from_pretrained(base, {load})", "merged = model.merge_and_unload()  # a plain head"]
    notes = ("The adapter's `adapter_config.json` names its base model by repo id when pushed with "
             "`eclip-finetune --push-to-hub`, by absolute path in a local folder." if kind == "adapter" else
             "The same model without the Hub: pass the folder's path instead of the repo id.")
    limitations = "\n".join([
        "- Trained and tested on one fashion catalogue (Indian retailer, 224 px photos, English titles); other "
        "verticals and languages are untested.",
        "- The attribute tags are silver labels from a rule, not annotations." if task == "attributes" else
        "- Innerwear stands in for adult products: real moderation needs its own data and human review."
        if task == "restricted" else
        "- Classes are those of the training split; rare classes are weak." if task == "category" else
        "- Text-only pairs from two public benchmarks; prices and long descriptions are truncated to the token limit.",
    ])
    return ModelCard.from_template(
        card_data, template_path=TEMPLATE_PATH, model_name=model_name,
        summary=f"{TASKS[task]} with ECLIP: {how}.", facts=facts, description=description,
        training_data=training_data, usage_code="\n".join(code), usage_notes=notes,
        results_section=_results_section(report), limitations=limitations,
    )


__all__ = ["KINDS", "TEMPLATE_PATH", "build_finetune_card", "eval_results"]
