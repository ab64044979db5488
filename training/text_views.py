# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Several texts for one product (e-CLIP's raw-product texts, Shin et al. 2022): instead of one fixed catalogue string
per photo, each training step reads one of a few *views* of the product's fields, so the text tower learns that
"Tshirts", "Blue Tshirts for Men" and "Nike Men Blue Round Neck T-shirt | Apparel > Topwear > Tshirts | ..." all
name the same photo. One fixed string teaches it only the last form, and a zero-shot prompt or a shopper's query is
never in that form.

Views (`TEXT_VIEWS`), each built from the product-text fields of `EclipProcessor.build_product_text`:

- `full`: the processor's template, every field (the single text of the default recipe);
- `title`: `"{brand} {title}"`;
- `category`: the category path, `"Apparel > Topwear > Tshirts"`;
- `leaf`: the category path's last element, `"Tshirts"`;
- `attributes`: a short phrase of the leaf and the attributes, `"Blue Tshirts for Men, Casual"`;
- `shuffled`: the template's segments in a random order, each segment but one dropped with probability 1/2.

A view the product's fields cannot fill (no category, no title) falls back to `full`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

# The processor's own field cleaning (NaN and None are missing, control characters and runs of whitespace collapse,
# a list is a `" > "` path), so a view reads a field exactly as the `full` text does. `_field_text` is private to the
# Hub-facing processor file, which must not grow a public name for training's sake; imported here on purpose.
from modeling_eclip.processing_eclip import CATEGORY_SEPARATOR
from modeling_eclip.processing_eclip import _field_text as _text

TEXT_VIEWS = ("full", "title", "category", "leaf", "attributes", "shuffled")


def _leaf(fields: Mapping) -> str:
    category = _text(fields.get("category"))
    return category.split(CATEGORY_SEPARATOR)[-1] if category else ""


def check_text_views(views: Sequence[str]) -> tuple[str, ...]:
    """`views` as a tuple, each checked against `TEXT_VIEWS` (a clear error names the bad one)."""
    if isinstance(views, str):
        views = [v.strip() for v in views.split(",")]
    views = tuple(views)
    if not views:
        raise ValueError(f"text_views needs at least one view of {', '.join(TEXT_VIEWS)}.")
    unknown = [v for v in views if v not in TEXT_VIEWS]
    if unknown:
        raise ValueError(f"Unknown text view {unknown[0]!r}; valid views: {', '.join(TEXT_VIEWS)}.")
    return views


def product_text_view(fields: Mapping, view: str, build_full, rng: random.Random) -> str:
    """
    One view of a product's fields. `build_full(fields)` builds the `full` text (the processor's template, whose
    `" | "`-separated segments `shuffled` reorders and drops); `rng` draws the `shuffled` order and drops.
    """
    if view == "title":
        brand, title = _text(fields.get("brand")), _text(fields.get("title"))
        if brand and title.lower().startswith(brand.lower()):  # catalogue titles often start with the brand
            brand = ""
        text = " ".join(part for part in (brand, title) if part)
    elif view == "category":
        text = _text(fields.get("category"))
    elif view == "leaf":
        text = _leaf(fields)
    elif view == "attributes":
        leaf = _leaf(fields)
        if not leaf:
            return build_full(fields)
        colour, gender = _text(fields.get("colour")), _text(fields.get("gender"))
        text = " ".join(part for part in (colour, leaf) if part) + (f" for {gender}" if gender else "")
        extra = [_text(fields.get(name)) for name in ("usage", "material", "pattern")]
        text += "".join(f", {value}" for value in extra if value)
    elif view == "shuffled":
        segments = build_full(fields).split(" | ")
        keep = rng.randrange(len(segments))
        kept = [s for i, s in enumerate(segments) if i == keep or rng.random() < 0.5]
        rng.shuffle(kept)
        text = " | ".join(kept)
    elif view == "full":
        return build_full(fields)
    else:
        raise ValueError(f"Unknown text view {view!r}; valid views: {', '.join(TEXT_VIEWS)}.")
    return text if text.strip() else build_full(fields)


def draw_text_views(fields: Mapping, views: Sequence[str], count: int, build_full, rng: random.Random) -> list[str]:
    """`count` texts for one product, each a view drawn uniformly from `views` (a view may repeat)."""
    return [product_text_view(fields, rng.choice(views), build_full, rng) for _ in range(count)]


__all__ = ["TEXT_VIEWS", "check_text_views", "draw_text_views", "product_text_view"]
