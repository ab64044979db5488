# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Does the selection-head refit (`eclip.training.selection_refit`, `selection_refit: true`) help the default recipe
(`training/configs/default.yaml`: the embedded synthetic catalogue, MiniLM-L6 and a 64-px ViT from scratch)?

```bash
python -m benchmarks.default_refit --reuse               # 5 seeds, about 4 min each on 2 CPU cores
python -m benchmarks.default_refit --table               # docs/pretraining.md's table of the committed report
python -m benchmarks.default_refit --seeds 0 --max-steps 4 --sets 1 --refit-images 40 \\
    --work-dir /tmp/dr --output /tmp/dr.json             # a smoke run
```

Per seed: `eclip-pretrain`'s default run with that seed (refit off), then the refit applied afterwards on the same
training split as `eclip-pretrain` would draw it (`--refit-images` composed scenes and as many photos). Both heads are
measured on held-out products (the synthetic test split, one photo per product): `--sets` scene sets (each test
product pasted beside 1-3 others, as the evaluation composes them) and the plain photos. Per image: does the head's
top query belong to a shown product's title (`argmax_k <q_k, t>`), for the trained head, the refit head and the
prior (the query most often picked, with hindsight over the seed's images); and text-free scene retrieval R@1 (the
selection-weighted instance embedding; every scene that shows the product is relevant), before and after. Ratios
with a paired bootstrap over held-out products, per seed and pooled (`benchmarks.stats`). Writes `--output` (JSON)
and, per seed, a record under `--records` that `--reuse` keeps, so a session that stops mid-run loses nothing.

The rule for the default recipe, fixed before the runs: the refit goes on in `default.yaml` if its scene agreement
beats the prior (pooled interval above 1) and text-free scene R@1 is not worse than before (interval reaching 1 or
above); otherwise it stays off.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from benchmarks.records import REPO, RESULTS, check_reuse, cpu_name, read_json, write_json
from benchmarks.scoring import scene_set_outcomes, selection_choices, selection_hits
from benchmarks.stats import RESAMPLES, paired_ratios, query_draws, ratio_cell

RECORDS = os.path.join(RESULTS, "default_refit_runs")
OUTPUT = os.path.join(RESULTS, "default_refit.json")
# name: (record key of the refit head's values, record key of the reference's values), both per held-out product
COMPARISONS = {
    "scene_agreement_refit_vs_prior": ("scene_hit_after", "scene_hit_prior"),
    "scene_agreement_refit_vs_trained": ("scene_hit_after", "scene_hit_before"),
    "scene_agreement_trained_vs_prior": ("scene_hit_before", "scene_hit_prior"),
    "photo_agreement_refit_vs_prior": ("photo_hit_after", "photo_hit_prior"),
    "photo_agreement_refit_vs_trained": ("photo_hit_after", "photo_hit_before"),
    "text_free_scene_r1_refit_vs_trained": ("text_free_r1_after", "text_free_r1_before"),
}


def held_out_rows(split: str = "test") -> list[dict]:
    """One photo per product of the synthetic catalogue's `split`, as evaluation rows (`path`: the PIL image)."""
    from eclip.training.data import load_product_dataset
    from eclip.training.fashion import TITLE_FIELD
    from eclip.training.selection_refit import DatasetRows

    dataset = load_product_dataset("synthetic", split=split)
    first = {}
    for index, product in enumerate(dataset["product_id"]):
        first.setdefault(product, index)
    rows = DatasetRows(dataset.select(sorted(first.values())), lambda row: row["title"])
    return [{"path": r["path"], TITLE_FIELD: r[TITLE_FIELD]} for r in rows]


