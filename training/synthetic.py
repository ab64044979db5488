# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
The embedded default pretraining dataset: procedurally drawn product photos with catalogue-style fields.

Nothing is downloaded. Every attribute a title names except brand and gender is visible in the photo: the article
has its own silhouette, the colour fills it and the pattern is drawn on it, so a model can learn the text-image
correspondence (and the brand/gender words are the part it cannot learn from pixels, as in real catalogues).
Each product gets several photos that differ by position, scale, rotation, background shade and pattern phase, so
rows sharing a `product_id` exercise the catalog-aware targets and the "second real photo" view.
"""

import math
import random
import zlib

import datasets
from PIL import Image, ImageDraw, ImageFilter

BRANDS = [
    "Acme", "Northwind", "Zephyr", "Lumen", "Cobalt", "Orchid",
    "Granite", "Vireo", "Kestrel", "Saffron", "Tundra", "Marlow",
]  # fmt: skip
COLOURS = {
    "Black": (25, 25, 28),
    "White": (250, 250, 250),
    "Grey": (128, 128, 132),
    "Red": (200, 30, 35),
    "Orange": (240, 130, 20),
    "Yellow": (240, 210, 30),
    "Green": (40, 150, 60),
    "Blue": (35, 80, 200),
    "Purple": (120, 50, 160),
    "Brown": (120, 75, 40),
}
PATTERNS = ["Solid", "Striped", "Polka Dots", "Checked"]


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float = 0.0, end: float = 360.0, n: int = 24):
    """Points of an elliptical arc (degrees, y down) as a polygon outline."""
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in (start + (end - start) * i / n for i in range(n + 1))
    ]


def _handle(cx: float, cy: float, r_out: float, r_in: float):
    return _ellipse(cx, cy, r_out, r_out, 180, 360) + _ellipse(cx, cy, r_in, r_in, 360, 180)


# Article type -> (category path, genders, silhouette as polygons in unit coordinates, y down).
ARTICLES = {
    "Tshirts": (
        ["Apparel", "Topwear", "Tshirts"],
        ["Men", "Women"],
        [[(0.40, 0.15), (0.50, 0.22), (0.60, 0.15), (0.78, 0.20), (0.92, 0.38), (0.80, 0.45), (0.72, 0.38),
          (0.72, 0.86), (0.28, 0.86), (0.28, 0.38), (0.20, 0.45), (0.08, 0.38), (0.22, 0.20)]],
    ),
    "Trousers": (
        ["Apparel", "Bottomwear", "Trousers"],
        ["Men", "Women"],
        [[(0.30, 0.08), (0.70, 0.08), (0.75, 0.92), (0.56, 0.92), (0.50, 0.35), (0.44, 0.92), (0.25, 0.92)]],
    ),
    "Dresses": (
        ["Apparel", "Dress", "Dresses"],
        ["Women"],
        [[(0.37, 0.06), (0.42, 0.06), (0.45, 0.20), (0.55, 0.20), (0.58, 0.06), (0.63, 0.06), (0.65, 0.30),
          (0.59, 0.42), (0.84, 0.92), (0.16, 0.92), (0.41, 0.42), (0.35, 0.30)]],
    ),
    "Casual Shoes": (
        ["Footwear", "Shoes", "Casual Shoes"],
        ["Men", "Women"],
        [[(0.08, 0.42), (0.10, 0.74), (0.92, 0.74), (0.93, 0.64), (0.84, 0.57), (0.56, 0.44), (0.36, 0.32),
          (0.26, 0.46), (0.14, 0.40)]],
    ),
    "Handbags": (
        ["Accessories", "Bags", "Handbags"],
        ["Women"],
        [[(0.18, 0.42), (0.82, 0.42), (0.88, 0.88), (0.12, 0.88)], _handle(0.5, 0.44, 0.22, 0.15)],
    ),
    "Watches": (
        ["Accessories", "Watches", "Watches"],
        ["Men", "Women", "Unisex"],
        [[(0.41, 0.04), (0.59, 0.04), (0.59, 0.96), (0.41, 0.96)], _ellipse(0.5, 0.5, 0.22, 0.22)],
    ),
    "Caps": (
        ["Accessories", "Headwear", "Caps"],
        ["Men", "Women", "Unisex"],
        [_ellipse(0.44, 0.62, 0.32, 0.34, 180, 360), [(0.12, 0.62), (0.70, 0.56), (0.95, 0.64), (0.70, 0.70),
                                                       (0.12, 0.68)]],
    ),
    "Sunglasses": (
        ["Accessories", "Eyewear", "Sunglasses"],
        ["Men", "Women", "Unisex"],
        [_ellipse(0.28, 0.52, 0.18, 0.14), _ellipse(0.72, 0.52, 0.18, 0.14),
         [(0.40, 0.44), (0.60, 0.44), (0.60, 0.49), (0.40, 0.49)],
         [(0.06, 0.44), (0.11, 0.44), (0.06, 0.62), (0.02, 0.62)], [(0.89, 0.44), (0.94, 0.44), (0.98, 0.62),
                                                                      (0.94, 0.62)]],
    ),
}  # fmt: skip


def product_split(product_id: int) -> str:
    """Fixed ~80/10/10 train/validation/test assignment by a hash of the id (stable across runs and processes)."""
    bucket = zlib.crc32(str(product_id).encode()) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def _product(seed: int, product_id: int) -> dict:
    rng = random.Random(f"eclip-synthetic:{seed}:{product_id}")
    article = rng.choice(list(ARTICLES))
    category, genders, _ = ARTICLES[article]
    colour = rng.choice(list(COLOURS))
    fields = {
        "product_id": product_id,
        "brand": rng.choice(BRANDS),
        "category": list(category),
        "colour": colour,
        "gender": rng.choice(genders),
        "pattern": rng.choice(PATTERNS),
        "article": article,
        # Drawing parameters shared by all photos of the product (one real object).
        "rgb": tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in COLOURS[colour]),
        "period": rng.uniform(0.10, 0.15),
    }
    fields["title"] = f"{fields['brand']} {fields['gender']} {fields['pattern']} {colour} {article}"
    return fields


def _draw_pattern(draw: ImageDraw.ImageDraw, pattern: str, size: int, period: float, colour, rng: random.Random):
    step = max(3, round(period * size))
    phase = rng.randrange(step)
    if pattern in ("Striped", "Checked"):
        width = max(1, int(step * (0.35 if pattern == "Striped" else 0.2)))
        for y in range(phase - step, size, step):
            draw.rectangle([0, y, size, y + width - 1], fill=colour)
        if pattern == "Checked":
            for x in range(phase - step, size, step):
                draw.rectangle([x, 0, x + width - 1, size], fill=colour)
    elif pattern == "Polka Dots":
        radius = max(1, int(step * 0.22))
        for row, y in enumerate(range(phase - step, size + step, step)):
            shift = step // 2 if row % 2 else 0
            for x in range(phase - step + shift, size + step, step):
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)


def draw_product(product: dict, image_size: int, rng: random.Random) -> Image.Image:
    """One photo of `product` (from `_product`): its silhouette, colour and pattern at a random pose on light grey."""
    size = image_size
    grey = rng.randint(236, 252)
    background = (grey, grey, min(255, grey + rng.randint(-3, 3)))
    scale = rng.uniform(0.80, 1.0)
    angle = math.radians(rng.uniform(-10, 10))
    dx, dy = rng.uniform(-0.06, 0.06), rng.uniform(-0.06, 0.06)
    cos, sin = math.cos(angle), math.sin(angle)

    def place(point):
        x, y = point[0] - 0.5, point[1] - 0.5
        return (
            (0.5 + dx + scale * (cos * x - sin * y)) * size,
            (0.5 + dy + scale * (sin * x + cos * y)) * size,
        )

    mask = Image.new("L", (size, size), 0)
    mask_draw = ImageDraw.Draw(mask)
    for polygon in ARTICLES[product["article"]][2]:
        mask_draw.polygon([place(p) for p in polygon], fill=255)

    rgb = product["rgb"]
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    contrast = (30, 30, 30) if luminance > 150 else (245, 245, 245)
    fill = Image.new("RGB", (size, size), rgb)
    _draw_pattern(ImageDraw.Draw(fill), product["pattern"], size, product["period"], contrast, rng)

    photo = Image.new("RGB", (size, size), background)
    if min(rgb) > 200:
        # A near-white article would vanish into the light background: a thin grey edge shows its silhouette, as
        # shading does in studio photos. Other colours get none, so thin articles stay their own colour.
        photo.paste((160, 160, 160), (0, 0), mask.filter(ImageFilter.MaxFilter(3)))
    photo.paste(fill, (0, 0), mask)
    return photo


def make_synthetic_products(
    num_products: int = 1200, photos_per_product: int = 2, image_size: int = 96, seed: int = 0
) -> datasets.Dataset:
    """
    Build the synthetic product catalogue: `num_products * photos_per_product` rows, photos of a product adjacent.

    Columns: `image` (`datasets.Image`, PNG, `image_size` x `image_size` RGB), `product_id` (int, shared by the
    photos of one product), `title` ("Acme Men Striped Red Tshirts": brand, gender, pattern, colour, article),
    `brand`, `category` (path, e.g. `["Apparel", "Topwear", "Tshirts"]`), `colour`, `gender`, `pattern` and `split`
    (`"train"` / `"validation"` / `"test"`, ~80/10/10 by a hash of `product_id`). Same arguments, same dataset.
    """
    if num_products < 1 or photos_per_product < 1 or image_size < 16:
        raise ValueError(
            "make_synthetic_products needs num_products >= 1, photos_per_product >= 1 and image_size >= 16, got "
            f"{num_products}, {photos_per_product}, {image_size}."
        )
    columns = {name: [] for name in
               ("image", "product_id", "title", "brand", "category", "colour", "gender", "pattern", "split")}
    for product_id in range(num_products):
        product = _product(seed, product_id)
        for photo in range(photos_per_product):
            rng = random.Random(f"eclip-synthetic-photo:{seed}:{product_id}:{photo}")
            columns["image"].append(draw_product(product, image_size, rng))
            for name in ("product_id", "title", "brand", "category", "colour", "gender", "pattern"):
                columns[name].append(product[name])
            columns["split"].append(product_split(product_id))
    features = datasets.Features({
        "image": datasets.Image(),
        "product_id": datasets.Value("int64"),
        "title": datasets.Value("string"),
        "brand": datasets.Value("string"),
        "category": datasets.List(datasets.Value("string")),
        "colour": datasets.Value("string"),
        "gender": datasets.Value("string"),
        "pattern": datasets.Value("string"),
        "split": datasets.Value("string"),
    })  # fmt: skip
    return datasets.Dataset.from_dict(columns, features=features)


__all__ = ["make_synthetic_products", "draw_product", "product_split", "ARTICLES", "BRANDS", "COLOURS", "PATTERNS"]
