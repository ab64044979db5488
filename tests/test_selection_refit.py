"""The head-only refit of the selection head: the convex fit, its targets, the refit of a real (tiny) model, and
`eclip-pretrain`'s final stage that runs it."""

import os

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, tiny_config, tiny_processor

from modeling_eclip import EclipModel
from eclip.training.selection_refit import fit_selection_head, member_targets, refit_selection_head, selection_objective

torch.set_num_threads(1)


def test_the_fit_recovers_a_planted_head():
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(600, 6, 12, generator=generator)
    planted = torch.randn(1, 12, generator=generator) * 3
    chosen = (states @ planted.T).squeeze(-1).argmax(-1)
    targets = torch.nn.functional.one_hot(chosen, 6).float()
    weight = fit_selection_head(states, targets, weight_decay=1e-4)
    found = (states @ weight.T).squeeze(-1).argmax(-1)
    assert (found == chosen).float().mean() > 0.95
    assert selection_objective(states, targets, weight, 1e-4) < selection_objective(states, targets, planted * 0, 1e-4)
    # Starting from the optimum, the fit stays there.
    again = fit_selection_head(states, targets, initial=weight, weight_decay=1e-4)
    assert selection_objective(states, targets, again, 1e-4) <= selection_objective(states, targets, weight, 1e-4) + 1e-6


def test_the_fit_refuses_mismatched_shapes_and_targets_that_are_not_distributions():
    with pytest.raises(ValueError, match=r"\[N, K, H\]"):
        fit_selection_head(torch.zeros(4, 3), torch.ones(4, 3) / 3)
    with pytest.raises(ValueError, match="distribution"):
        fit_selection_head(torch.zeros(4, 3, 2), torch.ones(4, 3))


def test_targets_spread_over_the_picked_queries_and_an_image_without_one_is_an_error():
    targets = member_targets([[2], [0, 3, 0], [1, 1]], 4)
    np.testing.assert_allclose(targets.numpy(), [[0, 0, 1, 0], [0.5, 0, 0, 0.5], [0, 1, 0, 0]])
    with pytest.raises(ValueError, match="image 1 shows no product"):
        member_targets([[1], []], 4)


def _rows(data_dir, count):
    from eclip.training.fashion import read_fashion_metadata

    return [r for r in read_fashion_metadata(data_dir) if r["split"] == "train"][:count]


def test_refit_changes_only_the_head_and_lowers_its_objective(data_dir):
    torch.manual_seed(0)
    model = EclipModel(tiny_config()).eval()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    stats = refit_selection_head(model, tiny_processor(), _rows(data_dir, 24), scenes=16, photos=16, seed=0)
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert changed == ["instance_decoder.selection_head.weight"]
    assert stats["images"] == 32 and stats["scenes"] == 16 and stats["photos"] == 16
    assert stats["loss_after"] < stats["loss_before"]
    assert 0.0 <= stats["top_query_share"] <= 1.0 and 0.0 <= stats["agreement_after"] <= 1.0
    # The text-conditioned scores do not depend on the head: the instances are unchanged.
    pixel_values = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        refit_instances = model.get_instance_features(pixel_values).instance_embeds
        head = model.instance_decoder.selection_head.weight.detach().clone()
        model.instance_decoder.selection_head.weight.copy_(before["instance_decoder.selection_head.weight"])
        torch.testing.assert_close(model.get_instance_features(pixel_values).instance_embeds, refit_instances)
        assert not torch.equal(head, before["instance_decoder.selection_head.weight"])


def test_refit_needs_the_decoder_and_rows_to_compose(data_dir):
    with pytest.raises(ValueError, match="instance decoder"):
        refit_selection_head(EclipModel(tiny_config(use_instance_decoder=False)), tiny_processor(),
                             _rows(data_dir, 4))
    with pytest.raises(ValueError, match="at least 2 rows"):
        refit_selection_head(EclipModel(tiny_config()), tiny_processor(), _rows(data_dir, 1))


def test_dataset_rows_read_the_training_data_lazily_and_mark_an_undecodable_image():
    """The pretraining data seen as refit rows: titles through the collator's field map, images by path or decoded."""
    from PIL import Image

    from eclip.training.data import PretrainingCollator, load_product_dataset
    from eclip.training.fashion import TITLE_FIELD
    from eclip.training.selection_refit import DatasetRows, usable_rows

    dataset = load_product_dataset("synthetic:6")
    collator = PretrainingCollator(tiny_processor())
    broken = [dict(row) for row in dataset] + [{**dataset[0], "image": {"bytes": b"not an image", "path": None}},
                                               {**dataset[1], "title": "  "}]
    rows = DatasetRows(broken, collator.title)
    assert len(rows) == len(dataset) + 2
    assert rows[0][TITLE_FIELD] == dataset[0]["title"] and isinstance(rows[0]["path"], Image.Image)
    assert rows[-2]["path"] is None and rows[-1][TITLE_FIELD] is None
    kept, skipped = usable_rows(list(rows))
    assert skipped == 2 and [r[TITLE_FIELD] for r in kept] == [row["title"] for row in dataset]


