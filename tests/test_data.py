"""Tests for the pretraining data side: scene compositor, synthetic catalogue, dataset loading and the collator."""

import logging
import os
import random

import datasets
import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from transformers import AutoTokenizer, CLIPImageProcessorPil

from conftest import minilm_dir
from modeling_eclip import EclipProcessor
from eclip.training.compositor import SceneCompositor, background_mask, compose_scene
from eclip.training.data import (
    FASHION_FIELD_MAP,
    PretrainingCollator,
    load_product_dataset,
    product_id_to_int,
    resolve_data_dir,
)
from eclip.training.synthetic import ARTICLES, COLOURS, make_synthetic_products

SIZE = 64  # processor output side: small, so a batch processes in milliseconds


@pytest.fixture(scope="module")
def processor():
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    )
    return EclipProcessor(image_processor, AutoTokenizer.from_pretrained(minilm_dir()))


@pytest.fixture(scope="module")
def fashion_spec(data_dir):
    return f"imagefolder:{os.path.join(data_dir, 'fashion-products')}"


@pytest.fixture(scope="module")
def fashion_rows(fashion_spec):
    return list(load_product_dataset(fashion_spec, split="train", limit=8))


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic_products(num_products=60, photos_per_product=2, image_size=64, seed=0)


def product_photo(data_dir, product_id=10000) -> Image.Image:
    return Image.open(os.path.join(data_dir, "fashion-products", "images", f"{product_id}.jpg")).convert("RGB")


def processed(processor, images) -> torch.Tensor:
    return processor.image_processor(images=images, return_tensors="pt")["pixel_values"]


# ---------------------------------------------------------------------------------------------------- compositor


def test_compose_scene_is_deterministic_with_a_valid_box(data_dir):
    product = product_photo(data_dir, 10001)
    distractors = [product_photo(data_dir, i) for i in (10012, 10040)]
    scene, box = compose_scene(product, distractors, random.Random(3))
    again, again_box = compose_scene(product, distractors, random.Random(3))
    other, other_box = compose_scene(product, distractors, random.Random(4))

    assert scene.size == (224, 224) and scene.mode == "RGB"
    assert box == again_box and np.array_equal(np.asarray(scene), np.asarray(again))
    assert box != other_box or not np.array_equal(np.asarray(scene), np.asarray(other))
    x0, y0, x1, y1 = box
    assert 0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 224
    assert 0.35 * 224 - 1 <= max(x1 - x0, y1 - y0) <= 0.7 * 224 + 1  # the photo's longer side is scaled


@pytest.mark.parametrize("blend_white", [False, True])
def test_product_region_is_the_resized_product_uncovered(data_dir, blend_white):
    product = product_photo(data_dir, 10001)  # denim skirt on a white studio background
    distractors = [product_photo(data_dir, i) for i in (10012, 10040, 10020)]
    for seed in range(5):
        scene, (x0, y0, x1, y1) = compose_scene(
            product, distractors, random.Random(seed), background="random", blend_white=blend_white
        )
        resized = product.resize((x1 - x0, y1 - y0), Image.Resampling.BICUBIC)
        region = np.asarray(scene.crop((x0, y0, x1, y1)))
        expected = np.asarray(resized)
        if not blend_white:
            np.testing.assert_array_equal(region, expected)
            continue
        opaque = np.asarray(background_mask(resized)) == 255
        # The product's own pixels are all there; its white studio background let the scene show through.
        assert 0.2 < opaque.mean() < 0.9
        np.testing.assert_array_equal(region[opaque], expected[opaque])
        assert np.abs(region[~opaque].astype(int) - 255).max() > 5


def test_background_mask_keeps_a_white_garment(data_dir):
    # 10000 is a white skirt (~248) on pure white (255): only the border-connected background turns transparent.
    mask = np.asarray(background_mask(product_photo(data_dir, 10000))) == 255
    assert mask[112, 112] and not mask[0, 0]
    assert 0.15 < mask.mean() < 0.6


