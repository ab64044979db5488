# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
ECLIP benchmark runner (DESIGN.md, "Evaluation").

Evaluates a saved ECLIP folder (and optionally the CLIP baseline, `use_instance_decoder=False`) on the real data in
`$ECLIP_DATA_DIR` (default `../shared/data`): every benchmark reports on the `test` split, tunes only on
`validation` and trains (linear probes) only on `train`.

    eclip-evaluate --model runs/eclip --baseline runs/clip --data ../shared/data --tasks all --output eval/
    python -m eclip.training.evaluation --model runs/eclip --tasks zero_shot,retrieval --limit 200 --output eval-quick/

Python API: `eclip.training.evaluation.runner.evaluate_model(model, processor, data_dir, tasks, output_dir,
limit=None, ...) -> dict`.

Outputs in `--output`: `results.json`, `results.md`, `zero_shot_confusion.png`, `retrieval_examples.png`,
`instance_attention.png` (ECLIP only); with `--baseline` the baseline's plots go to `--output/baseline/` and
`results.json` / `results.md` hold both models side by side with ratios (model / baseline).

Modules: `runner` (`evaluate_model`, `prepare`), `tasks` (the seven tasks), `embedder` (batched, cached embeddings and
the model's image-text score), `scenes` (the instance-retrieval scenes), `data` (matching pairs, prompt templates),
`plots`, `report` (results.json / results.md), `tower_features` (a locked tower's cached hidden states),
`task_names` and `cli` (`eclip-evaluate`); the fashion-products readers live in `eclip.training.fashion`. Import a
name from the module that defines it (`from eclip.training.evaluation.runner import evaluate_model`): the package
itself holds only `main`, the `eclip-evaluate` entry point.
"""


def main(argv=None) -> int:
    """`eclip-evaluate` (`eclip.training.evaluation.cli.main`). The command's module loads on call, so importing this
    package loads nothing; `--help` and the argument checks run before torch is imported."""
    from eclip.training.evaluation.cli import main as evaluate_main

    return evaluate_main(argv)


__all__ = ["main"]
