"""
Several texts per product (`eclip.training.text_views`): each view says what it promises, the collator draws them,
and the feature cache stores several per row and gives a fresh one on each pass while the pixels stay the same.
"""

import random

import numpy as np
import pytest
import torch
from conftest import tiny_processor
from test_feature_cache import IMAGE_SIZE, tiny_dinov2_eclip

from eclip.training.data import PretrainingCollator, load_product_dataset
from eclip.training.feature_cache import FeatureCache, lock_vision_tower
from eclip.training.text_views import TEXT_VIEWS, check_text_views, product_text_view
from eclip.training.trainer import EclipTrainer, EclipTrainingArguments
from modeling_eclip import build_product_text

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

FIELDS = {"title": "Nike Men Blue Round Neck T-shirt", "brand": "Nike", "category": ["Apparel", "Topwear", "Tshirts"],
          "colour": "Blue", "gender": "Men", "usage": "Casual", "season": "Summer"}


def view(name, fields=FIELDS, seed=0):
    return product_text_view(fields, name, build_product_text, random.Random(seed))


def test_each_view_says_what_it_promises():
    assert view("full") == build_product_text(FIELDS)
    assert view("title") == "Nike Men Blue Round Neck T-shirt"  # the brand the title starts with is not repeated
    assert view("category") == "Apparel > Topwear > Tshirts"
    assert view("leaf") == "Tshirts"
    assert view("attributes") == "Blue Tshirts for Men, Casual"
    segments = set(build_product_text(FIELDS).split(" | "))
    shuffles = [view("shuffled", seed=seed).split(" | ") for seed in range(30)]
    assert all(s and set(s) <= segments and len(set(s)) == len(s) for s in shuffles)
    assert len({tuple(s) for s in shuffles}) > 10  # orders and drops vary
    assert any(len(s) < len(segments) for s in shuffles) and any(s[0] != shuffles[0][0] for s in shuffles)


def test_a_view_the_fields_cannot_fill_falls_back_to_the_full_text():
    bare = {"title": "Plain mug", "colour": "White"}
    for name in ("category", "leaf", "attributes"):
        assert view(name, bare) == build_product_text(bare)
    assert view("category", {**FIELDS, "category": "Apparel > Topwear > Tshirts"}) == "Apparel > Topwear > Tshirts"
    assert view("leaf", {**FIELDS, "category": "Apparel > Topwear > Tshirts"}) == "Tshirts"


def test_missing_and_dirty_fields_read_as_the_full_text_reads_them():
    """NaN (a pandas / CSV gap) and None are missing, control characters and whitespace runs collapse, as in
    `build_product_text`: no view says "nan"."""
    nan = float("nan")
    gappy = {"title": "Nike\x00 Tee\tBlue\n", "brand": nan, "category": ["Apparel", nan, "Tshirts\x07"],
             "colour": nan, "gender": "Men", "usage": nan, "material": None, "season": nan}
    assert view("title", gappy) == "Nike Tee Blue"
    assert view("category", gappy) == "Apparel > Tshirts"
    assert view("leaf", gappy) == "Tshirts"
    assert view("attributes", gappy) == "Tshirts for Men"
    assert view("full", gappy) == build_product_text(gappy) == "Nike Tee Blue | Apparel > Tshirts | gender: Men"
    assert all("nan" not in view("shuffled", gappy, seed).lower() for seed in range(10))
    # A category path given as one string, its last element missing or dirty.
    assert view("leaf", {**gappy, "category": "Apparel > Topwear\x1f > Tshirts "}) == "Tshirts"
    assert view("leaf", {**gappy, "category": ["Apparel", "Topwear", nan]}) == "Topwear"
    bare = {"title": "Plain mug", "category": nan, "colour": None}
    for name in ("category", "leaf", "attributes"):
        assert view(name, bare) == build_product_text(bare) == "Plain mug"


def test_unknown_views_are_refused_by_name():
    assert check_text_views("leaf, title") == ("leaf", "title")
    assert check_text_views(list(TEXT_VIEWS)) == TEXT_VIEWS
    with pytest.raises(ValueError, match="Unknown text view 'caption'"):
        check_text_views(["full", "caption"])
    with pytest.raises(ValueError, match="at least one view"):
        check_text_views([])
    with pytest.raises(ValueError, match="needs text_views"):
        PretrainingCollator(tiny_processor(IMAGE_SIZE), text_variants=2)
    with pytest.raises(ValueError, match="text_variants must be a positive integer"):
        PretrainingCollator(tiny_processor(IMAGE_SIZE), text_views=["leaf"], text_variants=0)


def decoded(processor, input_ids) -> list[str]:
    return processor.tokenizer.batch_decode(input_ids, skip_special_tokens=True)


def titles_of(rows) -> list[str]:
    return [row["title"].lower() for row in rows]


def test_the_collator_reads_the_views_it_is_given():
    processor = tiny_processor(IMAGE_SIZE)
    rows = [load_product_dataset("synthetic:8", split="train")[i] for i in range(8)]
    leaves = [row["category"][-1].lower() for row in rows]

    batch = PretrainingCollator(processor, text_views=["leaf"], seed=0, max_length=24)(rows)
    assert decoded(processor, batch["input_ids"]) == leaves
    assert "text_variants_input_ids" not in batch

    fixed = PretrainingCollator(processor, seed=0, max_length=24)(rows)  # the default: one catalogue string
    assert decoded(processor, fixed["input_ids"])[0].startswith(f"{titles_of(rows)[0]} | {' > '.join(rows[0]['category']).lower()} |")

    mixed = PretrainingCollator(processor, text_views=["leaf", "title"], text_variants=6, seed=0, max_length=24)(rows)
    variants = mixed["text_variants_input_ids"]
    assert variants.shape[:2] == (8, 6) and mixed["text_variants_attention_mask"].shape == variants.shape
    first = decoded(processor, variants[:, 0])
    assert first == decoded(processor, mixed["input_ids"])
    drawn = [decoded(processor, variants[i]) for i in range(8)]
    titles = titles_of(rows)
    assert all(set(d) <= {leaves[i], titles[i]} for i, d in enumerate(drawn))
    assert sum(len(set(d)) == 2 for d in drawn) >= 6  # both views drawn for most rows (6 draws each)


