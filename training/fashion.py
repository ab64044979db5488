# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
The fashion-products catalogue (`$ECLIP_DATA_DIR/fashion-products`: an `imagefolder` of product photos with a
`metadata.csv` that has its own `train` / `validation` / `test` split column): its columns, its stand-in for
restricted products, and its two readers, rows as dicts (the evaluation suite) and a `DatasetDict` (fine-tuning).
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

FASHION_DIR = "fashion-products"
METADATA_FILE = "metadata.csv"
SPLITS = ("train", "validation", "test")
LABEL_FIELD = "articleType"
TITLE_FIELD = "productDisplayName"
RESTRICTED_FIELD = "subCategory"
RESTRICTED_VALUE = "Innerwear"  # the stand-in for adult products (DESIGN.md)

# How a shopper names each articleType, written before any model was trained on text views and kept fixed (issue
# #34): the words people type ("sneakers", "purse", "denim pants"), not the catalogue's tokens. Nothing trains on
# these phrases; the `zero_shot_shopper` task classifies with them instead of the catalogue labels.
SHOPPER_PHRASES = {
    "Accessory Gift Set": "gift box of accessories", "Backpacks": "school bag", "Belts": "leather belt",
    "Boxers": "boxer shorts", "Bra": "brassiere", "Bracelet": "bangle", "Briefs": "men's underwear",
    "Capris": "cropped pants", "Caps": "baseball hat", "Casual Shoes": "sneakers", "Churidar": "fitted ethnic pants",
    "Clutches": "evening bag", "Cufflinks": "shirt cuff studs", "Deodorant": "body spray", "Dresses": "frock",
    "Duffel Bag": "gym bag", "Dupatta": "long stole", "Flats": "ballet flats", "Flip Flops": "beach slippers",
    "Footballs": "soccer ball", "Formal Shoes": "dress shoes", "Fragrance Gift Set": "perfume gift box",
    "Free Gifts": "freebie", "Gloves": "mittens", "Handbags": "purse", "Hat": "sun hat", "Headband": "hair band",
    "Heels": "stilettos", "Innerwear Vests": "undershirt", "Jackets": "coat", "Jeans": "denim pants",
    "Kurta Sets": "ethnic suit set", "Kurtas": "ethnic tunic", "Kurtis": "short ethnic top",
    "Laptop Bag": "computer bag", "Leggings": "yoga pants", "Lounge Pants": "pajama pants",
    "Lounge Shorts": "pajama shorts", "Messenger Bag": "shoulder bag", "Mobile Pouch": "phone case",
    "Mufflers": "winter scarf", "Necklace and Chains": "pendant necklace",
    "Perfume and Body Mist": "fragrance spray", "Rucksacks": "hiking backpack", "Sandals": "strappy sandals",
    "Sarees": "sari", "Scarves": "neck scarf", "Shirts": "button-up shirt", "Shoe Accessories": "shoe care kit",
    "Shorts": "bermudas", "Shrug": "bolero", "Skirts": "miniskirt", "Socks": "ankle socks",
    "Sports Sandals": "hiking sandals", "Sports Shoes": "running trainers", "Stockings": "pantyhose",
    "Stoles": "wrap", "Sunglasses": "shades", "Sweaters": "jumper", "Sweatshirts": "hoodie", "Ties": "necktie",
    "Tights": "nylons", "Tops": "blouse", "Track Pants": "joggers", "Tracksuits": "jogging suit",
    "Travel Accessory": "travel kit", "Trousers": "pants", "Trunk": "boxer briefs", "Tshirts": "tee shirt",
    "Tunics": "long top", "Umbrellas": "parasol", "Waist Pouch": "fanny pack", "Waistcoat": "vest",
    "Wallets": "billfold", "Watches": "wristwatch",
}


