"""The harder scene benchmark's compositor: shared busy background, overlap and scale change, small named items."""

import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from eclip.training.compositor import compose_hard_scene


def garment(colour, size=(120, 160)) -> Image.Image:
    """A product photo: a coloured shape on a white studio background (so its cutout is the shape)."""
    image = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(image).rectangle((20, 20, size[0] - 20, size[1] - 20), fill=colour)
    return image


@pytest.mark.parametrize("kind", ["crowded", "small"])
def test_hard_scenes_are_seeded_keep_the_product_visible_and_in_its_box(kind):
    product = garment((200, 30, 30))
    others = [garment((30, 30, 200)), garment((30, 160, 30)), garment((90, 90, 90))]
    background = Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8))
    scenes = [compose_hard_scene(product, others, background, random.Random(seed), kind=kind) for seed in range(40)]
    again = compose_hard_scene(product, others, background, random.Random(0), kind=kind)
    assert np.array_equal(np.asarray(again[0]), np.asarray(scenes[0][0])) and again[1:] == scenes[0][1:]
    for scene, box, visible in scenes:
        assert scene.size == (224, 224) and scene.mode == "RGB"
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 224
        assert visible >= 0.6
        # The product's red shows inside its box, in about the share the compositor says is visible.
        pixels = np.asarray(scene, dtype=int)[y0:y1, x0:x1]
        red = ((pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)).mean()
        assert red > 0.2
    widths = [box[2] - box[0] for _, box, _ in scenes]
    if kind == "small":
        assert max(widths) <= 0.28 * 224 + 1  # the named item is the small one
    else:
        assert min(v for _, _, v in scenes) < 1.0  # some scenes do cover part of the product


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        compose_hard_scene(garment((1, 2, 3)), [], garment((4, 5, 6)), random.Random(0), kind="tiny")
