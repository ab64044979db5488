"""Task heads: config checks, backbone loading, forward contracts, Auto classes, pipelines, and training on real data."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoProcessor,
    pipeline,
)

from _heads_backbone import IMAGE_SIZE, build_backbone
from conftest import tiny_config
from modeling_eclip import (
    EclipConfig,
    EclipForProductClassification,
    EclipForProductMatching,
    EclipForTokenClassification,
    EclipModel,
)
from eclip.training import finetune_data

torch.set_num_threads(1)

HEADS = (EclipForProductClassification, EclipForTokenClassification, EclipForProductMatching)
BIO = dict(enumerate(finetune_data.BIO_LABELS))


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return build_backbone(str(tmp_path_factory.mktemp("heads")))


def text_inputs(batch=3, length=7, seed=0, suffix=""):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, 2000, (batch, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, length - 2 :] = 0
    return {"input_ids" + suffix: input_ids, "attention_mask" + suffix: attention_mask}


def image_inputs(batch=3, size=32, seed=0, suffix=""):
    generator = torch.Generator().manual_seed(seed)
    return {"pixel_values" + suffix: torch.randn(batch, 3, size, size, generator=generator)}


def run_cli(args):
    from eclip.training.finetune import main

    assert main([str(a) for a in args]) == 0
    with open(os.path.join(args[args.index("--output-dir") + 1], "test_metrics.json")) as handle:
        return json.load(handle)


# ---------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"modality": "audio"}, "modality"),
        ({"num_labels": 3, "id2label": {0: "a", 1: "b"}}, "num_labels"),
        ({"num_labels": 0}, "num_labels"),
        ({"classifier_dropout": 1.0}, "classifier_dropout"),
        ({"matching_features": ["u", "cosine"]}, "matching_features"),
        ({"matching_features": []}, "matching_features"),
        ({"matching_hidden_size": 0}, "matching_hidden_size"),
        ({"problem_type": "ranking"}, "problem_type"),
    ],
)
def test_bad_head_config_is_a_clear_error(kwargs, field):
    with pytest.raises(ValueError, match=f"EclipConfig.{field}"):
        EclipConfig(**kwargs)


def test_bad_head_fields_given_to_from_pretrained_are_caught(tmp_path):
    EclipModel(tiny_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="EclipConfig.modality"):
        EclipForProductClassification.from_pretrained(tmp_path, modality="video")
    with pytest.raises(ValueError, match="EclipConfig.num_labels"):
        EclipForProductClassification.from_pretrained(tmp_path, num_labels=3, id2label={0: "a", 1: "b"})


def test_relabelling_a_saved_head(tmp_path):
    head = EclipForProductClassification(tiny_config(id2label={0: "a", 1: "b", 2: "c"}, modality="text"))
    head.save_pretrained(tmp_path)
    relabelled = EclipForProductClassification.from_pretrained(
        tmp_path, num_labels=2, id2label={0: "x", 1: "y"}, ignore_mismatched_sizes=True
    )
    assert relabelled.config.id2label == {0: "x", 1: "y"} and relabelled.config.label2id == {"x": 0, "y": 1}
    assert relabelled.classifier.out_features == 2


# ---------------------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("head_class", HEADS, ids=lambda c: c.__name__)
def test_backbone_weights_load_and_head_is_new(backbone, head_class):
    reference = EclipModel.from_pretrained(backbone).state_dict()
    head, info = head_class.from_pretrained(backbone, modality="text", output_loading_info=True, **(
        {"id2label": BIO} if head_class is EclipForTokenClassification else {"num_labels": 5}))
    state = head.state_dict()
    backbone_keys = {k for k in state if k.startswith("eclip.")}
    assert backbone_keys == {"eclip." + k for k in reference}
    for key, tensor in reference.items():
        assert torch.equal(state["eclip." + key], tensor), key
    head_keys = sorted(set(state) - backbone_keys)
    assert head_keys and sorted(info["missing_keys"]) == head_keys and not info["unexpected_keys"]
    for key in head_keys:  # newly initialised by _init_weights: N(0, initializer_range) weights, zero biases
        if key.endswith("bias"):
            assert torch.count_nonzero(state[key]) == 0
        else:
            assert 0.01 < state[key].std().item() < 0.03, key


def test_auto_model_on_a_head_folder_gives_the_backbone(backbone, tmp_path):
    head = EclipForProductClassification.from_pretrained(backbone, num_labels=4, modality="text")
    head.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is EclipModel
    for key, tensor in base.state_dict().items():
        assert torch.equal(tensor, head.state_dict()["eclip." + key])


# ---------------------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("modality", ["image", "text", "both"])
def test_classifier_forward_per_modality(modality):
    torch.manual_seed(0)
    model = EclipForProductClassification(tiny_config(num_labels=5, modality=modality)).eval()
    inputs = {}
    if modality != "text":
        inputs.update(image_inputs())
    if modality != "image":
        inputs.update(text_inputs())
    out = model(**inputs, labels=torch.tensor([0, 3, 4]))
    assert out.logits.shape == (3, 5) and out.loss.ndim == 0
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 3, 4])))
    for embeds, used in ((out.image_embeds, modality != "text"), (out.text_embeds, modality != "image")):
        assert (embeds is not None) == used
        if used:
            torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(3))
    assert model.classifier.in_features == 16 * (2 if modality == "both" else 1)
    # return_dict=False gives the same numbers as a tuple
    assert torch.equal(model(**inputs, return_dict=False)[0], out.logits)
    # the modality's input is required, with an error that says which
    missing = "pixel_values" if modality != "text" else "input_ids"
    with pytest.raises(ValueError, match=missing):
        model(**{k: v for k, v in inputs.items() if not k.startswith(missing)})


def test_classifier_problem_types():
    torch.manual_seed(0)
    inputs = text_inputs()
    multi = EclipForProductClassification(tiny_config(num_labels=3, modality="text", problem_type="multi_label_classification"))
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    out = multi(**inputs, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets))
    # one logit: binary (sigmoid + BCE), as for restricted-product recognition, unless problem_type says regression
    binary = EclipForProductClassification(tiny_config(num_labels=1, modality="text"))
    flags = torch.tensor([1.0, 0.0, 1.0])
    out = binary(**inputs, labels=flags)
    assert out.logits.shape == (3, 1)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits[:, 0], flags))
    regression = EclipForProductClassification(tiny_config(num_labels=1, modality="text", problem_type="regression"))
    out = regression(**inputs, labels=flags)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits[:, 0], flags))


def test_full_fine_tuning_reaches_every_used_parameter():
    torch.manual_seed(0)
    model = EclipForProductClassification(tiny_config(num_labels=2, modality="both")).train()
    model(**image_inputs(), **text_inputs(), labels=torch.tensor([0, 1, 1])).loss.backward()
    # The head reads the text-free image embedding (the instance decoder's), so what only the global embedding g
    # and the ITC use gets no gradient: the pooled-token norm, the visual projection and the logit scale.
    unused = {"eclip.logit_scale", "eclip.visual_projection.weight", "eclip.vision_model.post_layernorm.weight",
              "eclip.vision_model.post_layernorm.bias"}
    no_grad = [n for n, p in model.named_parameters() if p.grad is None and n not in unused]
    assert not no_grad, no_grad


def test_token_classifier_forward_and_loss():
    torch.manual_seed(0)
    model = EclipForTokenClassification(tiny_config(id2label=BIO)).eval()
    inputs = text_inputs(length=9)
    labels = torch.randint(0, len(BIO), (3, 9))
    labels[:, 0] = -100
    labels[-1, 7:] = -100
    out = model(**inputs, labels=labels, output_hidden_states=True)
    assert out.logits.shape == (3, 9, len(BIO)) and len(out.hidden_states) == 3
    keep = labels != -100
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits[keep], labels[keep]))
    with pytest.raises(ValueError, match="input_ids"):
        model(attention_mask=inputs["attention_mask"])


@pytest.mark.parametrize("modality", ["image", "text", "both"])
def test_matching_forward_and_loss(modality):
    torch.manual_seed(0)
    model = EclipForProductMatching(tiny_config(modality=modality)).eval()
    inputs = {}
    for suffix, seed in (("", 0), ("_b", 1)):
        if modality != "text":
            inputs.update(image_inputs(seed=seed, suffix=suffix))
        if modality != "image":
            inputs.update(text_inputs(seed=seed, suffix=suffix))
    labels = torch.tensor([1.0, 0.0, 1.0])
    out = model(**inputs, labels=labels)
    assert out.logits.shape == (3,)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels))
    width = 16 * (2 if modality == "both" else 1)
    assert out.embeds_a.shape == out.embeds_b.shape == (3, width)
    assert model.matcher[1].in_features == 4 * width
    with pytest.raises(ValueError, match="_b"):
        model(**{k: v for k, v in inputs.items() if not k.endswith("_b")})


def test_matching_features_are_configurable():
    model = EclipForProductMatching(tiny_config(modality="text", matching_features=["abs_diff", "product"],
                                                matching_hidden_size=8))
    assert model.matcher[1].in_features == 2 * 16 and model.matcher[1].out_features == 8
    assert model(**text_inputs(), **text_inputs(seed=1, suffix="_b")).logits.shape == (3,)


# ---------------------------------------------------------------------------------------------------- Hub
def test_save_load_through_auto_classes(tmp_path):
    torch.manual_seed(0)
    inputs = {**image_inputs(), **text_inputs()}
    cases = [
        (EclipForProductClassification(tiny_config(num_labels=3, modality="both")),
         (AutoModelForImageClassification, AutoModelForSequenceClassification)),
        (EclipForTokenClassification(tiny_config(id2label=BIO)), (AutoModelForTokenClassification,)),
        (EclipForProductMatching(tiny_config(modality="both")), ()),
    ]
    for model, auto_classes in cases:
        folder = tmp_path / type(model).__name__
        model.eval().save_pretrained(folder)
        files = set(os.listdir(folder))
        assert {"model.safetensors", "config.json", "modeling_eclip.py", "configuration_eclip.py"} <= files
        assert not any(f.endswith(".bin") for f in files)
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        assert auto_map["AutoModel"] == "modeling_eclip.EclipModel"
        head_entries = {k for k, v in auto_map.items() if v.endswith(type(model).__name__)}
        assert head_entries == {c.__name__ for c in auto_classes}
        call = inputs if type(model) is not EclipForProductMatching else {
            **inputs, **image_inputs(seed=1, suffix="_b"), **text_inputs(seed=1, suffix="_b")}
        if type(model) is EclipForTokenClassification:
            call = text_inputs()
        with torch.no_grad():
            expected = model(**call).logits
        for loader in auto_classes or (type(model),):
            loaded = loader.from_pretrained(folder).eval()
            assert type(loaded) is type(model)
            with torch.no_grad():
                torch.testing.assert_close(loaded(**call).logits, expected, atol=1e-6, rtol=1e-6)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("modeling_eclip", "training"):
                raise ImportError("blocked " + name)
    sys.meta_path.insert(0, Block())
    import torch
    from transformers import AutoModelForImageClassification
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    classifier = AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    matcher_class = get_class_from_dynamic_module("modeling_eclip.EclipForProductMatching", sys.argv[2])
    matcher = matcher_class.from_pretrained(sys.argv[2]).eval()
    cross = get_class_from_dynamic_module("modeling_eclip.EclipForProductMatching", sys.argv[3])
    cross = cross.from_pretrained(sys.argv[3]).eval()
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.randint(1000, 2000, (2, 5))
    with torch.no_grad():
        print(json.dumps({"classes": [type(classifier).__module__, type(matcher).__module__, type(cross).__module__],
                          "logits": classifier(pixel_values=pixels).logits.tolist(),
                          "match": matcher(input_ids=ids, input_ids_b=ids.flip(0)).logits.tolist(),
                          "cross": [cross.config.matching_mode, cross(input_ids=ids).logits.tolist()]}))
    """
)


