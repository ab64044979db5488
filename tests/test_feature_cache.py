"""
Locked-image-tower training and its feature cache: the tower splits exactly, locking freezes what it says, training
from the cache gives the losses of training from pixels, and a killed build resumes.
"""

import os

import numpy as np
import pytest
import torch
from conftest import tiny_config, tiny_processor
from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model, ViTConfig, ViTModel

from modeling_eclip import EclipModel, vision_layers, vision_tower_head, vision_tower_tail
from eclip.training.data import PretrainingCollator, load_product_dataset
from eclip.training.feature_cache import FeatureCache, lock_vision_tower
from eclip.training.trainer import EclipTrainer, EclipTrainingArguments

IMAGE_SIZE = 28  # 2x2 patches of 14 px (DINOv2's patch)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def tiny_dinov2_config(**overrides) -> dict:
    fields = dict(model_type="dinov2", hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=64, image_size=IMAGE_SIZE, patch_size=14)
    fields.update(overrides)
    return fields


def tiny_dinov2_eclip(seed: int = 0, **overrides) -> EclipModel:
    torch.manual_seed(seed)
    fields = dict(vision_config=tiny_dinov2_config(), vision_pooling="cls_mean", scene_positives=True,
                  instance_matching="one_to_one", instance_residual=True)
    fields.update(overrides)
    return EclipModel(tiny_config(**fields))


@pytest.mark.parametrize(
    "tower",
    [
        Dinov2Model(Dinov2Config(**{k: v for k, v in tiny_dinov2_config().items() if k != "model_type"})),
        ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                           image_size=32, patch_size=8)),
        CLIPVisionModel(CLIPVisionConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                         intermediate_size=64, image_size=32, patch_size=8)),
    ],
    ids=["dinov2", "vit", "clip"],
)
def test_a_vit_like_tower_splits_exactly_at_every_block(tower):
    tower.eval()
    size = tower.config.image_size
    pixel_values = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = tower(pixel_values=pixel_values, output_hidden_states=True)
        for layer in range(len(vision_layers(tower)) + 1):
            head = vision_tower_head(tower, pixel_values, layer)
            torch.testing.assert_close(head, whole.hidden_states[layer], rtol=0, atol=0)
            tail = vision_tower_tail(tower, head, layer)
            torch.testing.assert_close(tail.last_hidden_state, whole.last_hidden_state, rtol=0, atol=0)
            if whole.pooler_output is not None:
                torch.testing.assert_close(tail.pooler_output, whole.pooler_output, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"end_layer must be in \[0, 3\]"):
        vision_tower_head(tower, pixel_values, 4)


def test_locking_freezes_the_tower_but_its_last_blocks():
    model = tiny_dinov2_eclip()
    assert lock_vision_tower(model, 0) == 3
    assert not any(p.requires_grad for p in model.vision_model.parameters())
    assert all(p.requires_grad for p in model.text_model.parameters())
    assert all(p.requires_grad for p in model.instance_decoder.parameters())

    model = tiny_dinov2_eclip()
    assert lock_vision_tower(model, 1) == 2
    trainable = {name for name, p in model.vision_model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("encoder.layer.2.", "layernorm.")) for name in trainable)
    assert any(name.startswith("layernorm.") for name in trainable)
    with pytest.raises(ValueError, match="unlocked_image_layers must be in"):
        lock_vision_tower(tiny_dinov2_eclip(), 4)


def _pixel_and_cache_runs(tmp_path, unlocked: int, dtype: str, steps: int = 4, passes: int = 2,
                          cache_layer: int | None = None):
    processor = tiny_processor(IMAGE_SIZE)
    dataset = load_product_dataset("synthetic:24", split="train")
    collator = PretrainingCollator(processor, scene_probability=0.5, seed=0, max_length=24)
    settings = dict(report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0, max_steps=steps,
                    logging_steps=1, learning_rate=1e-3, lock_image_tower=True, unlocked_image_layers=unlocked,
                    per_device_train_batch_size=8)
    pixel = EclipTrainer(
        model=tiny_dinov2_eclip(),
        args=EclipTrainingArguments(output_dir=str(tmp_path / "pixels"), contrastive_batch_schedule="0:8", **settings),
        train_dataset=dataset, data_collator=collator,
    )
    pixel.train()

    model = tiny_dinov2_eclip()
    layer = lock_vision_tower(model, unlocked) if cache_layer is None else cache_layer
    cache = FeatureCache.build(str(tmp_path / "cache"), model, collator, dataset, batch_size=8, passes=passes, seed=0,
                               layer=layer, dtype=dtype, show_progress=False)
    cached = EclipTrainer(
        model=model,
        args=EclipTrainingArguments(output_dir=str(tmp_path / "cached"), feature_cache_dir=str(tmp_path / "cache"),
                                    **settings),
        train_dataset=cache,
    )
    cached.train()

    def losses(trainer):
        return [{k: v for k, v in entry.items() if k == "loss" or k.startswith("loss_")}
                for entry in trainer.state.log_history if "loss" in entry]

    return losses(pixel), losses(cached), pixel.model, cached.model


