# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Model cards for ECLIP checkpoints (DESIGN.md, "Hub"): `template.md` filled from the model's config and the
results of `eclip.training.evaluation` (benchmarks as `model-index` metadata via huggingface_hub's `EvalResult`).

    from eclip.model_cards.card import build_model_card, write_model_card
    card = build_model_card("runs/eclip", results)          # -> huggingface_hub.ModelCard
    write_model_card("runs/eclip", results)                 # -> runs/eclip/README.md (atomic write)

`eclip-pretrain` writes the first card with the run's facts (`training=`: data, steps, towers, final loss); they are
kept in the card's metadata (`eclip:`), so `eclip-evaluate --update-card`, which calls `write_model_card` with the
results it has just computed, rebuilds the card without losing them. Fine-tuned heads, adapters and merged models get
their cards from `eclip.model_cards.finetune_card`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from eclip.training.atomic import atomic_write_text

TEMPLATE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "template.md")

FASHION = {"dataset_type": "fashion-products", "dataset_name": "Fashion Product Images (Myntra, 224 px)"}
MATCHING = {
    "walmart-amazon": {"dataset_type": "walmart-amazon", "dataset_name": "Walmart-Amazon (Magellan, Ditto serialisation)"},
    "abt-buy": {"dataset_type": "abt-buy", "dataset_name": "Abt-Buy (Magellan, Ditto serialisation)"},
}
_RECALL_NAMES = {"recall@1": "Recall@1", "recall@5": "Recall@5", "recall@10": "Recall@10", "mrr": "MRR"}
_CLASSIFICATION = {
    "accuracy": ("accuracy", None, "Accuracy"),
    "macro_f1": ("f1", "macro", "Macro F1"),
    "weighted_f1": ("f1", "weighted", "Weighted F1"),
}
_BINARY = {
    "roc_auc": ("roc_auc", None, "ROC-AUC"),
    "recall_at_95_precision": ("recall_at_precision", "precision>=0.95", "Recall at 95% precision"),
    "f1": ("f1", None, "F1"),
    "precision": ("precision", None, "Precision"),
    "recall": ("recall", None, "Recall"),
}
# (task key, sub key or None, task_type, task_name, dataset info, dataset_config, metric table)
_BENCHMARKS = [
    ("zero_shot", None, "zero-shot-image-classification", "Zero-shot category classification", FASHION,
     "articleType", _CLASSIFICATION),
    ("retrieval", "text_to_image", "text-to-image-retrieval", "Text-to-image retrieval (product titles)", FASHION,
     "titles", {k: (k, None, v) for k, v in _RECALL_NAMES.items()}),
    ("retrieval", "image_to_text", "image-to-text-retrieval", "Image-to-text retrieval (product titles)", FASHION,
     "titles", {k: (k, None, v) for k, v in _RECALL_NAMES.items()}),
    ("instance_retrieval", "text_to_image", "text-to-image-retrieval",
     "Instance-level text-to-image retrieval (products in scenes with 1-3 distractors)", FASHION, "instance-scenes",
     {k: (k, None, v) for k, v in _RECALL_NAMES.items()}),
    ("linear_probe", "image", "image-classification", "Linear-probe category classification (image embeddings)",
     FASHION, "articleType", {k: _CLASSIFICATION[k] for k in ("accuracy", "macro_f1")}),
    ("linear_probe", "text", "text-classification", "Linear-probe category classification (text embeddings)",
     FASHION, "articleType", {k: _CLASSIFICATION[k] for k in ("accuracy", "macro_f1")}),
    ("linear_probe", "both", "multimodal-classification",
     "Linear-probe category classification (image + text embeddings)", FASHION, "articleType",
     {k: _CLASSIFICATION[k] for k in ("accuracy", "macro_f1")}),
    ("clustering", None, "image-clustering", "Product clustering (k-means on image embeddings)", FASHION,
     "articleType", {"nmi": ("nmi", None, "NMI"), "ari": ("ari", None, "ARI")}),
    ("restricted", "zero_shot", "zero-shot-image-classification",
     "Restricted-product recognition, zero-shot (Innerwear as the stand-in for adult products)", FASHION,
     "innerwear-vs-rest", {k: _BINARY[k] for k in ("roc_auc", "recall_at_95_precision")}),
    ("restricted", "linear_probe", "image-classification",
     "Restricted-product recognition, linear probe (Innerwear as the stand-in for adult products)", FASHION,
     "innerwear-vs-rest", {k: _BINARY[k] for k in ("roc_auc", "recall_at_95_precision")}),
] + [
    ("matching", name, "product-matching", f"Zero-shot product matching ({info['dataset_name'].split(' (')[0]})",
     info, None, {k: _BINARY[k] for k in ("f1", "precision", "recall")})
    for name, info in MATCHING.items()
]