def head_outcomes(model, processor, rows: list[dict], scene_sets: list[list[dict]]) -> dict:
    """
    Per held-out product, means over the scene sets: whether the head's top query is one a shown product's title
    picks (`scene_hit`), whether the prior's is (`scene_prior_hit`: the query picked most often over every set), the
    same on the plain photos (`photo_hit`, `photo_prior_hit`), and text-free scene R@1 (`text_free_r1`).
    """
    from eclip.training.evaluation.embedder import Embedder
    from eclip.training.fashion import TITLE_FIELD

    embedder = Embedder(model, processor, show_progress=False)
    texts = embedder.texts([r[TITLE_FIELD] for r in rows])
    sets = [scene_set_outcomes(embedder.images(f"scenes {index}", [s["image"] for s in scenes]), texts, scenes,
                               f"held-out scene set {index}")
            for index, scenes in enumerate(scene_sets)]
    choices = {"selection_picked": np.stack([o["picked"] for o in sets]),
               "selection_head": np.stack([o["head"] for o in sets])}
    scene_hit, scene_prior_hit = (hits.mean(axis=0) for hits in selection_hits(choices))
    picked, head = selection_choices(embedder.images("photos", [r["path"] for r in rows]), texts,
                                     [[i] for i in range(len(rows))])
    photo_hit, photo_prior_hit = (hits[0] for hits in selection_hits(
        {"selection_picked": picked[None], "selection_head": head[None]}))  # one "set" of photos
    return {"scene_hit": scene_hit, "scene_prior_hit": scene_prior_hit, "photo_hit": photo_hit,
            "photo_prior_hit": photo_prior_hit,
            "text_free_r1": np.mean([o["text_free_rank"] == 1 for o in sets], axis=0)}


def run_seed(seed: int, args) -> dict:
    """Train the default recipe with `seed` (or reuse its model), refit its head, and measure both on held-out data."""
    from transformers import AutoModel, AutoProcessor

    import modeling_eclip  # noqa: F401
    from eclip.training.compositor import compose_scene
    from eclip.training.data import load_product_dataset
    from eclip.training.evaluation.scenes import build_scenes
    from eclip.training.pretrain import build_arg_parser, resolve_config, run_pretraining
    from eclip.training.selection_refit import DatasetRows, refit_selection_head

    model_dir = os.path.join(args.work_dir, f"seed{seed}")
    training_record = os.path.join(args.work_dir, f"seed{seed}.training.json")
    if not (args.reuse and os.path.isfile(os.path.join(model_dir, "config.json")) and os.path.isfile(training_record)):
        flags = ["--seed", str(seed), "--output-dir", model_dir, "--overwrite"]
        if args.max_steps:
            flags += ["--max-steps", str(args.max_steps)]
        config = resolve_config(build_arg_parser().parse_args(flags))
        config["training"]["selection_refit"] = False
        summary = run_pretraining(config)
        write_json(training_record, {k: summary[k] for k in ("steps", "wall_time_s", "final_losses")})
    training = read_json(training_record)

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    rows = held_out_rows()
    scene_sets = [build_scenes(rows, compose_scene, f"default-refit:{seed}:{s}") for s in range(args.sets)]
    before = head_outcomes(model, processor, rows, scene_sets)
    # eclip-pretrain has its training split loaded already: the refit's time starts after the load
    train = load_product_dataset("synthetic", split="train")
    started = time.time()
    stats = refit_selection_head(model, processor, DatasetRows(train, lambda row: row["title"]),
                                 scenes=args.refit_images, photos=args.refit_images, seed=seed)
    refit_s = time.time() - started
    after = head_outcomes(model, processor, rows, scene_sets)
    return {
        "seed": seed, "products": len(rows), "scene_sets": args.sets, "training": training,
        "refit": {**stats, "wall_time_s": refit_s},
        "scene_hit_before": before["scene_hit"].tolist(), "scene_hit_after": after["scene_hit"].tolist(),
        "scene_hit_prior": before["scene_prior_hit"].tolist(),
        "photo_hit_before": before["photo_hit"].tolist(), "photo_hit_after": after["photo_hit"].tolist(),
        "photo_hit_prior": before["photo_prior_hit"].tolist(),
        "text_free_r1_before": before["text_free_r1"].tolist(), "text_free_r1_after": after["text_free_r1"].tolist(),
    }


def report(records: dict[int, dict], resamples: int = RESAMPLES) -> dict:
    """Per-seed and pooled paired-bootstrap ratios of every comparison (`COMPARISONS`), with the rule's verdict. Every
    comparison of a seed resamples the same held-out products."""
    draw = query_draws(np.random.default_rng(0), {s: r["products"] for s, r in records.items()}, resamples)
    measures = {name: paired_ratios({s: (np.asarray(r[m], float), np.asarray(r[b], float)) for s, r in records.items()},
                                    draw)
                for name, (m, b) in COMPARISONS.items()}
    beats_prior = (measures["scene_agreement_refit_vs_prior"]["pooled"]["ratio_ci95"][0] or 0) > 1
    upper = measures["text_free_scene_r1_refit_vs_trained"]["pooled"]["ratio_ci95"][1]
    not_worse = upper is None or upper >= 1
    return {
        "seeds": sorted(records), "resamples": resamples, "measures": measures,
        "refit_wall_time_s": {str(s): r["refit"]["wall_time_s"] for s, r in records.items()},
        "training_wall_time_s": {str(s): r["training"]["wall_time_s"] for s, r in records.items()},
        "rule": "refit on in default.yaml iff scene agreement refit/prior has its pooled interval above 1 and "
                "text-free scene R@1 refit/trained has its upper end at 1 or above",
        "refit_on": bool(beats_prior and not_worse),
        "hardware": cpu_name(), "threads": int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count(),
    }


