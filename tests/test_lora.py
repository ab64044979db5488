"""LoRA adapters (training/lora.py): default targets, what trains, adapter size, reload and merge equivalence."""

import contextlib
import json
import os
import re

import numpy as np
import pytest
import torch
from peft import PeftModel
from PIL import Image
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoProcessor, pipeline

from _heads_backbone import build_backbone
from conftest import tiny_config
from modeling_eclip import (
    EclipForProductClassification,
    EclipForProductMatching,
    EclipForTokenClassification,
    EclipModel,
)
from eclip.training.lora import (
    apply_lora,
    default_lora_targets,
    default_modules_to_save,
    load_adapter,
    parse_lora_spec,
    save_adapter,
)

torch.set_num_threads(1)

TITLES = ["Spykar Men Stripes Grey Sweaters", "Jockey Men Black Trunk", "Nike Women Pink Running Shoes",
          "Fastrack Unisex Black Watch"]
QUERIES = "eclip.instance_decoder.queries.embedding"


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return build_backbone(str(tmp_path_factory.mktemp("lora")))


@pytest.fixture(scope="module")
def processor(backbone):
    return AutoProcessor.from_pretrained(backbone)


def inputs_for(processor, modality, seed=0):
    inputs = {}
    if modality != "image":
        inputs.update(processor.tokenizer(TITLES, padding=True, return_tensors="pt"))
    if modality != "text":
        rng = np.random.default_rng(seed)
        images = [Image.fromarray(rng.integers(0, 255, (70, 70, 3), dtype=np.uint8)) for _ in TITLES]
        inputs["pixel_values"] = processor(images=images, return_tensors="pt")["pixel_values"]
    return inputs


def train_steps(model, inputs, labels, steps=3, lr=1e-2):
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def folder_bytes(folder, suffix=".safetensors"):
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(suffix))


# ---------------------------------------------------------------------------------------------------- targets
def test_default_targets_follow_the_towers_the_head_uses(backbone):
    def targets(model):
        names = default_lora_targets(model)
        modules = dict(model.named_modules())
        assert names and len(set(names)) == len(names)
        assert all(isinstance(modules[n], torch.nn.Linear) for n in names)  # real module names, Linear only
        return names

    text = targets(EclipForProductClassification.from_pretrained(backbone, num_labels=2, modality="text"))
    # MiniLM (BERT, 6 layers): query, key, value and the attention output projection of every layer
    assert len(text) == 24 and all(n.startswith("eclip.text_model.") for n in text)
    assert {n.split(".", 5)[-1] for n in text} == {
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"}
    assert not any("intermediate" in n or n.endswith("output.dense") and "attention" not in n for n in text)

    image = targets(EclipForProductClassification.from_pretrained(backbone, num_labels=2, modality="image"))
    vision = [n for n in image if n.startswith("eclip.vision_model.")]
    decoder = [n for n in image if n.startswith("eclip.instance_decoder.")]
    assert len(vision) == 2 * 4 and len(decoder) == 1 * 2 * 4 and len(image) == 16  # CLIP: 2 layers; decoder: 1
    assert {n.rsplit(".", 1)[-1] for n in vision} == {"q_proj", "k_proj", "v_proj", "out_proj"}
    assert {n.rsplit(".", 1)[-1] for n in decoder} == {"q_proj", "k_proj", "v_proj", "o_proj"}

    both = targets(EclipForProductClassification.from_pretrained(backbone, num_labels=2, modality="both"))
    assert sorted(both) == sorted(text + image)
    assert sorted(targets(EclipForTokenClassification.from_pretrained(backbone, num_labels=3))) == sorted(text)
    assert sorted(targets(EclipForProductMatching.from_pretrained(backbone, modality="text"))) == sorted(text)
    assert sorted(targets(EclipModel.from_pretrained(backbone))) == sorted(n.removeprefix("eclip.") for n in both)


def test_default_modules_to_save(backbone):
    def saved(head_class, **kwargs):
        return default_modules_to_save(head_class.from_pretrained(backbone, **kwargs))

    assert saved(EclipForProductClassification, num_labels=2, modality="text") == ["classifier"]
    assert saved(EclipForProductClassification, num_labels=2, modality="image") == ["classifier", QUERIES]
    assert saved(EclipForTokenClassification, num_labels=3) == ["classifier"]
    assert saved(EclipForProductMatching, modality="both") == ["matcher", QUERIES]


@pytest.mark.parametrize(
    "vision_type, expected",
    [
        ("vit", {"attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"}),
        ("data2vec-vision", {"attention.attention.query", "attention.attention.key", "attention.attention.value",
                             "attention.output.dense"}),
        ("swin", None),  # not in the table: the generic names still find its projections
    ],
)
def test_other_vision_tower_targets(vision_type, expected):
    vision = dict(model_type=vision_type, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, image_size=32, patch_size=8)
    if vision_type == "swin":
        vision = dict(model_type="swin", embed_dim=16, depths=[1, 1], num_heads=[2, 2], image_size=32, patch_size=4,
                      window_size=4)
    config = tiny_config(vision_config=vision, vision_pooling="mean", num_labels=2, modality="image")
    model = EclipForProductClassification(config)
    names = [n for n in default_lora_targets(model) if n.startswith("eclip.vision_model.")]
    assert names
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], torch.nn.Linear) for n in names)
    if expected is not None:
        suffixes = {re.sub(r"^.*?\.\d+\.", "", n) for n in names}  # what follows the layer index
        assert suffixes == expected, names
        assert len(names) == 2 * 4
    else:
        assert {n.rsplit(".", 1)[-1] for n in names} >= {"q_proj", "k_proj", "v_proj"}
        assert not any("mlp" in n or "intermediate" in n for n in names)