# Metric ids of the `metrics` metadata field (evaluate names); the model-index keeps every metric.
HUB_METRICS = {"accuracy", "f1", "precision", "recall", "roc_auc"}
DEFAULT_TAGS = ["eclip", "clip", "vision-language", "e-commerce", "zero-shot-image-classification",
                "product-retrieval", "instance-level-representation"]
DEFAULT_TRAINING_DATA = (
    "Product image-text pairs: each row is a product photo and its product text (brand, title, category path and "
    "attributes joined by the processor's product-text template), with a catalog `product_id` so that duplicates "
    "across sellers are never treated as negatives."
)


SMOKE_NOTE = (
    "**A smoke model.** This checkpoint learnt from ECLIP's embedded synthetic catalogue (procedurally drawn "
    "products) to check an installation and the code paths. It has never seen a real product photo, and on real "
    "photos it is useless (zero-shot accuracy below always answering the commonest class): for real photos use the fashion recipe (`eclip-pretrain --config "
    "training/configs/fashion.yaml`) or a checkpoint trained on your own catalogue."
)


def is_smoke_model(facts: Mapping) -> bool:
    """Whether the run's facts (the card's `eclip.training` metadata) say it learnt from the synthetic catalogue."""
    return str(facts.get("dataset", "")).split(":")[0] == "synthetic"


def trained_on(facts: Mapping, image_size=None) -> str:
    """What the checkpoint learnt from, in words, from the same facts the card's metadata holds."""
    dataset = str(facts.get("dataset") or "")
    size = facts.get("image_size") or image_size
    at = f" at {size}x{size} px" if size else ""
    if is_smoke_model(facts):
        return f"Trained on the embedded synthetic catalogue (procedurally drawn products){at}, not on real photos"
    if "fashion-products" in dataset:
        return f"Trained on fashion catalogue photos (one Indian retailer's catalogue){at}"
    if dataset:
        return f"Trained on `{dataset}`{at}"
    return f"Trained on product photos and titles{at}"


# ================================================================================================ helpers
def _load_config(folder_or_config) -> tuple[dict, str | None]:
    """Config as a plain dict, and the folder it came from (if any)."""
    if isinstance(folder_or_config, (str, os.PathLike)):
        folder = os.fspath(folder_or_config)
        path = os.path.join(folder, "config.json")
        if not os.path.isfile(path):
            raise ValueError(f"{folder} holds no config.json: pass a saved model folder or an EclipConfig.")
        with open(path, encoding="utf-8") as f:
            return json.load(f), folder
    if isinstance(folder_or_config, Mapping):
        return dict(folder_or_config), None
    if hasattr(folder_or_config, "to_dict"):
        return folder_or_config.to_dict(), None
    raise TypeError(
        f"build_model_card needs a model folder, a config or a dict, got {type(folder_or_config).__name__}."
    )


def _sub(config: dict, name: str) -> dict:
    sub = config.get(name) or {}
    return sub if isinstance(sub, dict) else sub.to_dict()


def _num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def eval_results_from(results: Mapping | None, split: str = "test") -> list[EvalResult]:
    """The benchmarks in `results` (the dict `eclip.training.evaluation.runner.evaluate_model` returns) as `EvalResult`s."""
    if not results:
        return []
    tasks = results.get("tasks", results)
    out = []
    for task, sub, task_type, task_name, dataset, dataset_config, metrics in _BENCHMARKS:
        block = tasks.get(task)
        if isinstance(block, Mapping) and sub is not None:
            block = block.get(sub)
        if not isinstance(block, Mapping) or "skipped" in block:
            continue
        for key, (metric_type, metric_config, metric_name) in metrics.items():
            value = block.get(key)
            if not _num(value):
                continue
            out.append(EvalResult(
                task_type=task_type, task_name=task_name, dataset_type=dataset["dataset_type"],
                dataset_name=dataset["dataset_name"], dataset_config=dataset_config, dataset_split=split,
                metric_type=metric_type, metric_name=metric_name, metric_config=metric_config,
                metric_value=round(float(value), 6),
            ))
    return out


