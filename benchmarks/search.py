# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Catalogue search with ECLIP (issue #39): how fast a catalogue is indexed and queried, how much an approximate
index loses, and whether searching a scene instance by instance finds its products better than searching it whole.
From the repository root, after training the fashion model:

```bash
python -m benchmarks.search --model eclip-fashion                   # the 9,583 fashion photos
python -m benchmarks.search --model eclip-fashion --limit 300 --queries 40 --scenes 40 \\
    --index-dir /tmp/search-index --results-dir /tmp/search-results   # a smoke run
```

Measures, on `$ECLIP_DATA_DIR/fashion-products` (every split; `--limit` keeps the first N photos):

1. **Index throughput**: `eclip-index` over the photos (exact FAISS indexes), images per second of the embedding
   step (decoding and preprocessing included, `--workers` processes; the FAISS build is timed apart). A fresh
   `--index-dir` is needed for a timing: a resumed folder embeds nothing.
2. **Text-query latency** with the index loaded: `--queries` queries (the shopper phrases of
   `eclip.training.fashion.SHOPPER_PHRASES`, then titles of test products), one at a time after 5 warm-up queries;
   p50 / p95 of the model forward (`embed_ms`) and of the FAISS search (`search_ms`) apart, and of both.
3. **Recall@10 of approximate indexes against exact**: HNSW and IVF built over the image and the instance embeddings
   (whatever their size), queried with the text embeddings of `--queries` sampled products (not vectors of the
   index); their build time and per-query search time beside the exact index's.