@pytest.mark.slow
def test_heads_load_with_trust_remote_code_without_the_package(tmp_path):
    torch.manual_seed(0)
    classifier = EclipForProductClassification(tiny_config(num_labels=3, modality="image")).eval()
    matcher = EclipForProductMatching(tiny_config(modality="text")).eval()
    cross = EclipForProductMatching(tiny_config(modality="text", matching_mode="cross_encoder")).eval()
    classifier.save_pretrained(tmp_path / "classifier")
    matcher.save_pretrained(tmp_path / "matcher")
    cross.save_pretrained(tmp_path / "cross")
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    folders = [str(tmp_path / name) for name in ("classifier", "matcher", "cross")]
    result = subprocess.run([sys.executable, str(script), *folders],
                            capture_output=True, text=True, env=env, timeout=300, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(module.startswith("transformers_modules.") for module in report["classes"])
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.randint(1000, 2000, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(report["logits"]), classifier(pixel_values=pixels).logits)
        torch.testing.assert_close(torch.tensor(report["match"]), matcher(input_ids=ids, input_ids_b=ids.flip(0)).logits)
        assert report["cross"][0] == "cross_encoder"
        torch.testing.assert_close(torch.tensor(report["cross"][1]), cross(input_ids=ids).logits)


def test_image_classification_pipeline(backbone, tmp_path):
    labels = {0: "Apparel", 1: "Footwear", 2: "Accessories"}
    model = EclipForProductClassification.from_pretrained(backbone, id2label=labels, modality="image").eval()
    model.save_pretrained(tmp_path)
    AutoProcessor.from_pretrained(backbone).save_pretrained(tmp_path)
    classifier = pipeline("image-classification", model=str(tmp_path))
    assert type(classifier.model) is EclipForProductClassification
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (80, 60, 3), dtype=np.uint8)) for i in range(2)]
    results = classifier(images, top_k=3)
    assert len(results) == 2
    for image, result in zip(images, results):
        assert {r["label"] for r in result} == set(labels.values())
        assert abs(sum(r["score"] for r in result) - 1.0) < 1e-5
        pixel_values = AutoProcessor.from_pretrained(backbone)(images=image, return_tensors="pt")["pixel_values"]
        assert pixel_values.shape[-1] == IMAGE_SIZE
        with torch.no_grad():
            probs = model(pixel_values=pixel_values).logits.softmax(-1)[0]
        got = {r["label"]: r["score"] for r in result}
        torch.testing.assert_close(torch.tensor([got[labels[i]] for i in range(3)]), probs, atol=1e-5, rtol=1e-4)


