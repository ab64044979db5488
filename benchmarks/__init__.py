# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
The studies behind docs/ (not installed with the package): run each from the repository root as
`python -m benchmarks.<study> [--help]`.

Studies (one script each; none imports another):

- `eclip_vs_clip_pretrained`: ECLIP against its CLIP baseline on the fashion recipe's towers, seeds and ablations
  (docs/results.md);
- `selection_probe`: where a trained model's selection head points (docs/results.md);
- `default_refit`: the selection-head refit on the default recipe (docs/pretraining.md);
- `fashion`, `fashion_resolution`: the fashion recipe, its validation sweep and its tower resolution (docs/fashion.md);
- `cache_speed`, `speed`, `text_chunks`: speed and memory (docs/fashion.md, docs/performance.md);
- `matching`: product matching against Ditto (docs/matching.md);
- `search`, `search_load`: catalogue search (index throughput, query latency, approximate recall, scene hit rate) and
  the search server under a bounded local load.

What they share:

- `stats`: the paired bootstrap (per seed and pooled), the interval across seeds, and how ratios are written;
- `records`: result and record files (written whole or not at all), recorded command lines, `--reuse`'s settings check;
- `scoring`: per-query outcomes on scene sets and of the selection head;
- `fashion_recipe`: the fashion recipe's config, locked tower and its feature cache, and the validation probe.

`results/` holds what docs/ cites: each study's JSON (tests check the docs' tables against it byte for byte), the
per-run records a study's `--reuse` rebuilds its JSON from, and the figure docs/ shows. Other figures and the models
are written where a run is pointed (`--output-dir`, `--results-dir`), not committed.
"""
