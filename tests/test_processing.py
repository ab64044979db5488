"""EclipProcessor and the product-text builder: every image mode, bad input, text edge cases, round trip."""

import io
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import AutoProcessor

from modeling_eclip import EclipProcessor, build_product_text

WHITE = None  # filled lazily: the normalised value of a white pixel


def pixels(processor, image):
    return processor(images=image, return_tensors="pt")["pixel_values"]


def white_pixel(processor):
    return pixels(processor, Image.new("RGB", (32, 32), (255, 255, 255)))[0, :, 0, 0]


def red_pixel(processor):
    return pixels(processor, Image.new("RGB", (32, 32), (255, 0, 0)))[0, :, 0, 0]


# ------------------------------------------------------------------------------------------------------ images
def test_every_pil_mode_converts_correctly(processor):
    red, white = red_pixel(processor), white_pixel(processor)
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 255))
    transparent = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    palette = Image.new("RGB", (40, 40), (255, 0, 0)).convert("P")
    palette_transparent = palette.copy()
    palette_transparent.info["transparency"] = palette.getpixel((0, 0))
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))
    cases = {
        "RGB": (Image.new("RGB", (40, 40), (255, 0, 0)), red),
        "RGBA opaque": (rgba, red),
        "RGBA transparent -> white background": (transparent, white),
        "P": (palette, red),
        "P with transparency -> white": (palette_transparent, white),
        "CMYK": (cmyk, red),
        "L white": (Image.new("L", (40, 40), 255), white),
        "LA transparent -> white": (Image.new("LA", (40, 40), (0, 0)), white),
        "1": (Image.new("1", (40, 40), 1), white),
    }
    for name, (image, expected) in cases.items():
        out = pixels(processor, image)
        assert out.shape == (1, 3, 32, 32), name
        torch.testing.assert_close(out[0, :, 16, 16], expected, atol=0.02, rtol=0, msg=name)


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_bit_depth_images_are_rescaled_not_clipped(processor, mode):
    ramp = np.tile(np.linspace(0, 60000, 64), (64, 1))
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    image = Image.fromarray(ramp.astype(dtype), mode=mode) if mode != "I;16" else Image.fromarray(
        ramp.astype(dtype)
    )
    assert image.mode == mode
    out = pixels(processor, image)[0, 0]
    # a naive convert("RGB") saturates everything above 255 to white: the ramp must survive as a ramp
    assert out[:, 0].mean() < out[:, -1].mean()
    assert (out[16] - out[16].min()).gt(0.5).float().mean() > 0.5


def test_numpy_and_torch_images(processor):
    red = red_pixel(processor)
    hwc = np.zeros((40, 50, 3), dtype=np.uint8)
    hwc[..., 0] = 255
    chw = np.ascontiguousarray(np.moveaxis(hwc, -1, 0))
    for image in (hwc, chw, torch.from_numpy(chw)):
        out = pixels(processor, image)
        torch.testing.assert_close(out[0, :, 16, 16], red, atol=0.02, rtol=0)
    gray = np.full((40, 40), 255, dtype=np.uint8)
    torch.testing.assert_close(pixels(processor, gray)[0, :, 5, 5], white_pixel(processor), atol=0.02, rtol=0)
    batch = processor(images=[hwc, Image.new("L", (20, 90), 3)], return_tensors="pt")["pixel_values"]
    assert batch.shape == (2, 3, 32, 32)


def test_tiny_and_very_wide_images(processor):
    for size in [(1, 1), (2000, 3), (3, 900)]:
        assert pixels(processor, Image.new("RGB", size, (0, 0, 255))).shape == (1, 3, 32, 32)


def test_image_files_and_bad_files(processor, tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (30, 30), (255, 0, 0)).save(good)
    assert pixels(processor, str(good)).shape == (1, 3, 32, 32)

    truncated = tmp_path / "truncated.jpg"
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    for path in (truncated, empty, text):
        with pytest.raises(ValueError, match=path.name):
            processor(images=[str(good), str(path)])
    with pytest.raises(ValueError, match="image 1"):
        processor(images=[str(good), str(empty)])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        processor(images=str(tmp_path / "missing.jpg"))


