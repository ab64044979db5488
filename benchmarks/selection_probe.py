# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Where an ECLIP model's selection head points, on the test split's scenes and product photos: which query it names
(a histogram), how sure it is, which queries the products' titles pick, how much of its softmax mass falls on
the queries of the products an image shows (against a uniform head), and text-free scene retrieval with the
instances mixed by the head, uniformly and by an oracle that knows the shown products (what a head that always met
the selection objective's target would index). A diagnostic for the selection objective (docs/results.md), for a
model trained by `benchmarks.eclip_vs_clip_pretrained` on the locked DINOv2 tower.

```bash
python -m benchmarks.selection_probe runs/eclip_vs_clip_pretrained/eclip/seed0/model --seed 0 \\
    --output benchmarks/results/selection_probe/eclip_seed0.json
python -m benchmarks.selection_probe --table   # docs/results.md's table of the committed probes
```
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

from benchmarks.fashion_recipe import FASHION_CONFIG, locked_tower_features
from benchmarks.records import REPO, RESULTS, read_json, write_json


def selection_profile(images: dict, texts: np.ndarray, members: list[list[int]]) -> dict:
    """The head's choices on `images` (`instance_embeds` [N, K, D], `selection_logits` [N, K]) against the queries
    the titles `texts` of each image's products (`members`, the named one first) pick, `argmax_k <q_k, t>`."""
    from eclip.training.evaluation.tasks import member_queries

    logits, instances = images["selection_logits"], images["instance_embeds"]
    k = instances.shape[1]
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    chosen = member_queries(instances, texts, members)
    picked = [sorted(set(c)) for c in chosen]
    return {
        "images": len(members),
        "head_query_histogram": np.bincount(logits.argmax(axis=1), minlength=k).tolist(),
        "named_query_histogram": np.bincount([c[0] for c in chosen], minlength=k).tolist(),
        "member_query_histogram": np.bincount(np.concatenate(chosen), minlength=k).tolist(),
        "mean_top_weight": float(weights.max(axis=1).mean()),
        "mean_entropy": float((-(weights * np.log(weights + 1e-12)).sum(axis=1)).mean()),
        "max_entropy": float(np.log(k)),
        "mass_on_member_queries": float(np.mean([weights[i, p].sum() for i, p in enumerate(picked)])),
        "uniform_mass_on_member_queries": float(np.mean([len(p) / k for p in picked])),
    }


def text_free_by_weighting(images: dict, texts: np.ndarray, members: list[list[int]]) -> dict:
    """
    Text-free scene retrieval (every scene that shows a product is relevant to its title) with the instances mixed
    three ways: by the head's softmax (the embedding the model indexes), uniformly, and by an oracle that spreads the
    weight over the queries the shown products' titles pick (what a head that always found the products would
    index). It is a reference, not a bound: a head may weigh one shown product's query above the others and retrieve
    better than the even spread.
    """
    from eclip.training.evaluation.scenes import scene_relevance
    from eclip.training.evaluation.tasks import member_queries
    from modeling_eclip.losses import selection_weighted_embeds
    from modeling_eclip.metrics import load_metric

    retrieval = load_metric("retrieval")  # R@k and MRR as the evaluation suite computes them

    instances, logits = images["instance_embeds"], images["selection_logits"]
    oracle = np.full(logits.shape, -np.inf, dtype=np.float32)
    for i, picked in enumerate(member_queries(instances, texts, members)):
        oracle[i, picked] = 0.0
    scenes = [{"target": shown[0], "members": shown} for shown in members]
    queries, containing, _ = scene_relevance(scenes)
    out = {}
    for name, weights in (("head", logits), ("uniform", np.zeros_like(logits)), ("oracle_members", oracle)):
        embeds = selection_weighted_embeds(torch.from_numpy(np.asarray(instances, dtype=np.float32)),
                                           torch.from_numpy(np.asarray(weights, dtype=np.float32))).numpy()
        metrics = retrieval.compute(scores=(embeds @ texts.T).T[queries].tolist(), relevant=containing,
                                    k_values=(1, 5, 10))
        out[name] = {"recall@1": metrics["recall@1"], "recall@10": metrics["recall@10"], "mrr": metrics["mrr"]}
    return out


PROBES = os.path.join(RESULTS, "selection_probe")


def load_probes(folder: str = PROBES) -> list[tuple[str, dict]]:
    """The committed probes, `<variant>_seed<N>.json`, as (variant, report), by variant then seed."""
    probes = []
    for name in os.listdir(folder):
        if name.endswith(".json") and "_seed" in name:
            probes.append((name.rsplit("_seed", 1)[0], read_json(os.path.join(folder, name))))
    return sorted(probes, key=lambda probe: (probe[0] != "eclip", probe[0], probe[1]["seed"]))


def readme_table(probes: list[tuple[str, dict]]) -> str:
    """docs/results.md's table of the probes: where the head points on the test scenes, and what text-free retrieval
    gives with the instances mixed by it, uniformly, and by the oracle (`text_free_by_weighting`)."""
    lines = [
        "| model | seed | scenes where the head names its most named query | softmax mass on the shown products' "
        "queries | uniform head | text-free R@1: head | uniform | oracle |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant, probe in probes:
        scenes, mixed = probe["scenes"], probe.get("scenes_text_free_by_weighting")
        if mixed is None:
            continue
        lines.append(
            f"| `{variant}` | {probe['seed']} | {max(scenes['head_query_histogram']) / scenes['images']:.3f} "
            f"| {scenes['mass_on_member_queries']:.3f} | {scenes['uniform_mass_on_member_queries']:.3f} "
            f"| {mixed['head']['recall@1']:.3f} | {mixed['uniform']['recall@1']:.3f} "
            f"| {mixed['oracle_members']['recall@1']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", nargs="?", help="A trained ECLIP folder (omit with --table).")
    parser.add_argument("--table", action="store_true",
                        help="Print docs/results.md's table of the committed probes "
                             f"({os.path.relpath(PROBES, REPO)}).")
    parser.add_argument("--seed", type=int, default=0, help="The evaluation seed (which scenes), as in the runs.")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--limit", type=int, default=None, help="Test rows (default: all).")
    parser.add_argument("--output", default=None, help="Also write the JSON here.")
    args = parser.parse_args(argv)
    if args.table:
        print(readme_table(load_probes()), end="")
        return 0
    if args.model_dir is None:
        parser.error("model_dir is required (or --table)")

    from transformers import AutoModel, AutoProcessor

    import modeling_eclip  # noqa: F401
    from eclip.training.compositor import compose_scene
    from eclip.training.data import resolve_data_dir
    from eclip.training.evaluation.embedder import Embedder
    from eclip.training.evaluation.runner import prepare
    from eclip.training.evaluation.scenes import build_scenes
    from eclip.training.fashion import TITLE_FIELD
    from eclip.training.pretrain import load_config

    model = AutoModel.from_pretrained(args.model_dir).eval()
    if not model.config.use_instance_decoder:
        raise SystemExit(f"{args.model_dir} has no instance decoder (a CLIP baseline): it has no selection head.")
    processor = AutoProcessor.from_pretrained(args.model_dir)
    _, _, features = locked_tower_features(load_config(FASHION_CONFIG), processor.image_processor)
    data_dir = os.path.abspath(args.data_dir or resolve_data_dir())
    rows = prepare(data_dir, ["zero_shot", "instance_retrieval"], args.limit, args.seed)["splits"]["test"]
    scenes = build_scenes(rows, compose_scene, args.seed)
    embedder = Embedder(model, processor, show_progress=True, tower_features=features)
    titles = embedder.texts([r[TITLE_FIELD] for r in rows])
    scene_images = embedder.images("scenes", [s["image"] for s in scenes])
    scene_members = [s["members"] for s in scenes]
    report = {
        "model": os.path.abspath(args.model_dir), "seed": args.seed,
        "scenes": selection_profile(scene_images, titles, scene_members),
        "scenes_text_free_by_weighting": text_free_by_weighting(scene_images, titles, scene_members),
        "photos": selection_profile(embedder.images("test", [r["path"] for r in rows]), titles,
                                    [[i] for i in range(len(rows))]),
    }
    if args.output:
        write_json(args.output, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