def test_scene_compositor_draws_distractors_from_the_pool():
    colours = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
    pool = [Image.new("RGB", (50, 50), c) for c in colours.values()]
    product = Image.new("RGB", (50, 50), (0, 0, 0))
    compositor = SceneCompositor(num_distractors=(3, 3), scale_range=(0.2, 0.2), canvas_size=160)

    scene, box = compositor(product, pool, random.Random(0))
    pixels = np.asarray(scene).reshape(-1, 3)
    for colour in list(colours.values()) + [(0, 0, 0)]:
        assert (pixels == colour).all(axis=1).any(), f"{colour} missing from the scene"
    assert (np.asarray(scene.crop(box)) == 0).all()  # the product is on top

    alone, _ = compositor(product, [], random.Random(0))  # no other product in the batch: the product alone
    assert {tuple(p) for p in np.asarray(alone).reshape(-1, 3)} == {(0, 0, 0), (245, 245, 245)}


# ---------------------------------------------------------------------------------------------------- synthetic


def test_synthetic_schema_and_determinism(synthetic):
    assert synthetic.num_rows == 120
    assert isinstance(synthetic.features["image"], datasets.Image)
    row = synthetic[0]
    assert row["image"].size == (64, 64) and row["image"].mode == "RGB"
    assert set(synthetic.column_names) >= {
        "image", "product_id", "title", "brand", "category", "colour", "gender", "pattern", "split"
    }
    ids = synthetic["product_id"]
    assert all(ids.count(i) == 2 for i in set(ids))
    for row in synthetic.select(range(0, 120, 7)):
        assert row["title"] == f"{row['brand']} {row['gender']} {row['pattern']} {row['colour']} {row['category'][-1]}"
        assert row["category"] == ARTICLES[row["category"][-1]][0]

    again = make_synthetic_products(num_products=60, photos_per_product=2, image_size=64, seed=0)
    other = make_synthetic_products(num_products=60, photos_per_product=2, image_size=64, seed=1)
    as_bytes = lambda ds: [np.asarray(im).tobytes() for im in ds["image"]]  # noqa: E731
    assert as_bytes(again) == as_bytes(synthetic) and again["title"] == synthetic["title"]
    assert other["title"] != synthetic["title"]


def test_synthetic_split_proportions_follow_the_product():
    ds = make_synthetic_products(num_products=1200, photos_per_product=1, image_size=16)
    fractions = {s: ds["split"].count(s) / len(ds) for s in ("train", "validation", "test")}
    assert abs(fractions["train"] - 0.8) < 0.03
    assert abs(fractions["validation"] - 0.1) < 0.03 and abs(fractions["test"] - 0.1) < 0.03
    two = make_synthetic_products(num_products=50, photos_per_product=2, image_size=16)
    assert two["split"][0::2] == two["split"][1::2] == ds["split"][:50]


def _article_pixels(image: Image.Image, threshold: int = 40) -> np.ndarray:
    rgb = np.asarray(image).astype(int)
    return np.abs(rgb - rgb[0, 0]).max(axis=-1) > threshold  # far from the (light grey) background


def test_synthetic_photos_show_what_the_title_says(synthetic):
    palette = {name: np.array(rgb) for name, rgb in COLOURS.items()}
    checked = 0
    for row in synthetic:
        if row["colour"] == "White":  # white on light grey: not separable by a colour threshold
            continue
        pixels = np.asarray(row["image"]).reshape(-1, 3)[_article_pixels(row["image"]).reshape(-1)]
        median = np.median(pixels, axis=0)
        nearest = min(palette, key=lambda name: np.linalg.norm(palette[name] - median))
        assert nearest == row["colour"], f"{row['title']}: median article colour {median} looks {nearest}"
        checked += 1
    assert checked > 60

    # Two photos of one product differ (pose, scale, background) but show the same product.
    for a, b in zip(synthetic.select(range(0, 20, 2)), synthetic.select(range(1, 20, 2))):
        assert a["title"] == b["title"] and not np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))