def truncated_jpeg(path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def test_an_image_opened_lazily_names_its_file_when_it_cannot_be_decoded(processor, tmp_path):
    """The README's pattern, `Image.open(path)` handed to the processor: PIL decodes late; the error names the file."""
    truncated = truncated_jpeg(tmp_path / "truncated.jpg")
    good = Image.new("RGB", (30, 30), (255, 0, 0))
    with pytest.raises(ValueError, match=rf"image 1 \({re.escape(str(truncated))}\) cannot be decoded"):
        processor(images=[good, Image.open(truncated)], text=["a", "b"], return_tensors="pt")
    chunks = processor.iter_batches(images=[good] * 3 + [Image.open(truncated)], batch_size=2)
    next(chunks)
    with pytest.raises(ValueError, match=r"image 3 \("):  # its position in the whole list
        next(chunks)


def test_open_image_loads_completely_and_names_a_bad_file(tmp_path, saved_folder):
    from transformers import pipeline

    from modeling_eclip import open_image

    truncated = truncated_jpeg(tmp_path / "truncated.jpg")
    with pytest.raises(ValueError, match=rf"image \({re.escape(str(truncated))}\) cannot be decoded"):
        open_image(truncated)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        open_image(tmp_path / "missing.jpg")
    good = tmp_path / "good.png"
    Image.new("RGBA", (30, 20), (255, 0, 0, 255)).save(good)
    image = open_image(good)
    assert image.mode == "RGB" and image.size == (30, 20)
    # the pipelines open paths with transformers' own loader; an image from open_image is already decoded
    results = pipeline("zero-shot-image-classification", model=saved_folder)(image, candidate_labels=["a", "b"])
    assert sorted(r["label"] for r in results) == ["a", "b"]


def test_iter_batches_gives_the_whole_calls_inputs_in_chunks(processor):
    texts = [f"product number {i} " + "word " * (i % 7) for i in range(23)]
    images = [Image.new("RGB", (20 + i, 30), (i * 10, 0, 0)) for i in range(23)]
    whole = processor(images=images, text=texts, return_tensors="pt", padding="max_length", max_length=16)
    chunks = list(processor.iter_batches(images=images, text=texts, batch_size=5, return_tensors="pt",
                                         padding="max_length", max_length=16))
    assert [len(c["input_ids"]) for c in chunks] == [5, 5, 5, 5, 3]
    for key in ("input_ids", "attention_mask", "pixel_values"):
        torch.testing.assert_close(torch.cat([c[key] for c in chunks]), whole[key])
    only_text = list(processor.iter_batches(text=texts, batch_size=10))
    assert [len(c["input_ids"]) for c in only_text] == [10, 10, 3] and "pixel_values" not in only_text[0]
    with pytest.raises(ValueError, match="got 23 images and 3 texts"):
        next(processor.iter_batches(images=images, text=texts[:3]))
    with pytest.raises(ValueError, match="batch_size"):
        next(processor.iter_batches(text=texts, batch_size=0))


@pytest.mark.parametrize(
    "image, error, message",
    [
        (np.zeros((6, 6, 5), dtype=np.uint8), ValueError, "5 channels"),
        (np.full((8, 8, 3), np.nan, dtype=np.float32), ValueError, "NaN"),
        (np.zeros((2, 2, 2, 2, 2)), ValueError, "shape"),
        (42, TypeError, "unsupported type int"),
        (Image.new("RGB", (0, 0)), ValueError, "empty"),
    ],
)
def test_bad_images_raise_specific_errors(processor, image, error, message):
    with pytest.raises(error, match=message):
        processor(images=[image])


def test_no_input_and_empty_lists(processor):
    with pytest.raises(ValueError, match="needs images, text or both"):
        processor()
    with pytest.raises(ValueError, match="empty list of images"):
        processor(images=[])
    with pytest.raises(ValueError, match="empty list of texts"):
        processor(text=[])
    with pytest.raises(TypeError, match="list of strings"):
        processor(text=[1, 2])


# -------------------------------------------------------------------------------------------------------- text
def test_text_edge_cases(processor):
    texts = [
        "나이키 남성 러닝화 블랙",
        "耐克男子跑鞋 黑色",
        "حذاء جري رجالي أسود",
        "👟🔥 sneakers 🔥",
        "tab\tnew\nline\x00null\x1bescape",
        "word " * 5000,
    ]
    batch = processor(text=texts, return_tensors="pt")
    assert batch["input_ids"].shape[0] == len(texts)
    assert batch["input_ids"].shape[1] <= 512  # truncated, never an overflow of the position table
    assert (batch["attention_mask"].sum(-1) >= 2).all()  # every text keeps at least [CLS] [SEP]


def test_an_empty_title_is_an_error_not_a_score(processor):
    # Scored, an empty title would win alone (probability 1) and rank like any other: refuse it, name its position.
    for texts, position in ((["Nike Men Red Shoes", ""], "text 1 is empty"), (["  \t\n"], "text 0 is empty"),
                            (["", "ok", " "], "text 0 is empty (and 1 more)")):
        with pytest.raises(ValueError, match=re.escape(position)):
            processor(text=texts, return_tensors="pt")
    with pytest.raises(ValueError, match="text 0 is empty"):
        processor(text="", images=Image.new("RGB", (8, 8)), return_tensors="pt")
    chunks = processor.iter_batches(text=["a shirt"] * 5 + [""], batch_size=2)
    assert len(next(chunks)["input_ids"]) == 2
    with pytest.raises(ValueError, match="text 5 is empty"):  # the position in the whole list, not in the chunk
        list(chunks)


def test_long_text_runs_through_a_model_with_short_positions(processor):
    import sys

    sys.path.insert(0, "tests")
    from conftest import tiny_config

    from modeling_eclip import EclipModel

    model = EclipModel(tiny_config()).eval()
    batch = processor(text=["word " * 5000], return_tensors="pt", max_length=128)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).text_embeds).all()


