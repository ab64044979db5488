"""What the search tests share: a seeded tiny ECLIP saved as a user would, and a small index of real fashion photos
built by the real `eclip-index` (in this process: no second interpreter to start)."""

import os

import torch

from conftest import DATA_DIR, tiny_config, tiny_processor

PHOTOS = 24  # the first 24 rows of fashion-products (three shards of 8)
SHARD_SIZE = 8


def fashion_dir(data_dir: str = DATA_DIR) -> str:
    return os.path.join(data_dir, "fashion-products")


def save_tiny_model(folder, seed: int = 0, **overrides) -> str:
    from modeling_eclip import EclipModel

    torch.manual_seed(seed)
    EclipModel(tiny_config(**overrides)).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return str(folder)


def small_catalogue(folder, rows: int = PHOTOS) -> str:
    """An imagefolder of the first `rows` fashion photos and their metadata rows, as the real catalogue has them:
    the same products without scanning the 9,583 files (the tests that index it several times)."""
    import csv
    import shutil

    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    with open(os.path.join(fashion_dir(), "metadata.csv"), newline="") as f:
        reader = csv.DictReader(f)
        fields, kept = reader.fieldnames, [row for _, row in zip(range(rows), reader)]
    for row in kept:
        shutil.copy(os.path.join(fashion_dir(), row["file_name"]), os.path.join(folder, row["file_name"]))
    with open(os.path.join(folder, "metadata.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    return str(folder)


def index_argv(model: str, out: str, *extra: str, catalogue: str | None = None) -> list[str]:
    return [model, catalogue or fashion_dir(), str(out), "--limit", str(PHOTOS), "--shard-size", str(SHARD_SIZE),
            "--batch-size", "5", "--workers", "0", *extra]


def build_index(model: str, out, *extra: str, catalogue: str | None = None, on_shard=None) -> str:
    from eclip.training.search.index import main

    assert main(index_argv(model, out, *extra, catalogue=catalogue), on_shard=on_shard) == 0
    return str(out)


def one_thread():
    """Tiny models on one thread (see conftest.one_thread); returns the previous count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return threads