def test_synthetic_silhouette_names_the_article():
    from scipy import ndimage

    def silhouette(image):  # 16x16 soft mask of the filled article shape
        mask = ndimage.binary_fill_holes(ndimage.binary_closing(_article_pixels(image, 12), iterations=2))
        small = Image.fromarray(mask.astype(np.uint8) * 255).resize((16, 16), Image.Resampling.BOX)
        return np.asarray(small, dtype=float).reshape(-1) / 255

    ds = make_synthetic_products(num_products=200, photos_per_product=1, image_size=48)
    articles = [category[-1] for category in ds["category"]]
    shapes = np.stack([silhouette(image) for image in ds["image"]])
    # Nearest article centroid of 150 products recognises the article of 50 unseen products.
    centroids = {a: shapes[:150][[x == a for x in articles[:150]]].mean(0) for a in set(articles)}
    predicted = [min(centroids, key=lambda a: np.abs(centroids[a] - shape).sum()) for shape in shapes[150:]]
    assert len(centroids) == len(ARTICLES)
    assert np.mean([p == a for p, a in zip(predicted, articles[150:])]) > 0.8


# ---------------------------------------------------------------------------------------------------- loading


def test_resolve_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ECLIP_DATA_DIR", str(tmp_path))
    assert resolve_data_dir() == str(tmp_path)
    monkeypatch.delenv("ECLIP_DATA_DIR")
    assert resolve_data_dir().endswith(os.path.join("shared", "data"))


def test_load_fashion_train_split_with_limit(fashion_rows):
    assert len(fashion_rows) == 8
    for row in fashion_rows:
        assert row["split"] == "train"
        assert row["image"]["bytes"] is None and os.path.isfile(row["image"]["path"])  # undecoded, lazily read
        assert {"productDisplayName", "articleType", "baseColour"} <= set(row)


def test_load_fashion_test_split_and_clear_errors(fashion_spec, data_dir):
    test = load_product_dataset(fashion_spec, split="test")
    assert len(test) == 952 and set(test["split"]) == {"test"}
    assert test.features["image"] == datasets.Image(decode=False)

    with pytest.raises(ValueError, match=r"'tst'.*\['test', 'train', 'validation'\]"):
        load_product_dataset(fashion_spec, split="tst")
    missing = os.path.join(data_dir, "no-such-folder")
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        load_product_dataset(f"imagefolder:{missing}")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_product_dataset(f"csv:{missing}/missing.csv")


def test_load_streaming_keeps_images_undecoded(fashion_spec):
    rows = list(load_product_dataset(fashion_spec, split="validation", streaming=True, limit=3))
    assert len(rows) == 3 and {r["split"] for r in rows} == {"validation"}
    assert all(isinstance(r["image"], dict) and os.path.isfile(r["image"]["path"]) for r in rows)

    stream = load_product_dataset("synthetic:40", split="test", streaming=True)
    assert isinstance(stream, datasets.IterableDataset)
    rows = list(stream)
    assert rows and {r["split"] for r in rows} == {"test"} and isinstance(rows[0]["image"]["bytes"], bytes)


def test_load_synthetic_spec_filters_by_split_column():
    validation = load_product_dataset("synthetic:100", split="validation")
    assert 0 < len(validation) < 60 and set(validation["split"]) == {"validation"}
    assert len(load_product_dataset("synthetic:100", split=None)) == 200
    assert len(load_product_dataset("synthetic", split="train", limit=5)) == 5
    with pytest.raises(ValueError, match="synthetic:x"):
        load_product_dataset("synthetic:x")