def test_text_classification_pipeline(backbone, tmp_path):
    labels = {0: "other", 1: "restricted"}
    model = EclipForProductClassification.from_pretrained(backbone, id2label=labels, modality="text").eval()
    model.save_pretrained(tmp_path)
    AutoProcessor.from_pretrained(backbone).save_pretrained(tmp_path)
    classifier = pipeline("text-classification", model=str(tmp_path))
    titles = ["Jockey Men Black Trunk", "Nike Men Blue Running Shoes"]
    results = classifier(titles, top_k=None)
    assert [len(r) for r in results] == [2, 2]
    tokenizer = AutoProcessor.from_pretrained(backbone).tokenizer
    with torch.no_grad():
        probs = model(**tokenizer(titles, padding=True, return_tensors="pt")).logits.softmax(-1)
    for result, expected in zip(results, probs):
        got = {r["label"]: r["score"] for r in result}
        torch.testing.assert_close(torch.tensor([got["other"], got["restricted"]]), expected, atol=1e-5, rtol=1e-4)
    # one logit: the pipeline applies a sigmoid and names the one label
    binary = EclipForProductClassification.from_pretrained(backbone, id2label={0: "restricted"}, modality="text")
    binary.save_pretrained(tmp_path / "binary")
    AutoProcessor.from_pretrained(backbone).save_pretrained(tmp_path / "binary")
    result = pipeline("text-classification", model=str(tmp_path / "binary"))("Jockey Men Black Trunk")
    assert result[0]["label"] == "restricted" and 0.0 < result[0]["score"] < 1.0