def test_parse_lora_spec():
    assert parse_lora_spec("") == {"r": 16, "alpha": 32, "dropout": 0.05, "targets": None}
    assert parse_lora_spec("r=4,alpha=8,dropout=0,targets=query,value") == {
        "r": 4, "alpha": 8.0, "dropout": 0.0, "targets": ["query", "value"]}
    for bad in ("r=0", "rank=4", "query", "dropout=1", "targets="):
        with pytest.raises(ValueError, match="--lora"):
            parse_lora_spec(bad)


# ---------------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("modality", ["text", "both"])
def test_only_adapters_and_head_train(backbone, modality):
    model = EclipForProductClassification.from_pretrained(backbone, num_labels=3, modality=modality)
    r = 4
    targets = default_lora_targets(model)
    modules = dict(model.named_modules())
    expected = sum(r * (modules[n].in_features + modules[n].out_features) for n in targets)
    expected += sum(p.numel() for p in model.classifier.parameters())
    if modality != "text":
        expected += modules[QUERIES].weight.numel()
    total_before = sum(p.numel() for p in model.parameters())

    peft_model = apply_lora(model, r=r, alpha=8, dropout=0.0)
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in trainable.values()) == expected
    assert all("lora_A" in n or "lora_B" in n or ".modules_to_save.default." in n for n in trainable)
    saved_copies = {n.split(".modules_to_save")[0].removeprefix("base_model.model.") for n in trainable
                    if "modules_to_save" in n}
    assert saved_copies == ({"classifier"} if modality == "text" else {"classifier", QUERIES})
    assert len([n for n in trainable if "lora_A" in n]) == len(targets)
    # everything else (the whole backbone, the original head copies) is frozen
    frozen = sum(p.numel() for p in peft_model.parameters() if not p.requires_grad)
    assert frozen == total_before