def _flatten(tasks: Mapping) -> dict:
    flat = {}

    def walk(prefix, value):
        if isinstance(value, Mapping):
            for key, sub in value.items():
                if key in ("details", "skipped"):
                    continue
                walk(f"{prefix}/{key}" if prefix else key, sub)
        elif value is None or _num(value):
            flat[prefix] = value

    walk("", tasks)
    return flat


def results_table(results: Mapping) -> str:
    """Markdown table of every metric (with the baseline and the ratio when `results` has one)."""
    tasks = results.get("tasks", results)
    baseline = results.get("baseline")
    flat = _flatten(tasks)
    base = _flatten(baseline["tasks"]) if baseline else {}
    if baseline:
        lines = ["| task | metric | ECLIP | CLIP baseline | ratio |", "| --- | --- | ---: | ---: | ---: |"]
    else:
        lines = ["| task | metric | value |", "| --- | --- | ---: |"]
    for key, value in flat.items():
        task, metric = key.split("/", 1) if "/" in key else (key, "")
        if baseline:
            b = base.get(key)
            ratio = value / b if _num(value) and _num(b) and b else None
            lines.append(f"| {task} | {metric} | {_fmt(value)} | {_fmt(b)} | {_fmt(ratio, 3)} |")
        else:
            lines.append(f"| {task} | {metric} | {_fmt(value)} |")
    skipped = [f"{t}: {v['skipped']}" for t, v in tasks.items() if isinstance(v, Mapping) and "skipped" in v]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped)]
    return "\n".join(lines)


def _results_section(results: Mapping | None) -> str:
    if not results:
        return ("No evaluation results yet: run `eclip-evaluate --model <this folder> --output eval/ --update-card` "
                "to fill this section and the `model-index` metadata.")
    lines = [
        "All numbers are on the `test` split; thresholds and the linear probes' C were tuned on `validation` only "
        "and the probes were trained on `train` only (`training/evaluation/`).",
    ]
    limit = results.get("limit")
    if limit:
        lines.append(f"\n**Quick run:** at most {limit} rows per split (`--limit {limit}`): not comparable with full "
                     "runs.")
    data = results.get("data", {})
    if data.get("fashion_products"):
        sizes = ", ".join(f"{k} {v}" for k, v in data["fashion_products"].items())
        lines.append(f"\nFashion-products rows used: {sizes}.")
    if results.get("baseline"):
        b = results["baseline"]
        lines.append(f"\nThe CLIP baseline (`use_instance_decoder=False`, `{b.get('model_path')}`) is evaluated with "
                     "the same code; ratio = ECLIP / baseline.")
    zero_shot = results.get("tasks", {}).get("zero_shot") or {}
    if _num(zero_shot.get("accuracy")) and _num(zero_shot.get("chance_accuracy")):
        lines.append(f"\nZero-shot accuracy {zero_shot['accuracy']:.4f} against {zero_shot['chance_accuracy']:.4f} for a "
                     f"uniform guess and {_fmt(zero_shot.get('majority_accuracy'))} for always the commonest test class.")
    lines.append("")
    lines.append(results_table(results))
    rate = (results.get("tasks", {}).get("instance_retrieval") or {}).get("attention_in_box_rate")
    if _num(rate):
        chance = results["tasks"]["instance_retrieval"].get("details", {}).get("attention_in_box_chance")
        lines.append(f"\nIn {rate:.1%} of the instance-retrieval scenes the cross-attention peak of the text-selected "
                     f"query falls inside the named product's box (box area alone: {_fmt(chance, 3)}).")
    versions = results.get("versions") or {}
    if versions:
        lines.append("\nEvaluated with " + ", ".join(f"{k} {v}" for k, v in versions.items()
                                                      if k in ("eclip", "torch", "transformers") and v) + ".")
    return "\n".join(lines)


_FACT_LABELS = (
    ("dataset", "data", "`{}`"), ("num_rows", "training rows", "{}"), ("steps", "optimizer steps", "{}"),
    ("final_loss", "final training loss", "{}"), ("objectives", "objectives trained", "{}"),
    ("vision_model", "vision tower", "{}"), ("image_size", "image size", "{} px"), ("text_model", "text tower", "{}"),
    ("selection_refit", "selection head", "{}"),
)