def test_dataset_rows_of_an_imagefolder_keep_paths_and_map_the_fashion_title(data_dir):
    from eclip.training.data import PretrainingCollator, load_product_dataset
    from eclip.training.fashion import TITLE_FIELD
    from eclip.training.selection_refit import DatasetRows

    dataset = load_product_dataset(f"imagefolder:{data_dir}/fashion-products", limit=3)
    rows = DatasetRows(dataset, PretrainingCollator(tiny_processor()).title)
    assert [r[TITLE_FIELD] for r in rows] == [row["productDisplayName"] for row in dataset]
    assert all(isinstance(r["path"], str) and os.path.isfile(r["path"]) for r in rows)


def test_refit_skips_and_counts_rows_it_cannot_use(data_dir, caplog):
    rows = _rows(data_dir, 12) + [{"path": os.path.join(data_dir, "missing.jpg"), "productDisplayName": "Gone"},
                                  {"path": None, "productDisplayName": "Corrupt"}]
    torch.manual_seed(0)
    with caplog.at_level("WARNING", logger="eclip.training.selection_refit"):
        stats = refit_selection_head(EclipModel(tiny_config()), tiny_processor(), rows, scenes=14, photos=14)
    assert stats["skipped_rows"] == 4 and stats["scenes"] == 12 and stats["photos"] == 12
    assert "skipped 4 drawn rows" in caplog.text


def _tiny_pretraining(tmp_path, name, **training):
    from eclip.training.pretrain import load_config

    config = load_config(os.path.join(REPO_ROOT, "training", "configs", "tiny.yaml"))
    config["training"].update(output_dir=str(tmp_path / name), max_steps=2, **training)
    return config


def test_eclip_pretrain_refits_the_selection_head_as_its_last_stage(tmp_path):
    """Same seed, with and without the stage: the saved models differ in the selection head alone, and the card and
    the summary say what the refit did."""
    from safetensors.torch import load_file

    from eclip.training.pretrain import run_pretraining

    plain = run_pretraining(_tiny_pretraining(tmp_path, "plain"))
    refit = run_pretraining(_tiny_pretraining(tmp_path, "refit", selection_refit=True, selection_refit_scenes=24,
                                              selection_refit_photos=16))
    assert plain["selection_refit"] is None
    stats = refit["selection_refit"]
    assert stats["scenes"] == 24 and stats["photos"] == 16 and stats["skipped_rows"] == 0
    assert stats["loss_after"] < stats["loss_before"]
    before, after = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("plain", "refit"))
    assert sorted(before) == sorted(after)
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert changed == ["instance_decoder.selection_head.weight"]
    card = (tmp_path / "refit" / "README.md").read_text()
    assert "selection head: refit alone after training" in card and f"{stats['agreement_after']:.1%}" in card
    assert "selection head" not in (tmp_path / "plain" / "README.md").read_text()


def test_a_streamed_dataset_is_read_again_from_its_start_for_the_refit(tmp_path):
    from eclip.training.pretrain import run_pretraining

    config = _tiny_pretraining(tmp_path, "streamed", selection_refit=True, selection_refit_scenes=10,
                               selection_refit_photos=6)
    config["data"]["streaming"] = True
    stats = run_pretraining(config)["selection_refit"]
    assert stats["scenes"] == 10 and stats["photos"] == 6 and stats["skipped_rows"] == 0
    assert os.path.isfile(tmp_path / "streamed" / "model.safetensors")


def test_the_clip_baseline_skips_the_refit_and_bad_sizes_are_refused(tmp_path, caplog):
    from eclip.training.pretrain import run_pretraining
    from eclip.training.trainer import EclipTrainingArguments

    config = _tiny_pretraining(tmp_path, "clip", selection_refit=True)
    config["model"]["eclip"]["use_instance_decoder"] = False
    with caplog.at_level("WARNING", logger="eclip.training.pretrain"):
        summary = run_pretraining(config)
    assert summary["selection_refit"] is None and "no instance decoder" in caplog.text
    assert os.path.isfile(tmp_path / "clip" / "model.safetensors")
    with pytest.raises(ValueError, match="selection_refit_scenes must be an integer of at least 2"):
        EclipTrainingArguments(output_dir=str(tmp_path / "x"), selection_refit_scenes=1)
    with pytest.raises(ValueError, match="selection_refit_photos"):
        EclipTrainingArguments(output_dir=str(tmp_path / "x"), selection_refit_photos=0)
