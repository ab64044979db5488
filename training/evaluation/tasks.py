# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""The seven benchmark tasks, each a function of a `TaskRun` (one model's embedder, the data, the output folder)."""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from eclip.training.compositor import SCENE_DISTRACTORS, SCENE_SCALE_RANGE
from eclip.training.evaluation.embedder import Embedder, image_text_scores, load_image, normalize
from eclip.training.evaluation.plots import PLOT_FILES, plot_confusion, plot_instance_attention, plot_retrieval_examples
from eclip.training.evaluation.report import DETAILS
from eclip.training.evaluation.scenes import attention_grid, processed_to_canvas, scene_relevance
from eclip.training.evaluation.task_names import TASK_SPLITS, TASKS, parse_tasks  # re-exported: their home is light
from eclip.training.fashion import LABEL_FIELD, RESTRICTED_FIELD, RESTRICTED_VALUE, SHOPPER_PHRASES, TITLE_FIELD
from eclip.training.matching_data import DEFAULT_SERIALIZATION

RESTRICTED_PROMPTS = ("innerwear", "underwear", "lingerie", "a bra", "briefs")
TARGET_PRECISION = 0.95
LINEAR_PROBE_C = (0.01, 0.1, 1.0, 10.0)


@dataclass
class TaskRun:
    """What one model's tasks share: its embedder, the data, the output folder; tasks add plots and notes."""

    embedder: Embedder
    splits: dict
    matching: dict | None
    scenes: list | None
    output_dir: str
    templates: list[str]
    seed: int
    class_names: list[str]
    restricted_negatives: list[str]
    confusion_classes: int
    num_examples: int
    hard_scenes: dict[str, list] | None = None  # `build_hard_scenes`: the harder scene sets, by kind
    plots: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def split_images(self, split: str) -> dict:
        return self.embedder.images(split, [r["path"] for r in self.splits[split]])

    def split_titles(self, split: str) -> np.ndarray:
        return self.embedder.texts([r[TITLE_FIELD] for r in self.splits[split]], desc=f"{split} titles")

    def labels(self, split: str, field: str = LABEL_FIELD) -> list[str]:
        return [r[field] for r in self.splits[split]]


def _metric(name: str):
    from modeling_eclip.metrics import load_metric

    return load_metric(name)


def _zero_shot_predictions(run: TaskRun, prompts: Sequence[str]) -> tuple[dict, np.ndarray, np.ndarray, list[int]]:
    """Zero-shot articleType on the test split with one prompt name per class: (metrics, predictions, references,
    the classes present in the test rows)."""
    images = run.split_images("test")
    class_embeds = run.embedder.class_embeddings(prompts, run.templates, desc="class prompts")
    predictions = image_text_scores(images, class_embeds).argmax(axis=1)
    index = {name: i for i, name in enumerate(run.class_names)}
    references = np.array([index[label] for label in run.labels("test")])
    present = sorted(set(references.tolist()))
    metrics = _metric("classification").compute(
        predictions=predictions.tolist(), references=references.tolist(), labels=present
    )
    return metrics, predictions, references, present


def task_zero_shot(run: TaskRun) -> dict:
    metrics, predictions, references, present = _zero_shot_predictions(run, run.class_names)
    # What a model with no information scores: a uniform guess over the classes, and always the commonest test class.
    support = np.bincount(references, minlength=len(run.class_names))
    shares = np.bincount(predictions, minlength=len(run.class_names)) / max(len(predictions), 1)
    metrics["chance_accuracy"] = 1.0 / len(run.class_names)
    metrics["majority_accuracy"] = float(support.max() / max(len(references), 1))
    rows, columns, matrix = confusion_table(references, predictions, len(run.class_names), run.confusion_classes)
    names = [run.class_names[c] for c in columns]
    path = os.path.join(run.output_dir, PLOT_FILES["zero_shot"])
    plot_confusion(matrix, [run.class_names[c] for c in rows],
                   [f"{name} ({shares[c]:.0%})" for name, c in zip(names, columns)] + ["(other)"], path,
                   f"{run.embedder.name}: zero-shot articleType, the {len(rows)} largest test classes and the most "
                   f"predicted (share of predictions in brackets); accuracy {metrics['accuracy']:.3f}, chance "
                   f"{metrics['chance_accuracy']:.3f}, majority {metrics['majority_accuracy']:.3f}")
    run.plots["zero_shot"] = os.path.basename(path)
    most_predicted = [int(c) for c in np.argsort(-shares, kind="stable")[:5] if shares[c] > 0]
    return {
        **metrics,
        DETAILS: {
            "num_classes": len(run.class_names),
            "num_test_classes": len(present),
            "templates": list(run.templates),
            "scoring": "max_k <q_k, c>" if run.embedder.is_eclip else "<g, c>",
            "f1_averaged_over": "classes present in the test rows",
            "chance": "a uniform guess over the classes: 1 / num_classes",
            "majority_class": run.class_names[int(support.argmax())],
            "most_predicted": [{"class": run.class_names[c], "share": float(shares[c])} for c in most_predicted],
            "confusion_rows": [run.class_names[c] for c in rows],
            "confusion_columns": names,
        },
    }