def test_more_text_variants_change_neither_the_scenes_nor_the_first_text():
    """The feature cache (text_variants=n) and pixel training (one text) see the same batch for the same rows and
    seed: the same scenes and second views, and as text the cache's first draw."""
    processor = tiny_processor(IMAGE_SIZE)
    rows = [load_product_dataset("synthetic:8", split="train")[i] for i in range(8)]
    batches = {n: PretrainingCollator(processor, text_views=["leaf", "title", "shuffled"], text_variants=n, seed=3,
                                      max_length=24)(rows) for n in (1, 4)}
    one, four = batches[1], batches[4]
    assert one["member_ids"][:, 1:].ne(one["member_ids"][:, :1]).any()  # scenes were composed: the check bites
    for name in ("pixel_values", "view_pixel_values", "member_ids", "product_ids", "input_ids", "attention_mask"):
        assert torch.equal(one[name], four[name]), name
    assert decoded(processor, four["text_variants_input_ids"][:, 0]) == decoded(processor, one["input_ids"])


def test_the_cache_gives_a_fresh_text_on_each_pass_over_the_same_pixels(tmp_path):
    processor = tiny_processor(IMAGE_SIZE)
    dataset = load_product_dataset("synthetic:16", split="train")
    collator = PretrainingCollator(processor, text_views=["leaf", "title", "category"], text_variants=3, seed=0,
                                   max_length=24)
    model = tiny_dinov2_eclip()
    cache = FeatureCache.build(str(tmp_path / "cache"), model, collator, dataset, batch_size=4, passes=1, seed=0,
                               layer=lock_vision_tower(model, 0), show_progress=False)
    n = cache.num_batches
    assert cache.text_variants == 3 and n == len(dataset) // 4
    plain = FeatureCache.build(str(tmp_path / "cache"), model, PretrainingCollator(processor, seed=0, max_length=24),
                               dataset, batch_size=4, passes=1, seed=0, layer=lock_vision_tower(model, 0),
                               show_progress=False)
    assert plain.folder != cache.folder and plain.text_variants == 1

    passes = [[cache.collate([cache[i] for i in rows]) for rows in cache.batch_sampler(n * p + n)][-n:]
              for p in range(4)]
    for batch in range(n):
        texts = [decoded(processor, passes[p][batch]["input_ids"]) for p in range(4)]
        torch.testing.assert_close(passes[0][batch]["image_hidden_states"], passes[3][batch]["image_hidden_states"])
        assert texts[3] == texts[0]  # three variants: the fourth pass reads the first again
        assert texts[0] != texts[1] or texts[1] != texts[2]
        # Row by row, pass p reads the stored draw p % 3 (stored padded to max_length, collated to the longest).
        rows = cache.batch_rows(batch)
        for p in range(4):
            ids = passes[p][batch]["input_ids"]
            stored = torch.from_numpy(cache._array("input_ids")[rows][:, p % 3].astype(np.int64))
            mask = cache._array("attention_mask")[rows][:, p % 3]
            width = ids.shape[1]
            assert width == int(mask.sum(axis=1).max()) and not mask[:, width:].any()
            assert torch.equal(ids, stored[:, :width]), (batch, p)
            assert torch.equal(passes[p][batch]["attention_mask"], torch.from_numpy(mask[:, :width].astype(np.int64)))

    # Training reads the cycling texts through the Trainer as from any cache.
    trainer = EclipTrainer(
        model=model,
        args=EclipTrainingArguments(output_dir=str(tmp_path / "run"), report_to=[], use_cpu=True, disable_tqdm=True,
                                    save_strategy="no", max_steps=6, logging_steps=1, learning_rate=1e-3,
                                    lock_image_tower=True, per_device_train_batch_size=4,
                                    feature_cache_dir=str(tmp_path / "cache")),
        train_dataset=cache,
    )
    trainer.train()
    assert all(np.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)


def test_pretraining_says_when_text_variants_go_unread():
    from types import SimpleNamespace

    from eclip.training.pretrain import text_variants_warning

    def args(cache_dir, max_steps, accumulation=1):
        return SimpleNamespace(feature_cache_dir=cache_dir, max_steps=max_steps,
                               gradient_accumulation_steps=accumulation)

    data = {"text_views": ["leaf", "title"], "text_variants": 3}
    assert "ignored without training.feature_cache_dir" in text_variants_warning(data, args(None, 100))
    # 40 cached batches: 40 steps read draw 0 only; 41 (or 21 steps of 2 accumulated batches) reach the second draw.
    assert "only each row's first text is ever read" in text_variants_warning(data, args("cache", 40), 40)
    assert text_variants_warning(data, args("cache", 41), 40) is None
    assert text_variants_warning(data, args("cache", 21, 2), 40) is None
    assert text_variants_warning({"text_views": ["leaf"]}, args(None, 100)) is None
    assert text_variants_warning({**data, "text_variants": 1}, args(None, 100)) is None