def test_unreachable_hub_dataset_names_the_spec(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no network here: fail fast instead of retrying
    with pytest.raises(ValueError, match="no-such-user/no-such-products.*imagefolder:PATH"):
        load_product_dataset("no-such-user/no-such-products")


# ---------------------------------------------------------------------------------------------------- collator


def test_collator_batch_from_real_rows(processor, fashion_rows):
    collator = PretrainingCollator(processor, scene_probability=0.0)
    batch = collator(fashion_rows)

    n = len(fashion_rows)
    assert batch["pixel_values"].shape == batch["view_pixel_values"].shape == (n, 3, SIZE, SIZE)
    assert batch["pixel_values"].dtype == torch.float32
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[name].dtype == torch.int64 and batch[name].shape[0] == n
    assert batch["product_ids"].dtype == torch.int64
    assert batch["product_ids"].tolist() == [row["id"] for row in fashion_rows]
    assert batch["num_skipped_images"].item() == 0 and batch["num_skipped_images"].dim() == 0

    # scene_probability=0: the main image is the photo itself.
    photos = [Image.open(row["image"]["path"]) for row in fashion_rows]
    torch.testing.assert_close(batch["pixel_values"], processed(processor, photos))
    # No second photo of any product in the batch: every view is a synthesised scene, not the photo.
    differences = (batch["view_pixel_values"] - batch["pixel_values"]).abs().flatten(1).mean(1)
    assert (differences > 0.05).all()

    # The fashion-products columns were mapped to product-text fields automatically.
    text = processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    row = fashion_rows[0]
    assert row["productDisplayName"].lower() in text
    assert f"{row['masterCategory']} > {row['subCategory']} > {row['articleType']}".lower() in text
    assert f"colour : {row['baseColour']}".lower() in text
    explicit = PretrainingCollator(processor, field_map=FASHION_FIELD_MAP, scene_probability=0.0)(fashion_rows)
    assert torch.equal(explicit["input_ids"], batch["input_ids"])


def test_duplicates_are_each_others_second_view(processor, synthetic):
    rows = list(synthetic.select(range(12)))  # 6 products x 2 photos, adjacent
    batch = PretrainingCollator(processor, scene_probability=0.0)(rows)
    pixels, views = batch["pixel_values"], batch["view_pixel_values"]
    swapped = torch.arange(12) ^ 1  # 0<->1, 2<->3, ...
    torch.testing.assert_close(views, pixels[swapped])
    assert torch.equal(batch["product_ids"], batch["product_ids"][swapped])
    text = processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert text.startswith(rows[0]["title"].lower()) and text.count(rows[0]["brand"].lower()) == 1


def test_scene_probability_and_seed(processor, synthetic):
    rows = [synthetic[i] for i in range(0, 24, 2)]  # 12 distinct products
    photos = processed(processor, [row["image"] for row in rows])

    scenes = PretrainingCollator(processor, scene_probability=1.0, make_views=False)(rows)
    assert "view_pixel_values" not in scenes
    assert ((scenes["pixel_values"] - photos).abs().flatten(1).mean(1) > 0.05).all()

    # member_ids: each scene shows its own product first and 1-3 other products of the batch; a photo only itself.
    ids = scenes["product_ids"].tolist()
    assert scenes["member_ids"].shape == (len(rows), 4)
    for own, members in zip(ids, scenes["member_ids"].tolist()):
        assert members[0] == own and set(members) <= set(ids)
        assert 1 <= len(set(members) - {own}) <= 3
    photos_only = PretrainingCollator(processor, scene_probability=0.0)(rows)
    assert photos_only["member_ids"].tolist() == [[own] * 4 for own in ids]

    first = PretrainingCollator(processor, seed=7)(rows)
    again = PretrainingCollator(processor, seed=7)(rows)
    other = PretrainingCollator(processor, seed=8)(rows)
    torch.testing.assert_close(first["view_pixel_values"], again["view_pixel_values"])
    assert not torch.equal(first["view_pixel_values"], other["view_pixel_values"])


def _corrupt_files(tmp_path, data_dir) -> dict[str, str]:
    jpeg = open(os.path.join(data_dir, "fashion-products", "images", "10001.jpg"), "rb").read()
    files = {
        "truncated": (tmp_path / "truncated.jpg", jpeg[: len(jpeg) // 2]),
        "empty": (tmp_path / "empty.jpg", b""),
        "text": (tmp_path / "notes.jpg", b"this is not an image\n"),
    }
    for path, content in files.values():
        path.write_bytes(content)
    return {name: str(path) for name, (path, _) in files.items()}


def test_undecodable_images_are_skipped_and_counted(processor, fashion_rows, tmp_path, data_dir, caplog):
    bad = _corrupt_files(tmp_path, data_dir)
    good = fashion_rows[:3]
    rows = [
        good[0],
        {**good[1], "id": 901, "image": {"bytes": None, "path": bad["truncated"]}},
        good[1],
        {**good[1], "id": 902, "image": {"bytes": None, "path": bad["empty"]}},
        {**good[1], "id": 903, "image": {"bytes": open(bad["text"], "rb").read(), "path": None}},
        good[2],
    ]
    with caplog.at_level(logging.WARNING, logger="eclip.training.data"):
        batch = PretrainingCollator(processor)(rows)

    assert batch["num_skipped_images"].item() == 3
    assert batch["product_ids"].tolist() == [row["id"] for row in good]
    assert batch["pixel_values"].shape == batch["view_pixel_values"].shape == (3, 3, SIZE, SIZE)
    assert batch["input_ids"].shape[0] == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all(f"id={i}" in w for i, w in zip((901, 902, 903), warnings))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # decoded strictly, nothing global changed

    nothing = PretrainingCollator(processor)([rows[1], rows[3], rows[4]])
    assert nothing["num_skipped_images"].item() == 3
    assert nothing["pixel_values"].shape == nothing["view_pixel_values"].shape == (0, 3, SIZE, SIZE)
    assert nothing["input_ids"].shape[0] == nothing["product_ids"].shape[0] == 0


def test_a_row_without_product_text_is_skipped_not_scored(processor, fashion_rows, caplog):
    """The processor refuses a blank text (it would be scored like a title): the collator drops such a row."""
    good = fashion_rows[:2]
    blank = {key: (None if isinstance(value, str) else value) for key, value in good[1].items()}
    blank.update(id=904, image=good[1]["image"])
    with caplog.at_level(logging.WARNING, logger="eclip.training.data"):
        batch = PretrainingCollator(processor)([good[0], blank, good[1]])
    assert batch["num_skipped_images"].item() == 1
    assert batch["product_ids"].tolist() == [row["id"] for row in good]
    assert any("id=904" in r.getMessage() and "no product text" in r.getMessage() for r in caplog.records)


def test_csv_with_relative_paths_and_string_ids(processor, tmp_path, data_dir):
    (tmp_path / "photos").mkdir()
    names = ["10000.jpg", "10001.jpg", "10012.jpg"]
    for name in names:
        product_photo(data_dir, int(name[:-4])).save(tmp_path / "photos" / name)
    (tmp_path / "offers.csv").write_text(
        "image_path,product_id,title\n"
        f"photos/{names[0]},SKU-A,White skirt\nphotos/{names[1]},SKU-B,Denim skirt\n"
        f"photos/{names[2]},SKU-A,White skirt again\n"
    )
    ds = load_product_dataset(f"csv:{tmp_path / 'offers.csv'}")
    assert ds.features["image"] == datasets.Image(decode=False)
    assert ds[0]["image"]["path"] == str(tmp_path / "photos" / names[0])

    batch = PretrainingCollator(processor, scene_probability=0.0)(list(ds))
    ids = batch["product_ids"].tolist()
    assert ids[0] == ids[2] != ids[1]
    assert ids[0] == product_id_to_int("SKU-A") == 8260417540160122385  # stable across runs and processes
    torch.testing.assert_close(batch["view_pixel_values"][0], batch["pixel_values"][2])


def test_collator_in_dataloader_workers(processor):
    dataset = load_product_dataset("synthetic:40", split=None, limit=32)
    collator = PretrainingCollator(processor, seed=1)

    def run():
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=8, num_workers=2, collate_fn=collator, generator=torch.Generator().manual_seed(0)
        )
        return list(loader)

    batches = run()
    assert len(batches) == 4
    assert torch.cat([b["product_ids"] for b in batches]).tolist() == dataset["product_id"]
    for batch in batches:
        assert batch["view_pixel_values"].shape == (8, 3, SIZE, SIZE)
        assert batch["num_skipped_images"].item() == 0
    # Same loader seed, same batches (scenes included); the workers' copies advance independently.
    for a, b in zip(batches, run()):
        torch.testing.assert_close(a["pixel_values"], b["pixel_values"])
        torch.testing.assert_close(a["view_pixel_values"], b["view_pixel_values"])