def test_token_classification_pipeline(backbone, tmp_path):
    model = EclipForTokenClassification.from_pretrained(backbone, id2label=BIO).eval()
    model.save_pretrained(tmp_path)
    AutoProcessor.from_pretrained(backbone).save_pretrained(tmp_path)
    title = "Spykar Men Stripes Grey Sweaters"
    tagger = pipeline("token-classification", model=str(tmp_path), aggregation_strategy="none")
    assert type(tagger.model) is EclipForTokenClassification
    entities = tagger(title, ignore_labels=[])
    tokenizer = AutoProcessor.from_pretrained(backbone).tokenizer
    assert len(entities) == len(tokenizer(title)["input_ids"]) - 2  # every word piece, no special tokens
    for entity in entities:
        assert entity["entity"] in BIO.values() and 0.0 < entity["score"] <= 1.0
        assert title[entity["start"] : entity["end"]].lower() == entity["word"].lstrip("#").lower()
    grouped = pipeline("token-classification", model=str(tmp_path), aggregation_strategy="first")(title)
    assert all(g["entity_group"] in finetune_data.ENTITY_TYPES for g in grouped)


# ---------------------------------------------------------------------------------------------------- data rules
def test_bio_tag_rule():
    assert finetune_data.bio_tags("Spykar Men Stripes Grey Sweaters", "Men", "Grey", "Sweaters") == (
        ["Spykar", "Men", "Stripes", "Grey", "Sweaters"], ["B-BRAND", "B-GENDER", "O", "B-COLOUR", "B-TYPE"])
    words, tags = finetune_data.bio_tags("Flying Machine Men's Navy Blue Casual Shoes", "Men", "Navy Blue", "Casual Shoes")
    assert tags == ["B-BRAND", "I-BRAND", "B-GENDER", "B-COLOUR", "I-COLOUR", "B-TYPE", "I-TYPE"]
    # no gender word: the first word is the brand; singular article type; a colour inside another word is no match
    assert finetune_data.bio_tags("Lakme Absolute Redness Kurta", "Women", "Red", "Kurtas")[1] == [
        "B-BRAND", "O", "O", "B-TYPE"]
    # the gender word first: no brand
    assert finetune_data.bio_tags("Men Black Watch", "Men", "Black", "Watches")[1] == ["B-GENDER", "B-COLOUR", "B-TYPE"]