LABELS = {
    "scene_agreement_refit_vs_prior": "scene agreement, refit / prior",
    "scene_agreement_refit_vs_trained": "scene agreement, refit / trained head",
    "scene_agreement_trained_vs_prior": "scene agreement, trained head / prior",
    "photo_agreement_refit_vs_prior": "photo agreement, refit / prior",
    "photo_agreement_refit_vs_trained": "photo agreement, refit / trained head",
    "text_free_scene_r1_refit_vs_trained": "text-free scene R@1, refit / trained head",
}


def readme_table(result: dict) -> str:
    """docs/pretraining.md's table of a report: pooled levels, ratio and interval, and the per-seed ratios."""
    seeds = result["seeds"]
    lines = [f"| measure | pooled | ratio [95 % CI] | per seed ({', '.join(map(str, seeds))}) |",
             "| --- | ---: | ---: | ---: |"]
    for name, entry in result["measures"].items():
        pooled = entry["pooled"]
        per_seed = ", ".join("n/a" if entry["per_seed"][str(s)]["ratio"] is None
                             else f"{entry['per_seed'][str(s)]['ratio']:.2f}" for s in seeds)
        lines.append(f"| {LABELS.get(name, name)} | {pooled['model']:.3f} / {pooled['baseline']:.3f} | "
                     f"{ratio_cell(pooled)} | {per_seed} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--sets", type=int, default=5, help="Scene sets per seed.")
    parser.add_argument("--refit-images", type=int, default=1500,
                        help="Composed scenes (and photos) the refit fits on.")
    parser.add_argument("--max-steps", type=int, default=None, help="Override the recipe's steps (smoke runs).")
    parser.add_argument("--work-dir", default=os.path.join(REPO, "runs", "default_refit"))
    parser.add_argument("--records", default=None, help=f"Per-seed records (default {os.path.relpath(RECORDS, REPO)}; "
                        "with --work-dir elsewhere, WORK_DIR/records).")
    parser.add_argument("--output", default=OUTPUT)
    parser.add_argument("--reuse", action="store_true",
                        help="Keep trained models and per-seed records (made with the same --sets and --refit-images).")
    parser.add_argument("--table", action="store_true",
                        help="Print docs/pretraining.md's table of the --output report.")
    args = parser.parse_args(argv)
    if args.table:
        print(readme_table(read_json(args.output)), end="")
        return 0
    if args.sets < 1:
        parser.error(f"--sets must be at least 1, got {args.sets}.")
    if args.refit_images < 2:
        parser.error(f"--refit-images must be at least 2 (a scene pastes a product beside others), "
                     f"got {args.refit_images}.")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds takes comma-separated integers, e.g. 0,1,2; got {args.seeds!r}.")
    records_dir = args.records or (RECORDS if args.work_dir == parser.get_default("work_dir")
                                   else os.path.join(args.work_dir, "records"))
    records = {}
    for seed in seeds:
        path = os.path.join(records_dir, f"seed{seed}.json")
        if args.reuse and os.path.isfile(path):  # a kept record counts only if measured the way asked for now
            kept = read_json(path)
            check_reuse(path, {"scene_sets": kept.get("scene_sets"), "refit_images": kept["refit"].get("scenes")},
                        {"scene_sets": args.sets, "refit_images": args.refit_images})
        else:
            write_json(path, run_seed(seed, args))
        records[seed] = read_json(path)
        print(f"seed {seed}: {records[seed]['refit']['agreement_before']:.3f} -> "
              f"{records[seed]['refit']['agreement_after']:.3f} on its training images", flush=True)
    result = report(records)
    write_json(args.output, result)
    for name, entry in result["measures"].items():
        pooled = entry["pooled"]
        print(f"{name}: {pooled['model']:.3f} / {pooled['baseline']:.3f} = {ratio_cell(pooled)}")
    print(f"refit on in default.yaml by the rule: {result['refit_on']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