@pytest.mark.parametrize("unlocked, cache_layer", [(0, None), (1, None), (0, 2)],
                         ids=["locked", "last-block-unlocked", "cache-before-the-last-locked-block"])
def test_training_from_the_cache_gives_the_losses_of_training_from_pixels(tmp_path, unlocked, cache_layer):
    """Same locked tower, same batches: every logged objective at every step agrees, and so do the final weights."""
    pixel, cached, pixel_model, cached_model = _pixel_and_cache_runs(tmp_path, unlocked, "float32",
                                                                     cache_layer=cache_layer)
    assert len(pixel) == len(cached) == 4
    assert set(pixel[0]) == {"loss", "loss_itc", "loss_inter", "loss_intra", "loss_selection"}
    for step_pixel, step_cached in zip(pixel, cached):
        for key in step_pixel:
            assert step_cached[key] == pytest.approx(step_pixel[key], rel=1e-4, abs=1e-5), key
    for (name, a), b in zip(pixel_model.named_parameters(), cached_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    # The locked blocks did not move; the unlocked ones did.
    fresh = tiny_dinov2_eclip()
    moved = {name for (name, a), b in zip(fresh.vision_model.named_parameters(), cached_model.vision_model.parameters())
             if not torch.equal(a, b)}
    assert bool(moved) == bool(unlocked)
    assert all(name.startswith(("encoder.layer.2.", "layernorm.")) for name in moved)


def test_a_float16_cache_stays_within_half_precision_of_pixel_training(tmp_path):
    pixel, cached, _, _ = _pixel_and_cache_runs(tmp_path, 0, "float16", steps=3)
    for step_pixel, step_cached in zip(pixel, cached):
        assert step_cached["loss"] == pytest.approx(step_pixel["loss"], rel=2e-3)


class _DiesAfter:
    """A collator that raises after `n` calls, as a kill midway through a build would stop it."""

    def __init__(self, collator, n):
        self.collator, self.n, self.calls = collator, n, 0

    def __getattr__(self, name):
        return getattr(self.collator, name)

    def __call__(self, rows):
        self.calls += 1
        if self.calls > self.n:
            raise KeyboardInterrupt("killed")
        return self.collator(rows)


def test_a_killed_build_resumes_and_a_complete_one_is_reused(tmp_path):
    processor = tiny_processor(IMAGE_SIZE)
    dataset = load_product_dataset("synthetic:40", split="train")
    collator = PretrainingCollator(processor, seed=0, max_length=24)
    model = tiny_dinov2_eclip()
    layer = lock_vision_tower(model, 0)
    kwargs = dict(batch_size=4, passes=2, seed=0, layer=layer, show_progress=False)
    num_batches = (len(dataset) // 4) * 2
    assert num_batches > 16

    dying = _DiesAfter(collator, 12)  # the probe batch, then 11 cached batches: progress was flushed after 8
    with pytest.raises(KeyboardInterrupt):
        FeatureCache.build(str(tmp_path / "a"), model, dying, dataset, **kwargs)
    with pytest.raises(ValueError, match="incomplete"):
        FeatureCache(next((tmp_path / "a").iterdir()))
    counting = _DiesAfter(collator, 10**6)
    resumed = FeatureCache.build(str(tmp_path / "a"), model, counting, dataset, **kwargs)
    assert counting.calls == 1 + num_batches - 8  # the probe, then only the batches not flushed before the kill

    fresh = FeatureCache.build(str(tmp_path / "b"), model, collator, dataset, **kwargs)
    for name in fresh.manifest["arrays"]:
        np.testing.assert_array_equal(resumed._array(name), fresh._array(name), err_msg=name)

    reused = _DiesAfter(collator, 0)  # any collation would raise: a complete cache is read, not rebuilt
    assert FeatureCache.build(str(tmp_path / "a"), model, reused, dataset, **kwargs).folder == resumed.folder

    with torch.no_grad():
        model.vision_model.embeddings.cls_token.add_(1.0)  # other tower weights: another cache
    other = FeatureCache.build(str(tmp_path / "a"), model, collator, dataset, **kwargs)
    assert other.folder != resumed.folder


def test_trainer_refuses_a_cache_of_another_block(tmp_path):
    processor = tiny_processor(IMAGE_SIZE)
    dataset = load_product_dataset("synthetic:16", split="train")
    collator = PretrainingCollator(processor, seed=0, max_length=24)
    model = tiny_dinov2_eclip()
    cache = FeatureCache.build(str(tmp_path / "c"), model, collator, dataset, batch_size=8, passes=1, seed=0,
                               layer=3, show_progress=False)
    args = EclipTrainingArguments(output_dir=str(tmp_path / "r"), report_to=[], use_cpu=True, max_steps=1,
                                  lock_image_tower=True, unlocked_image_layers=1, feature_cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="after block 3.*from block 2 on"):
        EclipTrainer(model=tiny_dinov2_eclip(), args=args, train_dataset=cache)
    with pytest.raises(ValueError, match="needs lock_image_tower=True"):
        EclipTrainingArguments(output_dir=str(tmp_path / "r"), feature_cache_dir="x")


def test_features_from_cached_hidden_states_equal_features_from_pixels():
    """The public feature methods take a locked tower's hidden states in place of pixels (cached evaluation)."""
    model = tiny_dinov2_eclip().eval()
    pixels = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden = vision_tower_head(model.vision_model, pixels, 2)
        cached = {"image_hidden_states": hidden, "image_hidden_states_layer": 2}
        torch.testing.assert_close(model.get_image_features(**cached).pooler_output,
                                   model.get_image_features(pixels).pooler_output)
        from_cache, from_pixels = model.get_instance_features(**cached), model.get_instance_features(pixels)
        torch.testing.assert_close(from_cache.instance_embeds, from_pixels.instance_embeds)
        torch.testing.assert_close(from_cache.selection_logits, from_pixels.selection_logits)
    with pytest.raises(ValueError, match="needs image_hidden_states_layer"):
        model.get_image_features(image_hidden_states=hidden)


def test_evaluation_from_cached_tower_features_equals_evaluation_from_pixels(tmp_path, data_dir):
    """`evaluate_model(..., tower_features=...)` reads the locked blocks' hidden states (computed once, kept on disk)
    and gives the metrics of the pixel path; a model whose locked blocks differ is refused."""
    from eclip.training.evaluation.runner import evaluate_model
    from eclip.training.evaluation.tower_features import TowerFeatures

    model = tiny_dinov2_eclip().eval()
    processor = tiny_processor(IMAGE_SIZE)
    kwargs = dict(data_dir=data_dir, tasks="zero_shot,retrieval,instance_retrieval", limit=12, show_progress=False)
    pixels = evaluate_model(model, processor, output_dir=str(tmp_path / "pixels"), **kwargs)
    features = TowerFeatures(model.vision_model, processor.image_processor, layer=2, folder=str(tmp_path / "feats"),
                             show_progress=False)
    cached = evaluate_model(model, processor, output_dir=str(tmp_path / "cached"), tower_features=features, **kwargs)
    from eclip.training.evaluation.report import flatten_metrics

    a, b = flatten_metrics(pixels["tasks"]), flatten_metrics(cached["tasks"])
    assert a.keys() == b.keys()
    for key in a:
        if a[key] is not None:
            assert b[key] == pytest.approx(a[key], abs=0.02), key  # float16 storage may flip a near-tie
    assert len(os.listdir(tmp_path / "feats")) == 4  # test photos, standard, crowded and small scenes: once each
    other = tiny_dinov2_eclip(seed=1)
    with pytest.raises(ValueError, match="differs from the cached tower"):
        evaluate_model(other, processor, output_dir=str(tmp_path / "other"), tower_features=features, **kwargs)


def test_a_build_skips_and_counts_undecodable_images_as_pixel_training_does(tmp_path, caplog):
    """A truncated JPEG and a text file among the photos: their rows are dropped from their batches and counted (in
    the cache and in one line at the end of the build), as the pixel collator drops them; the rest is cached."""
    import logging

    from PIL import Image

    from eclip.training.batch_schedule import ScheduledBatchSampler

    photos = tmp_path / "photos"
    photos.mkdir()
    lines = ["image_path,product_id,title"]
    for index in range(6):
        Image.new("RGB", (40, 40), (40 * index, 255 - 30 * index, 90)).save(photos / f"{index}.jpg")
        lines.append(f"photos/{index}.jpg,{index},Product number {index}")
    good = (photos / "0.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (photos / "notes.txt").write_text("not an image\n")
    # Rows 0 and 4 are the bad ones: the schedule's first batch (seed 0: rows 4 and 0) holds nothing to cache, and the
    # build takes its shapes from the next one.
    lines.insert(1, "photos/truncated.jpg,100,Truncated photo")
    lines.insert(5, "photos/notes.txt,101,Text file")
    (tmp_path / "products.csv").write_text("\n".join(lines) + "\n")
    dataset = load_product_dataset(f"csv:{tmp_path / 'products.csv'}")
    assert len(dataset) == 8

    collator = PretrainingCollator(tiny_processor(IMAGE_SIZE), seed=0, max_length=24)
    model = tiny_dinov2_eclip()
    with caplog.at_level(logging.WARNING):
        cache = FeatureCache.build(str(tmp_path / "cache"), model, collator, dataset, batch_size=2, passes=1, seed=0,
                                   layer=lock_vision_tower(model, 0), show_progress=False)
    assert [sorted(rows) for rows in ScheduledBatchSampler(8, [(0, 2)], num_batches=4, seed=0)][0] == [0, 4]
    batches = [cache.collate([cache[i] for i in rows]) for rows in cache.batch_sampler(cache.num_batches)]
    assert [int(b["image_hidden_states"].shape[0]) for b in batches] == [0, 2, 2, 2]  # every good photo, once
    assert "skipped 2 rows over 1 passes whose image cannot be decoded" in caplog.text
    assert "truncated.jpg" in caplog.text and "notes.txt" in caplog.text  # each named by the collator