# ---------------------------------------------------------------------------------------------------- training
def test_category_head_learns_from_real_titles(backbone, data_dir, tmp_path):
    report = run_cli(["--task", "category", "--label-column", "masterCategory", "--model", backbone, "--data", data_dir,
                      "--modality", "text", "--limit", 200, "--max-steps", 30, "--batch-size", 16,
                      "--freeze-backbone", "--head-learning-rate", 3e-3, "--max-length", 32,
                      "--output-dir", tmp_path / "out"])
    assert report["rows"]["test"] >= 150 and report["steps"] == 30
    assert report["test"]["accuracy"] > report["baseline"]["accuracy"] + 0.15, report
    assert report["test"]["macro_f1"] > report["baseline"]["macro_f1"] + 0.2, report
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert set(reloaded.config.id2label.values()) >= {"Apparel", "Footwear", "Accessories"}


def test_attribute_tagger_learns_from_real_titles(backbone, data_dir, tmp_path):
    report = run_cli(["--task", "attributes", "--model", backbone, "--data", data_dir, "--limit", 200,
                      "--max-steps", 25, "--batch-size", 16, "--freeze-backbone", "--max-length", 32,
                      "--output-dir", tmp_path / "out"])
    assert report["baseline"]["f1"] == 0.0
    assert report["test"]["f1"] > 0.3, report["test"]
    assert report["test"]["per_type"]["GENDER"]["f1"] > 0.5, report["test"]["per_type"]
    tagger = pipeline("token-classification", model=str(tmp_path / "out"), aggregation_strategy="first")
    assert {g["entity_group"] for g in tagger("Puma Men Black Sports Shoes")} <= set(finetune_data.ENTITY_TYPES)


@pytest.mark.slow
def test_matching_head_learns_from_real_pairs(backbone, data_dir, tmp_path):
    report = run_cli(["--task", "matching", "--matching-datasets", "abt-buy", "--model", backbone,
                      "--data", data_dir, "--limit", 400, "--max-steps", 60, "--batch-size", 16,
                      "--freeze-backbone", "--head-learning-rate", 3e-3, "--max-length", 32,
                      "--output-dir", tmp_path / "out"])
    test, baseline = report["test"]["abt-buy"], report["baseline"]["abt-buy"]
    assert report["test"]["all"]["f1"] == test["f1"]  # one benchmark: "all" is that benchmark
    assert test["roc_auc"] > 0.65, test
    assert test["f1"] > baseline["f1"] + 0.05, (test, baseline)
    assert 0.0 <= test["threshold"] <= 1.0 and "recall_at_precision" in test
    EclipForProductMatching.from_pretrained(tmp_path / "out")