def _training_facts_text(facts: Mapping) -> str:
    command = facts.get("command", "eclip-pretrain")
    lines = [f"This checkpoint was pretrained with `{command}`:", ""]
    for key, label, form in _FACT_LABELS:
        if facts.get(key) is not None:
            lines.append(f"- {label}: {form.format(facts[key])}")
    return "\n".join(lines)


def previous_card_fields(folder: str) -> dict:
    """
    What a card already in `folder/README.md` knows that a rebuild must keep: the run's facts (`training`), the Hub
    repo id it was written for, the towers' base models and the datasets. `{}` when there is no readable card.
    """
    path = os.path.join(folder, "README.md")
    if not os.path.isfile(path):
        return {}
    try:
        data = ModelCard.load(path).data.to_dict()
    except Exception:  # a hand-written README without metadata: nothing to keep
        return {}
    eclip = data.get("eclip") if isinstance(data.get("eclip"), Mapping) else {}
    fields = {
        "training": eclip.get("training") or None,
        "repo_id": eclip.get("repo_id"),
        "base_model": data.get("base_model"),
        "datasets": data.get("datasets"),
    }
    return {key: value for key, value in fields.items() if value}


# ================================================================================================== cards
def build_model_card(
    folder_or_config,
    results: Mapping | None = None,
    base_model: str | Sequence[str] | None = None,
    datasets: str | Sequence[str] | None = None,
    model_name: str | None = None,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    training_data: str | None = None,
    tags: Sequence[str] | None = None,
    template_path: str | None = None,
    training: Mapping | None = None,
) -> ModelCard:
    """
    Build the model card of an ECLIP checkpoint.

    Args:
        folder_or_config: a saved model folder (its `config.json` is read), an `EclipConfig` or its dict.
        results: the dict `eclip.training.evaluation.runner.evaluate_model` returns (or the parsed `results.json`); its
            benchmarks become `model-index` metadata (`EvalResult`s) and a results table. `None`: no results yet.
        base_model: Hub id(s) of the checkpoint(s) the towers were initialised from (card metadata).
        datasets: Hub id(s) or names of the pretraining data (card metadata).
        model_name: title of the card and name of the model-index (default: the folder name, else "eclip").
        repo_id: id used in the usage snippet (default: the model name).
        training_data: prose for the "Training data" section (default: a generic description plus `datasets`).
        training: the facts of the pretraining run (`eclip-pretrain`: `dataset`, `num_rows`, `steps`, `final_loss`,
            `vision_model`, `text_model`, `image_size`, `objectives`); listed in "Training data" and stored in the
            card's metadata (`eclip.training`) so that a rebuilt card keeps them.
    """
    config, folder = _load_config(folder_or_config)
    vision, text = _sub(config, "vision_config"), _sub(config, "text_config")
    use_decoder = bool(config.get("use_instance_decoder", True))
    k = config.get("num_instance_queries", 8)
    hub_id = repo_id  # stored in the metadata only when given: a folder name is not an id to keep
    if model_name is None:
        model_name = repo_id or (os.path.basename(os.path.normpath(folder)) if folder else "eclip")
    repo_id = repo_id or model_name
    training_facts = {k: v for k, v in dict(training or {}).items() if v is not None}
    datasets_list = [datasets] if isinstance(datasets, str) else list(datasets or [])
    eval_results = eval_results_from(results)

    card_data = ModelCardData(
        model_name=model_name,
        base_model=base_model,
        datasets=datasets_list or None,
        license=license,
        library_name="transformers",
        pipeline_tag="zero-shot-image-classification",
        tags=list(tags) if tags is not None else list(DEFAULT_TAGS),
        metrics=sorted({r.metric_type for r in eval_results} & HUB_METRICS) or None,
        eval_results=eval_results or None,
        eclip={key: value for key, value in (("repo_id", hub_id), ("training", training_facts)) if value} or None,
    )

    def tower(sub):
        parts = [f"`{sub.get('model_type', '?')}`"]
        for key, label in (("hidden_size", "hidden"), ("num_hidden_layers", "layers"), ("image_size", "image"),
                           ("patch_size", "patch"), ("vocab_size", "vocab")):
            if sub.get(key):
                parts.append(f"{label} {sub[key]}")
        return ", ".join(parts)

    architecture = [
        ("vision tower", tower(vision)),
        ("text tower", tower(text)),
        ("embedding dim (projection)", config.get("projection_dim")),
        ("text pooling / vision pooling", f"{config.get('text_pooling')} / {config.get('vision_pooling')}"),
        ("instance decoder", "on" if use_decoder else "off (CLIP baseline)"),
    ]
    if use_decoder:
        architecture += [
            ("instance queries K", k),
            ("decoder layers / heads / width", f"{config.get('decoder_layers')} / "
                                               f"{config.get('decoder_attention_heads')} / "
                                               f"{config.get('decoder_hidden_size')}"),
        ]
        decoder_description = (
            f"The instance decoder holds K = {k} learnable instance queries. Each of its "
            f"{config.get('decoder_layers')} pre-norm layers runs self-attention among the queries, cross-attention to "
            "the projected image tokens and an MLP. It outputs K instance embeddings per image and a selection score "
            "per query (which instance is \"the product\"). The image-text score is `s(I, T) = max_k <q_k, t>`: the "
            "text picks its instance. The text-free image embedding (for indexes, clustering, matching) is the "
            "selection-weighted mean of the instance embeddings, re-normalised."
        )
        summary = (
            "ECLIP is an e-commerce vision-language model: a CLIP-style image and text encoder pair plus an instance "
            "decoder whose learnable queries pick out the product in a busy photo (worn by a model, next to other "
            "items), trained with catalog-aware contrastive targets."
        )
    else:
        decoder_description = (
            "This checkpoint has no instance decoder (`use_instance_decoder=False`): it is the plain CLIP baseline "
            "with `s(I, T) = <g, t>` on the pooled image embedding `g`."
        )
        summary = (
            "The CLIP baseline of ECLIP: a CLIP-style image and text encoder pair trained with catalog-aware "
            "contrastive targets, without the instance decoder."
        )
    model_description = (
        "Two transformers towers (any registered model types) are projected into one L2-normalised embedding space "
        "(`EclipModel`, `modeling_eclip`). Loading with the package installed uses the registered Auto classes; "
        "without it, `trust_remote_code=True` loads the code saved next to the weights (safetensors only)."
    )
    weight = {name: config.get(name) for name in ("itc_weight", "inter_weight", "intra_weight", "selection_weight")}
    objectives = [
        ("global ITC (catalog-aware)", weight["itc_weight"] if use_decoder else 1.0,
         "symmetric CLIP loss on `<g, t>`; rows sharing a `product_id` are all positives"),
    ]
    if use_decoder:
        objectives += [
            ("inter-product", weight["inter_weight"], "contrastive loss on `max_k <q_k, t>` across products"),
            ("intra-product", weight["intra_weight"],
             "the text-selected instance of two views of a product (a second photo or a synthesised scene with 1-3 "
             "other products) must match each other against other products' instances"),
            ("selection", weight["selection_weight"], "selection scores predict the text-selected query"),
        ]
    objectives_intro = (
        "Catalog-aware targets throughout: the target of a row is uniform over all rows with the same `product_id`, "
        "so duplicate products are never pushed apart. A weight of 0 switches an objective off."
        if use_decoder else
        "The baseline trains on the global ITC alone, with catalog-aware targets."
    )
    training = training_data or DEFAULT_TRAINING_DATA
    if training_facts:
        training += "\n\n" + _training_facts_text(training_facts)
    if datasets_list:
        training += "\n\nDatasets: " + ", ".join(f"`{d}`" for d in datasets_list) + "."
    trainer_state = os.path.join(folder, "trainer_state.json") if folder else None
    if trainer_state and os.path.isfile(trainer_state) and "steps" not in training_facts:
        try:
            with open(trainer_state, encoding="utf-8") as f:
                state = json.load(f)
            training += f"\n\nTrained for {state.get('global_step')} optimizer steps (`trainer_state.json`)."
        except (OSError, ValueError):
            pass
    if base_model:
        bases = [base_model] if isinstance(base_model, str) else list(base_model)
        training += "\n\nTowers initialised from " + ", ".join(f"`{b}`" for b in bases) + "."

    smoke = is_smoke_model(training_facts)
    if smoke:
        summary = SMOKE_NOTE + "\n\n" + summary
        card_data.tags = list(card_data.tags or []) + ["smoke-test"]
        intended_uses = "\n".join([
            "- Checking an installation and the code paths: loading, the pipelines, fine-tuning and evaluation.",
            "",
            "Not for real product photos: it has never seen one. Train the fashion recipe "
            "(`eclip-pretrain --config training/configs/fashion.yaml`) or load a checkpoint trained on your catalogue.",
        ])
    else:
        intended_uses = "\n".join([
            "- Zero-shot product categorisation (`zero-shot-image-classification` pipeline or `logits_per_image`).",
            "- Text-to-image and image-to-text product search; image embeddings for vector indexes.",
            "- Instance-level search: find the product a title names inside a busy photo "
            "(`get_instance_features`, K embeddings per image)." if use_decoder else
            "- A baseline for instance-level experiments (no instance embeddings).",
            "- Frozen features for linear probes / fine-tuned heads: category classification, product matching, "
            "product clustering, restricted-product recognition, attribute extraction.",
            "",
            "Not intended for decisions about people (the photos often show models wearing the products), nor as the "
            "sole safeguard for restricted-product moderation.",
        ])
    usage_code = "\n".join([
        "import torch",
        "from PIL import Image",
        "from transformers import AutoModel, AutoProcessor",
        "",
        f'model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True).eval()',
        f'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)',
        "",
        'image = Image.open("product.jpg")',
        'texts = ["black leather handbag", "white running shoes", "blue denim jacket"]',
        'inputs = processor(images=image, text=texts, return_tensors="pt", padding=True)',
        "with torch.inference_mode():",
        "    probs = model(**inputs).logits_per_image.softmax(dim=-1)      # zero-shot over `texts`",
        '    image_embeds = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output',
        '    text_embeds = model.get_text_features(input_ids=inputs["input_ids"],',
        '                                          attention_mask=inputs["attention_mask"]).pooler_output',
    ] + ([
        '    instances = model.get_instance_features(inputs["pixel_values"])',
        "    instances.instance_embeds    # (batch, K, dim): one embedding per instance query",
        "    instances.selection_logits   # (batch, K): which instance is the product",
    ] if use_decoder else []))
    usage_notes = (
        "With the `eclip` package installed, `import modeling_eclip` registers the Auto classes and "
        "`trust_remote_code` is not needed. Benchmarks: `eclip-evaluate --model <folder> --output eval/`."
    )
    limitations = "\n".join([
        "- " + trained_on(training_facts, vision.get("image_size")) + "; other verticals, languages and photo "
        "styles are untested.",
        "- Zero-shot accuracy depends on the prompt templates and the class names; the long tail of rare "
        "categories is weak.",
        "- Instance selection is learned without boxes: the text-selected query is not guaranteed to sit on the "
        "named product (see the attention-in-box rate below when reported).",
        "- Innerwear stands in for adult products in the restricted-product benchmark; real moderation needs its own "
        "data and a human in the loop.",
        "- Product matching here is text-only and zero-shot (cosine of embeddings with a validation threshold); "
        "fine-tuned cross-encoders (Ditto) are far stronger.",
    ])

    return ModelCard.from_template(
        card_data,
        template_path=template_path or TEMPLATE_PATH,
        model_name=model_name,
        summary=summary,
        model_description=model_description,
        architecture=architecture,
        decoder_description=decoder_description,
        training_data=training,
        objectives=objectives,
        objectives_intro=objectives_intro,
        intended_uses=intended_uses,
        usage_code=usage_code,
        usage_notes=usage_notes,
        limitations=limitations,
        results_section=_results_section(results),
    )


def write_model_card(folder: str, results: Mapping | None = None, **kwargs) -> str:
    """
    Build the card of the model in `folder` and save it as `folder/README.md` (atomically). Returns the path. The
    facts of the card already there (`previous_card_fields`: the training run, the repo id, base models, datasets)
    are kept unless `kwargs` give new ones; its results are replaced by `results`. The title is `model_name`, else the
    repo id, else the folder's name.
    """
    if not os.path.isdir(folder):
        raise ValueError(f"Model folder {folder} does not exist.")
    for key, value in previous_card_fields(folder).items():
        if kwargs.get(key) is None:
            kwargs[key] = value
    card = build_model_card(folder, results, **kwargs)
    path = os.path.join(folder, "README.md")
    atomic_write_text(path, str(card))
    return path


__all__ = ["build_model_card", "write_model_card", "eval_results_from", "previous_card_fields", "results_table",
           "TEMPLATE_PATH"]