4. **Scene hit rate**: `--scenes` test products, each pasted among 1-3 other test products (the evaluation's scenes,
   `eclip.training.evaluation.scenes.build_scenes`, seeded). A scene is a hit when its product is in the top 10 of
   - `instance`: the results of *its* instance (of the instances `CatalogueIndex.search_scene` keeps, the one whose
     attention map puts the most mass inside the product's box), searched in the catalogue's image embeddings;
   - `instance_any`: any kept instance's results (no box needed: what a shopper scanning the rows sees);
   - `instance_index`: its instance's results in the catalogue's instance index (a product scores its best instance);
   - `global`: the whole scene's text-free embedding, one image search (the baseline).
   Each variant is compared with `global` by a paired bootstrap over scenes (`benchmarks.stats`, 2,000 resamples).

Writes `--results-dir/search.json` (default `benchmarks/results/`) with the settings, the machine and the command.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

import numpy as np

from benchmarks.records import RESULTS, command, cpu_name, read_json, write_json
from benchmarks.search_load import latency_summary
from benchmarks.stats import RESAMPLES, paired_ratios, query_draws, ratio_cell

K = 10
WARMUP_QUERIES = 5
VARIANTS = ("instance", "instance_any", "instance_index", "global")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="eclip-fashion", help="the model folder (default eclip-fashion)")
    parser.add_argument("--data-dir", default=None, help="the data root (default $ECLIP_DATA_DIR)")
    parser.add_argument("--limit", type=int, default=None, help="index only the first N photos (smoke runs)")
    parser.add_argument("--queries", type=int, default=200, help="text queries and recall queries (default 200)")
    parser.add_argument("--scenes", type=int, default=200, help="composed test scenes (default 200)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="eclip-index's decoding processes (default 2)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: eclip-index's choice)")
    parser.add_argument("--index-dir", default=None, help="where the index is written (default: a temporary folder)")
    parser.add_argument("--results-dir", default=RESULTS, help="where search.json goes (default benchmarks/results)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def build(args, catalogue: str, index_dir: str) -> dict:
    """Step 1: `eclip-index` (exact indexes); its manifest."""
    from eclip.training.search.index import main as eclip_index

    argv = [args.model, catalogue, index_dir, "--index", "exact", "--recall-queries", "0", "--batch-size",
            str(args.batch_size), "--workers", str(args.workers), "--seed", str(args.seed)]
    argv += ["--limit", str(args.limit)] if args.limit else []
    argv += ["--device", args.device] if args.device else []
    if eclip_index(argv) != 0:
        raise SystemExit("eclip-index failed (see above).")
    return read_json(os.path.join(index_dir, "index.json"))


def text_latency(index, queries: list[str]) -> dict:
    """Step 2: one query at a time, the model and FAISS timed apart."""
    for query in queries[:WARMUP_QUERIES]:
        index.search_text(query, k=K)
    timings = [index.search_text(query, k=K).timings for query in queries]
    return {name: latency_summary([t[name] for t in timings]) for name in ("embed_ms", "search_ms", "total_ms")}


def approximate_recall(index, rng: np.random.Generator, queries: int, seed: int) -> dict:
    """Step 3: HNSW and IVF against exact, over the image and instance embeddings, on other-modality queries. Each
    kind's build and search are timed apart (the exact index's build too: an `IndexFlatIP` only copies the vectors).
    Without a product text there is nothing to query with: only `queries: 0` is returned."""
    from eclip.training.search.faiss_index import build_index, recall_at_k

    text = index.vectors("text")
    sample = rng.choice(len(text), size=min(queries, len(text)), replace=False)
    probe = np.ascontiguousarray(text[sample[np.linalg.norm(text[sample], axis=1) > 0]], dtype=np.float32)
    out = {"queries": int(len(probe))}
    if not len(probe):
        return out
    for space in ("image", "instance"):
        if space not in index.manifest["indexes"]:
            continue
        vectors = index.vectors(space)
        vectors = vectors.reshape(-1, vectors.shape[-1])
        entry = {"vectors": int(len(vectors))}
        started = time.perf_counter()
        exact, _ = build_index(vectors, "exact")
        build_seconds = time.perf_counter() - started
        started = time.perf_counter()
        exact.search(probe, K)
        entry["exact"] = {"build_seconds": round(build_seconds, 3),
                          "search_ms_per_query": round(1000 * (time.perf_counter() - started) / len(probe), 4)}
        del exact
        for kind in ("hnsw", "ivf"):
            started = time.perf_counter()
            built, params = build_index(vectors, kind, seed=seed)
            build_seconds = time.perf_counter() - started
            started = time.perf_counter()
            built.search(probe, K)
            search_ms = 1000 * (time.perf_counter() - started) / len(probe)
            entry[kind] = {"recall_at_10": round(recall_at_k(built, vectors, probe, K), 4),
                           "build_seconds": round(build_seconds, 3), "search_ms_per_query": round(search_ms, 4),
                           **{key: value for key, value in params.items() if key != "kind"}}
        out[space] = entry
    return out


def _mass_in_box(heatmap: np.ndarray, box, image_processor, size) -> float:
    """The share of an instance's attention whose patch centres fall inside `box` (scene pixels)."""
    from eclip.training.evaluation.scenes import processed_to_canvas

    left, top, sx, sy, width, height = processed_to_canvas(image_processor, *size)
    side = heatmap.shape[0]
    centres = (np.arange(side) + 0.5)
    xs, ys = left + centres * (width / side) * sx, top + centres * (height / side) * sy
    inside = np.outer((ys >= box[1]) & (ys < box[3]), (xs >= box[0]) & (xs < box[2]))
    return float(heatmap[inside].sum() / max(heatmap.sum(), 1e-12))


def scene_hits(index, scenes: list[dict], target_rows: list[int]) -> dict[str, np.ndarray]:
    """Step 4: per scene, 1.0 when its product is in the top 10 of each variant's results, else 0.0."""
    hits = {name: [] for name in VARIANTS}
    with_instances = "instance" in index.manifest["indexes"]
    for scene, target in zip(scenes, target_rows):
        result = index.search_scene(scene["image"], k=K)
        masses = [_mass_in_box(i.heatmap, scene["box"], index.processor.image_processor, scene["image"].size)
                  if i.heatmap is not None else 0.0 for i in result.instances]
        own = result.instances[int(np.argmax(masses))]
        hits["instance"].append(target in {h.index_row for h in own.hits})
        hits["instance_any"].append(any(target in {h.index_row for h in i.hits} for i in result.instances))
        if with_instances:
            _, rows = index.search_vectors(own.embedding, K, space="instance")
            hits["instance_index"].append(target in set(rows[0].tolist()))
        _, rows = index.search_vectors(result.image_embedding, K, space="image")
        hits["global"].append(target in set(rows[0].tolist()))
    return {name: np.asarray(values, dtype=float) for name, values in hits.items() if values}


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    import torch

    from eclip.training.compositor import compose_scene
    from eclip.training.data import resolve_data_dir
    from eclip.training.evaluation.scenes import build_scenes
    from eclip.training.fashion import FASHION_DIR, SHOPPER_PHRASES
    from eclip.training.search.api import CatalogueIndex

    if not os.path.isdir(args.model):
        raise SystemExit(f"--model {args.model!r} is not a folder: train the fashion model first "
                         "(eclip-pretrain --config training/configs/fashion.yaml) or pass one.")
    catalogue = os.path.join(args.data_dir or resolve_data_dir(), FASHION_DIR)
    index_dir = args.index_dir or tempfile.mkdtemp(prefix="eclip-search-")
    rng = np.random.default_rng(args.seed)

    manifest = build(args, catalogue, index_dir)
    index = CatalogueIndex.load(index_dir, device=args.device)
    products = index.products
    tests = np.flatnonzero((products["split"] == "test").to_numpy()) if "split" in products else np.arange(len(index))
    if len(tests) < 2:
        tests = np.arange(len(index))
    picked = np.sort(rng.choice(tests, size=min(args.queries, len(tests)), replace=False))
    queries = (list(SHOPPER_PHRASES.values()) + products["_title"].iloc[picked].tolist())[: args.queries]
    latency = text_latency(index, queries)
    recall = approximate_recall(index, rng, args.queries, args.seed)

    targets = np.sort(rng.choice(tests, size=min(args.scenes, len(tests)), replace=False)).tolist()
    rows = [{"path": products["_image"].iloc[row]} for row in targets]
    scenes = build_scenes(rows, compose_scene, seed=args.seed)
    outcomes = scene_hits(index, scenes, [targets[s["target"]] for s in scenes])
    draw = query_draws(np.random.default_rng(args.seed), {0: len(scenes)})
    comparisons = {name: paired_ratios({0: (outcomes[name], outcomes["global"])}, draw)["pooled"]
                   for name in outcomes if name != "global"}

    result = {
        "command": command("benchmarks.search", sys.argv[1:] if argv is None else argv),
        "date": datetime.date.today().isoformat(), "cpu": cpu_name(), "cores": os.cpu_count(),
        "threads": int(torch.get_num_threads()),
        "model": os.path.abspath(args.model), "catalogue": catalogue, "products": manifest["products"],
        "index_throughput": {**manifest["embedding"],
                             "faiss_build_seconds": {s: e["build_seconds"] for s, e in manifest["indexes"].items()}},
        "text_query_latency_ms": latency, "text_queries": len(queries),
        "approximate_recall": recall,
        "scenes": {"count": len(scenes), "k": K, "seed": args.seed, "resamples": RESAMPLES,
                   "hit_rate": {name: round(float(values.mean()), 4) for name, values in outcomes.items()},
                   "vs_global": comparisons},
    }
    write_json(os.path.join(args.results_dir, "search.json"), result)
    throughput = manifest["embedding"]["images_per_second"]
    print(f"indexed {manifest['products']:,} products at "
          f"{'n/a (resumed)' if throughput is None else f'{throughput:.1f} images/s'}; text query p50 "
          f"{latency['embed_ms']['p50']:.1f} ms model + {latency['search_ms']['p50']:.2f} ms FAISS")
    for space, entry in ((s, e) for s, e in recall.items() if isinstance(e, dict)):
        print(f"recall@10 vs exact ({space}, {entry['vectors']:,} vectors): HNSW {entry['hnsw']['recall_at_10']:.3f}, "
              f"IVF {entry['ivf']['recall_at_10']:.3f}")
    print("scene hit@10: " + ", ".join(f"{name} {rate:.3f}" for name, rate in result["scenes"]["hit_rate"].items()))
    for name, entry in comparisons.items():
        print(f"  {name} / global: {ratio_cell(entry)}")
    return result


if __name__ == "__main__":
    main()