@pytest.mark.parametrize("modality", ["text", "both"])
def test_adapter_is_small_and_reloads_and_merges_exactly(backbone, processor, modality, tmp_path):
    torch.manual_seed(0)
    base = EclipForProductClassification.from_pretrained(backbone, num_labels=3, modality=modality)
    base.save_pretrained(tmp_path / "full")
    peft_model = apply_lora(base, r=8, alpha=16, dropout=0.05)
    queries_before = peft_model.get_base_model().eclip.instance_decoder.queries.embedding.weight.detach().clone()
    inputs = inputs_for(processor, modality)
    train_steps(peft_model, inputs, torch.tensor([0, 1, 2, 1]))
    assert any(p.abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)  # adapters moved
    queries = peft_model.get_base_model().eclip.instance_decoder.queries.embedding
    if modality == "both":  # the queries train (their modules_to_save copy), the original stays
        assert not torch.equal(queries.modules_to_save["default"].weight, queries_before)
        assert torch.equal(queries.original_module.weight, queries_before)
    with torch.no_grad():
        expected = peft_model(**inputs).logits

    adapter = tmp_path / "adapter"
    save_adapter(peft_model, str(adapter))
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json"} <= set(os.listdir(adapter))
    assert folder_bytes(adapter) < 0.05 * folder_bytes(tmp_path / "full")  # adapter + head, not the backbone
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == backbone

    # the documented recipe: the head from the base checkpoint with the saved head config, then the adapter
    config = AutoConfig.from_pretrained(adapter)
    reloaded_base = AutoModelForSequenceClassification.from_pretrained(backbone, config=config)
    reloaded = PeftModel.from_pretrained(reloaded_base, str(adapter)).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(load_adapter(str(adapter)).eval()(**inputs).logits, expected, atol=1e-5, rtol=0)

    merged = reloaded.merge_and_unload()
    assert type(merged) is EclipForProductClassification
    assert not any("lora_" in n or "modules_to_save" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, expected, atol=1e-5, rtol=0)
    merged.save_pretrained(tmp_path / "merged")
    with torch.no_grad():
        again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()(**inputs).logits
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("modality", ["text", "both"])
def test_loading_an_adapter_reports_only_what_it_does_not_restore(backbone, modality, tmp_path):
    """The base checkpoint has no head and the adapter restores it (modules_to_save): `load_adapter` must not report
    the head as newly initialised. A head weight the adapter lacks is still reported."""
    from safetensors.torch import load_file, save_file

    from _load_reports import load_reports
    from modeling_eclip.loading_utils import weights_restored_by_adapter

    torch.manual_seed(0)
    peft_model = apply_lora(EclipForProductClassification.from_pretrained(backbone, num_labels=3, modality=modality),
                            r=4, alpha=8)
    adapter = tmp_path / "adapter"
    save_adapter(peft_model, str(adapter))
    expected = ["classifier.bias", "classifier.weight"] + ([QUERIES + ".weight"] if modality == "both" else [])
    assert weights_restored_by_adapter(str(adapter), {}) == sorted(expected)
    with load_reports() as reports:
        loaded = load_adapter(str(adapter))
    assert reports == []
    with load_reports() as reports:  # the Auto class (and so the pipelines) reads the adapter folder the same way
        auto = AutoModelForSequenceClassification.from_pretrained(str(adapter))
    assert reports == [] and type(auto) is EclipForProductClassification
    with load_reports() as reports:  # a head with nothing to restore it is still reported as new
        EclipForProductClassification.from_pretrained(backbone, num_labels=3, modality=modality)
    assert len(reports) == 1 and "classifier.weight" in reports[0] and "MISSING" in reports[0]
    assert type(loaded.get_base_model()) is EclipForProductClassification
    torch.testing.assert_close(loaded.get_base_model().classifier.modules_to_save["default"].weight,
                               peft_model.get_base_model().classifier.modules_to_save["default"].weight)

    weights = load_file(adapter / "adapter_model.safetensors")
    del weights["base_model.model.classifier.bias"]  # a broken adapter: this one is really missing
    save_file(weights, adapter / "adapter_model.safetensors", metadata={"format": "pt"})
    with load_reports() as reports, contextlib.suppress(KeyError):  # peft then refuses the broken adapter
        load_adapter(str(adapter))
    assert len(reports) == 1 and "classifier.bias" in reports[0] and "MISSING" in reports[0]
    assert "classifier.weight" not in reports[0]
    with load_reports() as reports, contextlib.suppress(KeyError):
        AutoModelForSequenceClassification.from_pretrained(str(adapter))
    assert len(reports) == 1 and "classifier.bias" in reports[0] and "classifier.weight" not in reports[0]


@pytest.mark.slow
def test_lora_cli_learns_and_writes_adapter_and_merged_model(backbone, data_dir, tmp_path):
    from eclip.training.finetune import main

    out = tmp_path / "out"
    assert main(["--task", "category", "--label-column", "masterCategory", "--model", backbone, "--data", data_dir,
                 "--modality", "text", "--lora", "r=8,alpha=16,dropout=0.05", "--merge-lora", "--limit", "200",
                 "--max-steps", "30", "--batch-size", "16", "--head-learning-rate", "3e-3", "--max-length", "32",
                 "--output-dir", str(out)]) == 0
    report = json.loads((out / "test_metrics.json").read_text())
    assert report["lora"] == {"r": 8, "alpha": 16.0, "dropout": 0.05, "targets": None}
    assert report["trainable_parameters"] < 0.05 * report["total_parameters"]
    assert report["test"]["accuracy"] > report["baseline"]["accuracy"] + 0.15, report
    assert folder_bytes(out) < 0.05 * folder_bytes(out / "merged")
    # the merged folder is a plain head that the pipeline loads; it agrees with base + adapter
    classifier = pipeline("text-classification", model=str(out / "merged"))
    assert type(classifier.model) is EclipForProductClassification
    labels = set(classifier.model.config.id2label.values())
    results = classifier(TITLES)
    assert all(r["label"] in labels for r in results)
    tokens = AutoProcessor.from_pretrained(out).tokenizer(TITLES, padding=True, return_tensors="pt")
    with torch.no_grad():
        adapted = load_adapter(str(out)).eval()(**tokens).logits
        merged = classifier.model.eval()(**tokens).logits
    torch.testing.assert_close(adapted, merged, atol=1e-5, rtol=0)
    assert [classifier.model.config.id2label[i] for i in merged.argmax(-1).tolist()] == [r["label"] for r in results]
    assert classifier(["Puma Men Black Sports Shoes"])[0]["label"] == "Footwear"
