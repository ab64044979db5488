# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Scene compositor: the synthesised second view of the intra-product objective (DESIGN.md, "Pretraining
objectives", 4) and the multi-product augmentation of objectives 2 and 3.

A product photo is pasted at a random scale and position onto a square canvas together with 1 to 3 other
products (distractors). The product is pasted last, so it is never covered: the only thing the scene shares with
another photo of the product is the product itself, which is what the instance queries must learn to find.
"""

import random
from collections.abc import Sequence

import numpy as np
from PIL import Image

DEFAULT_BACKGROUND = (245, 245, 245)
# The scene sizes, for training views and the evaluation's scenes alike: a square canvas of SCENE_CANVAS pixels, each
# photo's longer side a uniform SCENE_SCALE_RANGE fraction of it, and SCENE_DISTRACTORS (inclusive) other products.
SCENE_CANVAS = 224
SCENE_SCALE_RANGE = (0.35, 0.7)
SCENE_DISTRACTORS = (1, 3)
# A photo's border is "white-ish" (a studio background that may blend into the scene) when every channel of its
# median border colour is at least this light; pixels within the tolerance of that colour and connected to the
# border become transparent.
_LIGHT_BORDER = 200
_BACKGROUND_TOLERANCE = 5

Box = tuple[int, int, int, int]


def random_soft_colour(rng: random.Random) -> tuple[int, int, int]:
    """A light, low-saturation RGB colour (each channel in [200, 255]), like a studio or room background."""
    base = rng.randint(215, 245)
    return tuple(min(255, max(200, base + rng.randint(-15, 15))) for _ in range(3))


def background_mask(image: Image.Image) -> Image.Image:
    """
    Opacity mask ("L", same size as `image`) that is 0 on a white-ish studio background and 255 elsewhere.

    Background = pixels close to the median border colour that are connected to the border, so a white garment
    inside the silhouette stays opaque. A photo whose border is not light (a busy or dark background) gets a fully
    opaque mask and is pasted as a rectangle.
    """
    from scipy import ndimage  # scipy ships with scikit-learn (a dependency); imported lazily to keep import light

    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    colour = np.median(border, axis=0)
    if (colour < _LIGHT_BORDER).any():
        return Image.new("L", image.size, 255)
    near = (np.abs(rgb - colour).max(axis=-1) <= _BACKGROUND_TOLERANCE)
    labels, _ = ndimage.label(near)
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge_labels = edge_labels[edge_labels > 0]
    transparent = np.isin(labels, edge_labels)
    return Image.fromarray(np.where(transparent, 0, 255).astype(np.uint8), mode="L")


def cutout(image: Image.Image) -> Image.Image:
    """
    The photo as RGBA with [`background_mask`] as alpha: compute it once per photo when the photo is pasted into
    several scenes (the collator does), instead of once per paste.
    """
    rgba = image.convert("RGBA")
    rgba.putalpha(background_mask(image))
    return rgba


def _scaled(image: Image.Image, scale: float, canvas_size: int) -> Image.Image:
    """Resize so the longer side is `scale * canvas_size` (aspect ratio kept, at least 1 pixel per side)."""
    longest = max(1, min(canvas_size, round(scale * canvas_size)))
    ratio = longest / max(image.width, image.height)
    size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
    image = image if image.mode in ("RGB", "RGBA") else image.convert("RGB")
    return image.resize(size, Image.Resampling.BICUBIC)


def _paste(canvas: Image.Image, image: Image.Image, rng: random.Random, blend_white: bool) -> Box:
    x0 = rng.randint(0, canvas.width - image.width)
    y0 = rng.randint(0, canvas.height - image.height)
    if image.mode == "RGBA":
        canvas.paste(image.convert("RGB"), (x0, y0), image.getchannel("A"))
    else:
        canvas.paste(image, (x0, y0), background_mask(image) if blend_white else None)
    return x0, y0, x0 + image.width, y0 + image.height


def compose_scene(
    product: Image.Image,
    distractors: Sequence[Image.Image],
    rng: random.Random,
    canvas_size: int = SCENE_CANVAS,
    scale_range: tuple[float, float] = SCENE_SCALE_RANGE,
    background: tuple[int, int, int] | str | None = None,
    blend_white: bool = True,
) -> tuple[Image.Image, Box]:
    """
    Paste `product` and `distractors` at random scales and positions into a square scene.

    Args:
        product: the photo of the product the text describes.
        distractors: photos of other products, pasted first (all of them; the caller picks how many).
        rng: source of every random choice, so one seed gives one scene.
        canvas_size: side of the square RGB canvas, in pixels.
        scale_range: each photo's longer side is `uniform(*scale_range) * canvas_size`.
        background: an RGB colour, `"random"` for a random soft colour from `rng`, or `None` for plain light grey.
        blend_white: paste RGB photos through [`background_mask`], so white studio backgrounds blend into the scene
            instead of showing as rectangles. RGBA photos (e.g. from [`cutout`]) always paste through their alpha.
            The product's own (opaque) pixels are copied unchanged either way.

    Returns:
        `(scene, box)`: the `(canvas_size, canvas_size)` RGB scene and the product's box `(x0, y0, x1, y1)` in pixels
        (exclusive end, inside the canvas). The product is pasted last, so nothing covers it.
    """
    low, high = scale_range
    if not 0 < low <= high <= 1:
        raise ValueError(f"scale_range must satisfy 0 < low <= high <= 1, got {scale_range}.")
    if background is None:
        colour = DEFAULT_BACKGROUND
    elif isinstance(background, str):
        if background != "random":
            raise ValueError(f"background must be an RGB tuple, 'random' or None, got {background!r}.")
        colour = random_soft_colour(rng)
    else:
        colour = tuple(int(c) for c in background)
    canvas = Image.new("RGB", (canvas_size, canvas_size), colour)
    for distractor in distractors:
        _paste(canvas, _scaled(distractor, rng.uniform(low, high), canvas_size), rng, blend_white)
    box = _paste(canvas, _scaled(product, rng.uniform(low, high), canvas_size), rng, blend_white)
    return canvas, box


class SceneCompositor:
    """
    Picks 1 to 3 distractors from a pool and composes a scene (see [`compose_scene`]); the collator's view maker.

    Args:
        num_distractors: inclusive range of distractors per scene; fewer are used when the pool is smaller
            (a pool of zero gives the product alone at a new scale and position).
        scale_range, canvas_size, background, blend_white: as in [`compose_scene`].

    Example: `scene, box = SceneCompositor()(product, [other_a, other_b, other_c], random.Random(0))`.
    """

    def __init__(
        self,
        num_distractors: tuple[int, int] = SCENE_DISTRACTORS,
        scale_range: tuple[float, float] = SCENE_SCALE_RANGE,
        canvas_size: int = SCENE_CANVAS,
        background: tuple[int, int, int] | str | None = None,
        blend_white: bool = True,
    ):
        if not 0 <= num_distractors[0] <= num_distractors[1]:
            raise ValueError(
                f"num_distractors must be a range (low, high) with 0 <= low <= high, got {num_distractors}."
            )
        self.num_distractors = tuple(num_distractors)
        self.scale_range = tuple(scale_range)
        self.canvas_size = canvas_size
        self.background = background
        self.blend_white = blend_white

    @property
    def max_products(self) -> int:
        """The most products one scene shows: the product and the most distractors."""
        return 1 + self.num_distractors[1]

    def check_instance_queries(self, config) -> None:
        """
        One-to-one query matching gives each product a scene shows its own instance query, so an ECLIP config that
        uses it needs `num_instance_queries >= max_products`: a `ValueError` naming the field otherwise.
        """
        if (config.use_instance_decoder and config.instance_matching == "one_to_one"
                and config.num_instance_queries < self.max_products):
            raise ValueError(
                f"instance_matching='one_to_one' gives each product of a scene its own query, and a scene shows up "
                f"to {self.max_products} products: num_instance_queries must be at least {self.max_products}, got "
                f"{config.num_instance_queries}."
            )

    def __call__(
        self, product: Image.Image, pool: Sequence[Image.Image], rng: random.Random
    ) -> tuple[Image.Image, Box]:
        scene, box, _ = self.compose(product, pool, rng)
        return scene, box

    def compose(
        self, product: Image.Image, pool: Sequence[Image.Image], rng: random.Random
    ) -> tuple[Image.Image, Box, list[int]]:
        """As `__call__`, and also the positions in `pool` of the distractors that were pasted (which products the
        scene shows, for scene-aware contrastive targets). Same random draws as `__call__`."""
        count = min(rng.randint(*self.num_distractors), len(pool))
        chosen = rng.sample(range(len(pool)), count)  # the positions rng.sample(pool, count) would pick
        scene, box = compose_scene(
            product, [pool[i] for i in chosen], rng, self.canvas_size, self.scale_range, self.background,
            self.blend_white,
        )
        return scene, box, chosen

    def prepare(self, image: Image.Image) -> Image.Image:
        """The form in which to pass a photo that goes into several scenes: its [`cutout`] when blending white."""
        return cutout(image) if self.blend_white else image

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_distractors={self.num_distractors}, scale_range={self.scale_range}, "
            f"canvas_size={self.canvas_size}, background={self.background!r}, blend_white={self.blend_white})"
        )


HARD_SCENE_KINDS = ("crowded", "small")


def _busy_background(photo: Image.Image, canvas_size: int, rng: random.Random) -> Image.Image:
    """A shared, busy background: another photo blown up past the canvas, randomly cropped, blurred and softened."""
    from PIL import ImageFilter

    side = round(canvas_size * rng.uniform(1.5, 2.5))
    photo = photo.convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
    x0, y0 = rng.randint(0, side - canvas_size), rng.randint(0, side - canvas_size)
    crop = photo.crop((x0, y0, x0 + canvas_size, y0 + canvas_size)).filter(ImageFilter.GaussianBlur(2))
    return Image.blend(crop, Image.new("RGB", crop.size, random_soft_colour(rng)), 0.35)


def compose_hard_scene(
    product: Image.Image,
    distractors: Sequence[Image.Image],
    background: Image.Image,
    rng: random.Random,
    kind: str = "crowded",
    canvas_size: int = 224,
    min_visible: float = 0.6,
) -> tuple[Image.Image, Box, float]:
    """
    A harder scene than [`compose_scene`]: every product cut out onto one shared busy background (from the photo
    `background`), and

    - `"crowded"`: products of different scales (0.25-0.75 of the canvas) overlapping the named product, pasted in
      random order, so distractors may cover part of it (at least `min_visible` of it stays visible);
    - `"small"`: the named product small (0.15-0.28 of the canvas) among larger distractors (0.45-0.7), the title
      naming a minor item of the picture.

    Returns `(scene, box, visible)`: the RGB scene, the product's box and the visible fraction of its pixels.
    """
    if kind not in HARD_SCENE_KINDS:
        raise ValueError(f"kind must be one of {HARD_SCENE_KINDS}, got {kind!r}.")
    canvas = _busy_background(background, canvas_size, rng)
    product_scale = rng.uniform(0.15, 0.28) if kind == "small" else rng.uniform(0.3, 0.6)
    low, high = (0.45, 0.7) if kind == "small" else (0.25, 0.75)
    item = _scaled(cutout(product), product_scale, canvas_size)
    x0 = rng.randint(0, canvas_size - item.width)
    y0 = rng.randint(0, canvas_size - item.height)
    box = (x0, y0, x0 + item.width, y0 + item.height)
    alpha = np.asarray(item.getchannel("A")) > 0
    layers = [(item, (x0, y0), True)]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    for distractor in distractors:
        other = _scaled(cutout(distractor), rng.uniform(low, high), canvas_size)
        if kind == "crowded":  # centred near the product, so that the two overlap
            px = cx + rng.uniform(-0.6, 0.6) * (item.width + other.width) / 2 - other.width / 2
            py = cy + rng.uniform(-0.6, 0.6) * (item.height + other.height) / 2 - other.height / 2
        else:
            px, py = rng.uniform(0, canvas_size - other.width), rng.uniform(0, canvas_size - other.height)
        px = int(min(max(px, 0), canvas_size - other.width))
        py = int(min(max(py, 0), canvas_size - other.height))
        layers.insert(rng.randint(0, len(layers)) if kind == "crowded" else 0, (other, (px, py), False))
    # A distractor pasted over the product may hide at most 1 - min_visible of it; one that hides more goes below.
    covered = np.zeros((canvas_size, canvas_size), dtype=bool)
    above = layers[layers.index(next(layer for layer in layers if layer[2])) + 1:]
    for layer in above:
        image, (px, py), _ = layer
        mask = np.zeros_like(covered)
        mask[py : py + image.height, px : px + image.width] = np.asarray(image.getchannel("A")) > 0
        trial = covered | mask
        hidden = trial[y0 : y0 + item.height, x0 : x0 + item.width][alpha].mean() if alpha.any() else 0.0
        if 1.0 - hidden >= min_visible:
            covered = trial
        else:
            layers.remove(layer)
            layers.insert(0, layer)
    for image, position, _ in layers:
        canvas.paste(image.convert("RGB"), position, image.getchannel("A"))
    hidden = covered[y0 : y0 + item.height, x0 : x0 + item.width][alpha].mean() if alpha.any() else 0.0
    return canvas, box, float(1.0 - hidden)


__all__ = [
    "SceneCompositor",
    "compose_scene",
    "compose_hard_scene",
    "HARD_SCENE_KINDS",
    "background_mask",
    "cutout",
    "random_soft_colour",
    "DEFAULT_BACKGROUND",
    "SCENE_CANVAS",
    "SCENE_DISTRACTORS",
    "SCENE_SCALE_RANGE",
]
