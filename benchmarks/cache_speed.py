# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Training speed from the feature cache against training from pixels, same model, same locked tower, same batches.

```bash
python -m benchmarks.cache_speed                 # fashion model at 168 px, batch 64; ~10 min on 2 idle cores
python -m benchmarks.cache_speed --image-size 112 --steps 3
```

Both runs train the fashion recipe's model (DINOv2-S locked, MiniLM-L6 trained, instance decoder) on the first
`--rows` rows of the fashion-products train split with `EclipTrainer`, DataLoader in the main process
(`dataloader_num_workers=0`) for both. Pixel training decodes, composes scenes, processes images and runs the locked
tower every step; cached training reads the tower's hidden states from a `FeatureCache` built beforehand (its build
time is reported apart). Samples/s are measured from the end of the first step (warm-up) to the end of the run,
pixel and cached runs alternating `--repeats` times so that machine noise hits both; the ratio of the medians is
the speed-up. Writes `benchmarks/results/cache_speed.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

from benchmarks.fashion_recipe import FASHION_CONFIG
from benchmarks.records import RESULTS, command, write_json


def _timer():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

    return Timer()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=168)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="Steps per measured run (the first is warm-up).")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", default=None)
    parser.add_argument("--output", default=os.path.join(RESULTS, "cache_speed.json"))
    args = parser.parse_args(argv)

    import torch

    from eclip.training.data import PretrainingCollator, load_product_dataset, resolve_data_dir
    from eclip.training.feature_cache import FeatureCache, lock_vision_tower
    from eclip.training.pretrain import build_model, build_processor, default_text_model, load_config
    from eclip.training.towers import default_vision_model
    from eclip.training.trainer import EclipTrainer, EclipTrainingArguments

    data_dir = os.path.abspath(args.data or resolve_data_dir())
    config = load_config(FASHION_CONFIG)
    vision = default_vision_model()
    processor = build_processor(default_text_model(), args.image_size, vision)
    dataset = load_product_dataset(f"imagefolder:{data_dir}/fashion-products", split="train", limit=args.rows)
    max_length = config["data"]["max_length"]
    collator = PretrainingCollator(processor, seed=0, max_length=max_length)

    def model():
        torch.manual_seed(0)
        return build_model(config["model"], default_text_model(), len(processor.tokenizer), vision)

    work = tempfile.mkdtemp(prefix="eclip-cache-speed-")
    reference = model()
    layer = lock_vision_tower(reference, 0)
    started = time.perf_counter()
    cache = FeatureCache.build(os.path.join(work, "cache"), reference, collator, dataset, batch_size=args.batch_size,
                               passes=1, seed=0, layer=layer, max_length=max_length, show_progress=False)
    build_seconds = time.perf_counter() - started
    images_cached = 2 * cache.num_batches * cache.batch_size
    del reference

    common = dict(report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0, max_steps=args.steps,
                  logging_steps=args.steps, learning_rate=1e-4, lock_image_tower=True,
                  per_device_train_batch_size=args.batch_size, dataloader_num_workers=0)

    def run(kind: str) -> float:
        timer = _timer()
        if kind == "pixels":
            trainer = EclipTrainer(
                model=model(), train_dataset=dataset, data_collator=collator, callbacks=[timer],
                args=EclipTrainingArguments(output_dir=os.path.join(work, kind),
                                            contrastive_batch_schedule=f"0:{args.batch_size}", **common))
        else:
            trainer = EclipTrainer(
                model=model(), train_dataset=cache, callbacks=[timer],
                args=EclipTrainingArguments(output_dir=os.path.join(work, kind), feature_cache_dir=cache.folder,
                                            **common))
        trainer.train()
        rate = (len(timer.marks) - 1) * args.batch_size / (timer.marks[-1] - timer.marks[0])
        print(f"{kind}: {rate:.2f} samples/s", flush=True)
        return rate

    rates = {"pixels": [], "cache": []}
    for _ in range(args.repeats):
        for kind in rates:
            rates[kind].append(run(kind))
    medians = {kind: statistics.median(values) for kind, values in rates.items()}
    report = {
        "command": command("benchmarks.cache_speed", sys.argv[1:] if argv is None else argv),
        "what": "EclipTrainer samples/s, fashion recipe model (DINOv2-S locked + MiniLM-L6 + decoder), "
                "pixels vs feature cache, same batches",
        "settings": {"image_size": args.image_size, "batch_size": args.batch_size, "steps": args.steps,
                     "rows": args.rows, "repeats": args.repeats, "max_length": max_length,
                     "dataloader_num_workers": 0, "torch_threads": torch.get_num_threads()},
        "hardware": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "samples_per_s": rates,
        "median_samples_per_s": medians,
        "speedup": medians["cache"] / medians["pixels"],
        "cache_build": {"seconds": build_seconds, "images": images_cached,
                        "images_per_s": images_cached / build_seconds},
    }
    write_json(args.output, report)
    print(json.dumps({"speedup": report["speedup"], **medians}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