def task_zero_shot_shopper(run: TaskRun) -> dict:
    """
    Zero-shot articleType with the classes named as shoppers say them (`SHOPPER_PHRASES`: "sneakers" for Casual
    Shoes, "purse" for Handbags), the same templates and test photos as `zero_shot`. A class without a phrase keeps
    its catalogue label (counted in the details).
    """
    metrics = _zero_shot_predictions(run, [SHOPPER_PHRASES.get(name, name) for name in run.class_names])[0]
    return {
        **metrics,
        DETAILS: {
            "num_classes": len(run.class_names),
            "classes_without_a_phrase": [name for name in run.class_names if name not in SHOPPER_PHRASES],
            "phrases": "eclip.training.fashion.SHOPPER_PHRASES (fixed before any text-view training)",
            "templates": list(run.templates),
            "f1_averaged_over": "classes present in the test rows",
        },
    }


def confusion_table(references: np.ndarray, predictions: np.ndarray, num_classes: int, k: int):
    """
    The confusion plot's layout: `(rows, columns, matrix)`. Rows are the `k` largest test classes plus the most
    predicted classes that occur in the test rows; columns are those classes plus any other heavily predicted class
    (the `max(3, k // 3)` most predicted), so a model that answers one class for most photos shows it even when
    that class is rare; a last column gathers every other prediction. Each row is normalised by its class's size.
    """
    support = np.bincount(references, minlength=num_classes)
    predicted = np.bincount(predictions, minlength=num_classes)
    largest = [int(c) for c in np.argsort(-support, kind="stable")[:k] if support[c] > 0]
    favourites = [int(c) for c in np.argsort(-predicted, kind="stable")[: max(3, k // 3)] if predicted[c] > 0]
    columns = largest + [c for c in favourites if c not in largest]
    rows = largest + [c for c in favourites if c not in largest and support[c] > 0]
    index = {c: i for i, c in enumerate(columns)}
    matrix = np.zeros((len(rows), len(columns) + 1))
    for r, c in enumerate(rows):
        for p in predictions[references == c]:
            matrix[r, index.get(int(p), len(columns))] += 1
        matrix[r] /= max(int(support[c]), 1)
    return rows, columns, matrix


def _retrieval_metrics(scores: np.ndarray, relevant: list[list[int]]) -> dict:
    return _metric("retrieval").compute(scores=scores.tolist(), relevant=relevant, k_values=(1, 5, 10))


def task_retrieval(run: TaskRun) -> dict:
    rows = run.splits["test"]
    images = run.split_images("test")
    texts = run.split_titles("test")
    by_id = defaultdict(list)
    for i, row in enumerate(rows):
        by_id[row["id"]].append(i)
    relevant = [by_id[row["id"]] for row in rows]
    scores = image_text_scores(images, texts)  # images x texts
    result = {
        "text_to_image": _retrieval_metrics(scores.T, relevant),
        "image_to_text": _retrieval_metrics(scores, relevant),
        # The text-free image embedding (what an index stores); equals the above for the CLIP baseline.
        "text_to_image_text_free": _retrieval_metrics(image_text_scores(images, texts, text_free=True).T, relevant),
    }
    titles = [row[TITLE_FIELD] for row in rows]
    duplicates = len(titles) - len(set(titles))
    # Retrieval examples: a few seeded queries with their top-5 gallery images.
    rng = np.random.default_rng(run.seed)
    picks = sorted(rng.choice(len(rows), size=min(run.num_examples, len(rows)), replace=False).tolist())
    ranked, correct, truth = [], [], []
    for q in picks:
        order = np.argsort(-scores[:, q], kind="stable")
        ranked.append([load_image(rows[i]["path"]) for i in order[:5]])
        correct.append([rows[i]["id"] == rows[q]["id"] for i in order[:5]])
        truth.append((load_image(rows[q]["path"]), int(np.nonzero(order == q)[0][0]) + 1))
    path = os.path.join(run.output_dir, PLOT_FILES["retrieval"])
    plot_retrieval_examples([titles[q] for q in picks], ranked, correct, path,
                            f"{run.embedder.name}: text-to-image retrieval, top-5 of {len(rows)} "
                            "(green frame = the product)", truth=truth)
    run.plots["retrieval"] = os.path.basename(path)
    result[DETAILS] = {
        "num_queries": len(rows),
        "gallery_size": len(rows),
        "relevant": "same product id",
        "duplicate_titles": duplicates,
        "scoring": "max_k <q_k, t>" if run.embedder.is_eclip else "<g, t>",
    }
    return result


def member_queries(instances: np.ndarray, texts: np.ndarray, members: list[list[int]]) -> list[list[int]]:
    """Per image, the query each product it shows picks with its title, `argmax_k <q_k, t>` (`members[i]`, the named
    product first; `instances` [N, K, D], `texts` [M, D])."""
    return [[int(np.argmax(instances[i] @ texts[m])) for m in shown] for i, shown in enumerate(members)]


def member_agreement(top: Sequence[int], chosen: list[list[int]]) -> float:
    """How often an image's top query (`top[i]`) is one that a product it shows picks (`chosen[i]`)."""
    return float(np.mean([q in c for q, c in zip(top, chosen)]))


def member_prior_share(chosen: list[list[int]], num_queries: int) -> float:
    """The same for the best single query named for every image: what a head that learnt only the prior scores."""
    return max(float(np.mean([q in c for c in chosen])) for q in range(num_queries))


def selection_diagnostics(images: dict, texts: np.ndarray, members: list[list[int]]) -> dict:
    """
    Does the selection head (text-free) pick the query the text would pick? Per image, the named product is
    `members[i][0]`; `agreement` is how often the head's top query is its title's `argmax_k <q_k, t>`, and
    `top_query_share` how often that is the single most picked query (what a head that learnt only the prior scores).
    `member_agreement` / `member_top_query_share`: the same, counting a hit when the query belongs to any product
    the image shows.
    """
    instances, logits = images["instance_embeds"], images["selection_logits"]
    head = logits.argmax(axis=1)
    chosen = member_queries(instances, texts, members)
    named = np.array([c[0] for c in chosen])
    k = instances.shape[1]
    prior = np.bincount(named, minlength=k).argmax()
    return {
        "agreement": float(np.mean(head == named)),
        "top_query_share": float(np.mean(named == prior)),
        "member_agreement": member_agreement(head, chosen),
        "member_top_query_share": member_prior_share(chosen, k),
    }


def task_instance_retrieval(run: TaskRun) -> dict:
    rows = run.splits["test"]
    scenes = run.scenes
    embedder = run.embedder
    scene_images = embedder.images("scenes", [s["image"] for s in scenes], with_attention=True)
    texts = run.split_titles("test")
    scores = image_text_scores(scene_images, texts)  # scenes x titles
    queries, containing, targets = scene_relevance(scenes)
    result = {
        "text_to_image": _retrieval_metrics(scores.T[queries], containing),
        "text_to_image_target_only": _retrieval_metrics(scores.T[queries], targets),
    }
    details = {
        "num_scenes": len(scenes),
        "num_queries": len(queries),
        "relevant": "text_to_image: every scene that contains the product (as target or distractor); "
                    "target_only: the scene built around it",
        "distractors": list(SCENE_DISTRACTORS),
        "scale_range": list(SCENE_SCALE_RANGE),
        "scoring": "max_k <q_k, t>" if embedder.is_eclip else "<g, t>",
    }
    # Text-free: the scenes indexed by the image embedding alone (ECLIP: selection-weighted instances; CLIP: g).
    result["text_free"] = _retrieval_metrics(image_text_scores(scene_images, texts, text_free=True).T[queries],
                                             containing)
    for kind, hard in (run.hard_scenes or {}).items():
        hard_images = embedder.images(f"{kind} scenes", [s["image"] for s in hard])
        hard_queries, hard_containing, hard_targets = scene_relevance(hard)
        hard_scores = image_text_scores(hard_images, texts).T[hard_queries]
        result[kind] = {
            "text_to_image": _retrieval_metrics(hard_scores, hard_containing),
            "text_to_image_target_only": _retrieval_metrics(hard_scores, hard_targets),
            "text_free": _retrieval_metrics(
                image_text_scores(hard_images, texts, text_free=True).T[hard_queries], hard_containing),
        }
        details[f"{kind}_mean_visible_fraction"] = float(np.mean([s["visible"] for s in hard]))
    if embedder.is_eclip:
        result["selection"] = {
            "scenes": selection_diagnostics(scene_images, texts, [s["members"] for s in scenes]),
            "photos": selection_diagnostics(run.split_images("test"), texts, [[i] for i in range(len(rows))]),
        }
        details["selection"] = (
            "agreement: the selection head's top query is the one the named product's title picks "
            "(argmax_k <q_k, t>); top_query_share: the agreement of always naming the most picked query (the prior); "
            "member_*: the same where any product the image shows counts")
    box_area = [((s["box"][2] - s["box"][0]) * (s["box"][3] - s["box"][1])) / float(s["image"].size[0] * s["image"].size[1])
                for s in scenes]
    details["attention_in_box_chance"] = float(np.mean(box_area)) if box_area else None
    if not embedder.is_eclip:
        result["attention_in_box_rate"] = None
        details["attention_note"] = "CLIP baseline (no instance decoder): no cross-attention, attention plot skipped."
        run.notes.append(details["attention_note"])
        result[DETAILS] = details
        return result
    attention = scene_images["attention"]
    instances = scene_images["instance_embeds"]
    image_processor = getattr(embedder.processor, "image_processor", embedder.processor)
    hits, panels = [], []
    for s, scene in enumerate(scenes):
        selected = int(np.argmax(instances[s] @ texts[scene["target"]]))
        grid = attention_grid(attention[s, selected])
        if grid is None:
            details["attention_note"] = (f"{attention.shape[-1]} image tokens do not form a square patch grid: "
                                         "attention analysis skipped.")
            result["attention_in_box_rate"] = None
            result[DETAILS] = details
            return result
        width, height = scene["image"].size
        left, top, sx, sy, out_w, out_h = processed_to_canvas(image_processor, width, height)
        g_rows, g_cols = grid.shape
        r, c = np.unravel_index(int(np.argmax(grid)), grid.shape)
        peak = (left + (c + 0.5) * out_w / g_cols * sx, top + (r + 0.5) * out_h / g_rows * sy)
        x0, y0, x1, y1 = scene["box"]
        inside = bool(x0 <= peak[0] <= x1 and y0 <= peak[1] <= y1)
        hits.append(inside)
        if len(panels) < 8:
            panels.append({
                "scene": scene["image"], "heat": grid, "box": scene["box"], "peak": peak, "inside": inside,
                "extent": (left, left + out_w * sx, top + out_h * sy, top),
                "caption": f"query {selected}: {rows[scene['target']][TITLE_FIELD]}",
            })
    result["attention_in_box_rate"] = float(np.mean(hits)) if hits else None
    details["attention_layer"] = "last decoder layer, mean over heads, text-selected query (argmax_k <q_k, t>)"
    path = os.path.join(run.output_dir, PLOT_FILES["instance_retrieval"])
    plot_instance_attention(
        panels, path,
        f"{embedder.name}: cross-attention of the text-selected query (last layer), x = peak; box = the named "
        f"product, green if the peak is inside\n(peak in box in {result['attention_in_box_rate']:.0%} of "
        f"{len(hits)} scenes; box area {details['attention_in_box_chance']:.0%} of the scene)",
    )
    run.plots["instance_retrieval"] = os.path.basename(path)
    result[DETAILS] = details
    return result


def fit_logistic(x_train, y_train, x_val, y_val, select: Callable, Cs=LINEAR_PROBE_C, seed=0, **kwargs):
    """Logistic regression on standardised features; C picked by `select(model, x_val, y_val)` (higher is better)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    best = None
    for C in Cs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            # Small (--limit) runs have many classes per sample; the fit is still what we want.
            warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
            clf = LogisticRegression(C=C, max_iter=500, random_state=seed, **kwargs).fit(x_train, y_train)
        value = select(clf, x_val, y_val)
        if best is None or value > best[0]:
            best = (value, C, clf)
    return best[2], scaler, best[1], best[0]


def task_linear_probe(run: TaskRun) -> dict:
    features = {}
    for split in ("train", "validation", "test"):
        image = run.split_images(split)["image_embeds"]
        text = run.split_titles(split)
        features[split] = {"image": image, "text": text, "both": np.concatenate([image, text], axis=1)}
    y = {split: np.array(run.labels(split)) for split in features}
    if len(set(y["train"].tolist())) < 2:
        return {"skipped": "the train rows hold fewer than two articleType classes"}
    metric = _metric("classification")
    classes = sorted(set(y["train"].tolist()) | set(y["validation"].tolist()) | set(y["test"].tolist()))
    index = {c: i for i, c in enumerate(classes)}
    test_labels = sorted({index[c] for c in y["test"].tolist()})
    result = {}
    for kind in ("image", "text", "both"):
        clf, scaler, C, val_acc = fit_logistic(
            features["train"][kind], y["train"], features["validation"][kind], y["validation"],
            select=lambda m, xv, yv: float(np.mean(m.predict(xv) == yv)), seed=run.seed,
        )
        predictions = clf.predict(scaler.transform(features["test"][kind]))
        scores = metric.compute(predictions=[index[p] for p in predictions],
                                references=[index[t] for t in y["test"].tolist()], labels=test_labels)
        result[kind] = {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}
        result.setdefault(DETAILS, {})[kind] = {"C": C, "validation_accuracy": val_acc}
    result[DETAILS]["C_grid"] = list(LINEAR_PROBE_C)
    result[DETAILS]["features"] = "L2-normalised embeddings, standardised on train; both = [image, text]"
    return result


def task_clustering(run: TaskRun) -> dict:
    from sklearn.cluster import KMeans

    embeds = run.split_images("test")["image_embeds"]
    labels = run.labels("test")
    classes = sorted(set(labels))
    k = min(len(classes), len(labels))
    assignments = KMeans(n_clusters=k, n_init=10, random_state=run.seed).fit_predict(embeds)
    index = {c: i for i, c in enumerate(classes)}
    metrics = _metric("clustering").compute(predictions=assignments.tolist(), references=[index[c] for c in labels])
    return {**metrics, DETAILS: {"k": k, "features": "text-free image embeddings (test)", "n": len(labels)}}


def _pair_scores(embedder: Embedder, pairs, desc) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of the two records' text embeddings (texts already serialized by `eclip.training.matching_data`)."""
    left = embedder.texts([p[0] for p in pairs], desc=f"{desc} left")
    right = embedder.texts([p[1] for p in pairs], desc=f"{desc} right")
    return np.sum(left * right, axis=1), np.array([p[2] for p in pairs])


def zero_shot_matching(embedder: Embedder, matching: dict, serialization: str = DEFAULT_SERIALIZATION) -> dict:
    """F1 (precision, recall, ROC-AUC) on each benchmark's test pairs of the rule cosine >= threshold, the threshold
    tuned on its validation pairs; `matching` as `load_matching(..., serialization=serialization)` returns it."""
    from modeling_eclip.metrics import best_f1_threshold

    metric = _metric("pair_matching")
    result, details = {}, {}
    for name, splits in matching.items():
        valid_scores, valid_labels = _pair_scores(embedder, splits["valid"], f"{name} valid")
        threshold, valid_f1 = best_f1_threshold(valid_scores, valid_labels)
        test_scores, test_labels = _pair_scores(embedder, splits["test"], f"{name} test")
        scores = metric.compute(scores=test_scores.tolist(), references=test_labels.tolist(), threshold=threshold)
        result[name] = {k: scores[k] for k in ("f1", "precision", "recall", "roc_auc")}
        details[name] = {"threshold": threshold, "valid_f1": valid_f1, "valid_pairs": len(splits["valid"]),
                         "test_pairs": len(splits["test"])}
    details["scoring"] = "cosine of the two offers' text embeddings; threshold = best F1 on valid"
    details["serialization"] = serialization
    result[DETAILS] = details
    return result


def task_matching(run: TaskRun) -> dict:
    return zero_shot_matching(run.embedder, run.matching)


def _binary_report(metric, val_scores, val_labels, test_scores, test_labels) -> dict:
    from modeling_eclip.metrics import best_f1_threshold

    threshold, _ = best_f1_threshold(val_scores, val_labels)
    scores = metric.compute(scores=np.asarray(test_scores).tolist(), references=np.asarray(test_labels).tolist(),
                            threshold=threshold, target_precision=TARGET_PRECISION)
    return {
        "roc_auc": scores["roc_auc"],
        "recall_at_95_precision": scores["recall_at_precision"],
        "f1": scores["f1"],
        "precision": scores["precision"],
        "recall": scores["recall"],
    }, threshold


def task_restricted(run: TaskRun) -> dict:
    from sklearn.metrics import roc_auc_score

    labels = {s: np.array([r[RESTRICTED_FIELD] == RESTRICTED_VALUE for r in run.splits[s]], dtype=np.int64)
              for s in ("train", "validation", "test")}
    for split, y in labels.items():
        if y.min() == y.max():
            return {"skipped": f"the {split} rows hold only one class ({RESTRICTED_VALUE} vs rest): "
                               "raise --limit or use the full split"}
    metric = _metric("pair_matching")
    embeds = {s: run.split_images(s)["image_embeds"] for s in labels}
    # Zero-shot: the text-free image embedding against "innerwear" prompts vs the other subCategory names.
    positive = run.embedder.class_embeddings(RESTRICTED_PROMPTS, run.templates, desc="restricted prompts")
    positive = normalize(positive.mean(axis=0, keepdims=True))
    negative = run.embedder.class_embeddings(run.restricted_negatives, run.templates, desc="restricted prompts")

    def zero_shot_score(x):
        return (x @ positive.T)[:, 0] - (x @ negative.T).max(axis=1)

    zero_shot, zs_threshold = _binary_report(metric, zero_shot_score(embeds["validation"]), labels["validation"],
                                             zero_shot_score(embeds["test"]), labels["test"])
    clf, scaler, C, val_auc = fit_logistic(
        embeds["train"], labels["train"], embeds["validation"], labels["validation"],
        select=lambda m, xv, yv: float(roc_auc_score(yv, m.decision_function(xv))), seed=run.seed,
        class_weight="balanced",
    )
    probe, lp_threshold = _binary_report(
        metric, clf.decision_function(scaler.transform(embeds["validation"])), labels["validation"],
        clf.decision_function(scaler.transform(embeds["test"])), labels["test"],
    )
    return {
        "zero_shot": zero_shot,
        "linear_probe": probe,
        DETAILS: {
            "positive": f"{RESTRICTED_FIELD} == {RESTRICTED_VALUE}",
            "positives": {s: int(y.sum()) for s, y in labels.items()},
            "rows": {s: int(len(y)) for s, y in labels.items()},
            "zero_shot_prompts": list(RESTRICTED_PROMPTS),
            "zero_shot_negatives": "the other subCategory names",
            "zero_shot_threshold": zs_threshold,
            "linear_probe_C": C,
            "linear_probe_validation_roc_auc": val_auc,
            "linear_probe_threshold": lp_threshold,
            "thresholds": "best F1 on validation",
        },
    }


TASK_FUNCTIONS = {
    "zero_shot": task_zero_shot,
    "zero_shot_shopper": task_zero_shot_shopper,
    "retrieval": task_retrieval,
    "instance_retrieval": task_instance_retrieval,
    "linear_probe": task_linear_probe,
    "clustering": task_clustering,
    "matching": task_matching,
    "restricted": task_restricted,
}


__all__ = ["LINEAR_PROBE_C", "TASKS", "TASK_FUNCTIONS", "TASK_SPLITS", "TaskRun", "fit_logistic", "parse_tasks",
           "zero_shot_matching"]