# ------------------------------------------------------------------------------------------- product-text builder
def test_product_text_template():
    fields = dict(brand="Spykar", title="Men Stripes Grey Sweaters", category=["Apparel", "Topwear", "Sweaters"],
                  colour="Grey", season="Winter")
    assert build_product_text(fields) == (
        "Spykar Men Stripes Grey Sweaters | Apparel > Topwear > Sweaters | colour: Grey | season: Winter"
    )
    # missing fields degrade: no KeyError, no dangling labels, no double spaces
    assert build_product_text({"title": "Blue Jeans"}) == "Blue Jeans"
    assert build_product_text({"title": "Blue Jeans", "colour": float("nan"), "brand": None}) == "Blue Jeans"
    assert build_product_text({}) == ""
    assert build_product_text({"title": "a\x00b\n  c"}) == "a b c"
    custom = "{title} ({brand}) | sold by {seller}"
    assert build_product_text({"title": "Cap", "seller": "ACME"}, custom) == "Cap () | sold by ACME"
    with pytest.raises(TypeError, match="mapping"):
        build_product_text(["not", "a", "mapping"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.dictionaries(
        st.sampled_from(["brand", "title", "category", "colour", "gender", "material", "pattern", "usage", "other"]),
        st.one_of(st.none(), st.text(), st.lists(st.text(), max_size=4), st.integers(), st.floats()),
    )
)
def test_product_text_builder_never_fails(fields):
    text = build_product_text(fields)
    assert isinstance(text, str)
    assert text == text.strip() and "  " not in text
    assert not any(ord(c) < 32 for c in text)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    mode=st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "CMYK", "1", "I", "F", "I;16"]),
    text=st.text(max_size=300).filter(str.strip),  # a blank text is an error (test_an_empty_title_is_...)
)
def test_processor_handles_arbitrary_sizes_modes_and_strings(processor, width, height, mode, text):
    image = Image.new(mode, (width, height))
    batch = processor(images=image, text=text, return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 3, 32, 32)
    assert torch.isfinite(batch["pixel_values"]).all()
    assert batch["input_ids"].shape[0] == 1


# ------------------------------------------------------------------------------------------------- round trip
def test_processor_save_load_round_trip(processor, tmp_path):
    custom = EclipProcessor(processor.image_processor, processor.tokenizer, product_text_template="{title} | {colour}")
    custom.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, EclipProcessor)
    assert loaded.product_text_template == "{title} | {colour}"
    assert loaded.build_product_text({"title": "Cap", "colour": "Red", "brand": "X"}) == "Cap | Red"
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    a = custom(images=image, text=["red cap", "a much longer blue denim jacket"], return_tensors="pt")
    b = loaded(images=image, text=["red cap", "a much longer blue denim jacket"], return_tensors="pt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_decompression_bomb_is_refused_with_the_file_named(processor, tmp_path, monkeypatch):
    # PIL refuses images over 2x MAX_IMAGE_PIXELS at open (from the header, before decoding): lower the limit so a
    # small file stands in for a multi-gigapixel bomb.
    bomb = tmp_path / "bomb.png"
    Image.new("RGB", (200, 200)).save(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match="bomb.png"):
        processor(images=str(bomb))


def test_decompression_bomb_in_a_training_batch_is_skipped(processor, tmp_path, monkeypatch):
    from eclip.training.data import PretrainingCollator

    good, bomb = tmp_path / "good.png", tmp_path / "bomb.png"
    Image.new("RGB", (20, 20), (255, 0, 0)).save(good)
    Image.new("RGB", (200, 200)).save(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    rows = [
        {"image": {"path": str(path), "bytes": None}, "title": f"product {i}", "product_id": i}
        for i, path in enumerate([good, bomb, good])
    ]
    batch = PretrainingCollator(processor, scene_probability=0.0, make_views=False)(rows)
    assert int(batch["num_skipped_images"]) == 1
    assert batch["pixel_values"].shape[0] == 2 and batch["product_ids"].tolist() == [0, 2]