@pytest.mark.slow
def test_restricted_image_run_end_to_end(backbone, data_dir, tmp_path):
    # Full fine-tuning of an image head on real photos: a smoke run (a random tiny ViT learns nothing in 2 steps).
    # Innerwear is ~3 % of the catalogue: 120 rows per split (seed 0) is the smallest limit tried whose every split
    # holds it (train 2, validation 1, test 5), so the metrics are computed, never the one-class error.
    report = run_cli(["--task", "restricted", "--model", backbone, "--data", data_dir, "--limit", 120,
                      "--max-steps", 2, "--batch-size", 4, "--output-dir", tmp_path / "out"])
    assert report["modality"] == "image" and report["trainable_parameters"] == report["total_parameters"]
    assert report["rows"] == {"train": 120, "validation": 120, "test": 120}
    test, baseline = report["test"], report["baseline"]
    assert "error" not in test, test
    assert 0.0 <= test["roc_auc"] <= 1.0 and 0.0 <= test["recall_at_precision"] <= 1.0
    assert 0.0 <= test["threshold"] <= 1.0
    assert baseline["rule"] == "always restricted (constant score)" and baseline["roc_auc"] == 0.5
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out")
    assert model.config.id2label == {0: "restricted"} and model.config.problem_type == "multi_label_classification"


# ------------------------------------------------------------------------------------------- undecodable images
def test_classification_collator_and_predict_leave_out_undecodable_images(processor, tmp_path):
    """A truncated JPEG and a text file: the collator drops their rows (listed with why) or, asked to, refuses the
    first with an error naming it; `predict` returns the other rows' logits and labels, aligned, in dataset order."""
    import datasets

    from eclip.training.evaluation.images import SkippedImages, UnreadableImage
    from eclip.training.finetune import SKIPPED_KEY, ClassificationCollator, predict

    paths = []
    for index in range(4):
        Image.new("RGB", (40, 40), (60 * index, 90, 200 - 40 * index)).save(tmp_path / f"{index}.jpg")
        paths.append(str(tmp_path / f"{index}.jpg"))
    good = (tmp_path / "0.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "notes.txt").write_text("not an image\n")
    order = [paths[0], str(tmp_path / "truncated.jpg"), paths[1], paths[2], str(tmp_path / "notes.txt"), paths[3]]
    dataset = datasets.Dataset.from_dict(
        {"image": [{"bytes": None, "path": p} for p in order], "labels": [0, 1, 2, 3, 4, 5]},
        features=datasets.Features({"image": datasets.Image(decode=False), "labels": datasets.Value("int64")}),
    )

    collator = ClassificationCollator(processor, "image", 16)
    batch = collator([dataset[i] for i in range(3)])
    assert batch["pixel_values"].shape[0] == 2 and batch["labels"].tolist() == [0, 2]
    assert batch[SKIPPED_KEY] == [(1, str(tmp_path / "truncated.jpg"), "truncated")]
    empty = collator([dataset[1], dataset[4]])
    assert empty["labels"].shape == (0,) and [why for _, _, why in empty[SKIPPED_KEY]] == ["truncated", "not an image"]
    with pytest.raises(UnreadableImage, match=r"truncated\.jpg cannot be decoded \(truncated\)"):
        ClassificationCollator(processor, "image", 16, on_bad_image="error")([dataset[i] for i in range(3)])

    class Echo(torch.nn.Module):  # logits: the mean pixel, so each row's logit is its own image's
        def forward(self, pixel_values):
            return type("Output", (), {"logits": pixel_values.mean(dim=(1, 2, 3))[:, None]})()

    echo = Echo()
    echo.dummy = torch.nn.Parameter(torch.zeros(1))
    skipped = SkippedImages(str(tmp_path))
    (logits,), (labels,) = predict(echo, dataset, collator, batch_size=2, skipped=skipped, split="test")
    assert labels.tolist() == [0, 2, 3, 5]
    alone = [predict(echo, dataset.select([i]), collator, batch_size=1)[0][0][0, 0] for i in (0, 2, 3, 5)]
    np.testing.assert_allclose(logits[:, 0], alone, rtol=1e-6)
    assert skipped.summary() == ("skipped 2 unreadable images (test 2) in " + str(tmp_path)
                                 + ": truncated.jpg (truncated), notes.txt (not an image)")