def read_fashion_metadata(data_dir: str) -> list[dict]:
    """Rows of `fashion-products/metadata.csv` as dicts (plus `path`, the image file), in file order."""
    root = os.path.join(data_dir, FASHION_DIR)
    metadata = os.path.join(root, METADATA_FILE)
    if not os.path.isfile(metadata):
        raise ValueError(f"Missing data file {metadata} (the fashion-products imagefolder with its metadata.csv).")
    with open(metadata, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    required = {"file_name", "split", "id", LABEL_FIELD, TITLE_FIELD, RESTRICTED_FIELD}
    missing = required - set(rows[0] if rows else ())
    if missing:
        raise ValueError(f"{metadata} lacks column(s) {sorted(missing)}.")
    for row in rows:
        row["path"] = os.path.join(root, row["file_name"])
    return rows


def stratified_subset(items: Sequence, n: int | None, seed: int, key: Callable) -> list:
    """
    A deterministic subset of `n` items, stratified by `key`: every group keeps at least one item (largest groups
    first when `n` is below the number of groups) and the rest is shared in proportion to group sizes (largest
    remainder). Within a group the choice is a seeded permutation; the result keeps the input order.
    """
    if n is None or n >= len(items):
        return list(items)
    if n < 1:
        raise ValueError(f"limit must be a positive integer, got {n}.")
    groups: dict = defaultdict(list)
    for index, item in enumerate(items):
        groups[key(item)].append(index)
    rng = np.random.default_rng(seed)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), str(kv[0])))
    quota = {}
    if n <= len(ordered):
        quota = {name: (1 if rank < n else 0) for rank, (name, _) in enumerate(ordered)}
    else:
        rest = n - len(ordered)
        spare = {name: len(idx) - 1 for name, idx in ordered}
        total_spare = sum(spare.values())
        shares = {name: rest * s / total_spare for name, s in spare.items()}
        quota = {name: 1 + int(math.floor(share)) for name, share in shares.items()}
        left = n - sum(quota.values())
        by_remainder = sorted(ordered, key=lambda kv: (-(shares[kv[0]] - math.floor(shares[kv[0]])), str(kv[0])))
        for name, _ in by_remainder[:left]:
            quota[name] += 1
    chosen = []
    for name, indices in ordered:
        permuted = rng.permutation(len(indices))
        chosen.extend(indices[i] for i in permuted[: quota[name]])
    return [items[i] for i in sorted(chosen)]


def load_split_rows(data_dir: str, splits: Sequence[str], limit: int | None, seed: int) -> dict[str, list[dict]]:
    """Rows of each requested split (limited deterministically, stratified by subCategory); errors before any work."""
    rows = read_fashion_metadata(data_dir)
    metadata = os.path.join(data_dir, FASHION_DIR, METADATA_FILE)
    by_split = defaultdict(list)
    for row in rows:
        by_split[row["split"]].append(row)
    for split in splits:  # every split is checked before any image is looked at
        if not by_split.get(split):
            raise ValueError(f"Split {split!r} has no rows in {metadata} (splits present: {sorted(by_split)}).")
    out = {}
    for split in splits:
        split_rows = stratified_subset(by_split[split], limit, seed, key=lambda r: r[RESTRICTED_FIELD])
        missing = [r["path"] for r in split_rows if not os.path.isfile(r["path"])]
        if missing:
            raise ValueError(f"{len(missing)} image file(s) of split {split!r} are missing, e.g. {missing[0]}.")
        out[split] = split_rows
    return out


def load_products(data_dir: str | None, modality: str, limit: int | None = None, seed: int = 0):
    """`fashion-products` as a `DatasetDict` by split; with images (an `image` column) only when `modality` needs
    them. `limit` keeps at most that many rows of each split, drawn with a fixed seed."""
    import datasets

    from eclip.training.data import resolve_source, split_dataset

    source = resolve_source(data_dir, FASHION_DIR)
    if modality == "text":
        table = datasets.load_dataset("csv", data_files=os.path.join(source, METADATA_FILE), split="train")
    else:
        table = datasets.load_dataset("imagefolder", data_dir=source, split="train")
    return split_dataset(table, limit, seed, SPLITS)


__all__ = [
    "FASHION_DIR",
    "LABEL_FIELD",
    "METADATA_FILE",
    "RESTRICTED_FIELD",
    "RESTRICTED_VALUE",
    "SHOPPER_PHRASES",
    "SPLITS",
    "TITLE_FIELD",
    "load_products",
    "load_split_rows",
    "read_fashion_metadata",
    "stratified_subset",
]
