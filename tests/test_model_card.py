"""Model cards (model_cards/card.py): template filled from config + results, model-index round trip, atomic write."""

import os

import pytest
from huggingface_hub import ModelCard

from conftest import tiny_config
from eclip.model_cards.card import TEMPLATE_PATH, build_model_card, eval_results_from, write_model_card


def recall(base):
    return {"recall@1": base, "recall@5": base + 0.1, "recall@10": base + 0.2, "mrr": base + 0.05}


def fake_tasks(offset=0.0):
    binary = {"roc_auc": 0.81 + offset, "recall_at_95_precision": 0.33 + offset, "f1": 0.5, "precision": 0.6,
              "recall": 0.4}
    return {
        "zero_shot": {"accuracy": 0.4123456789 + offset, "macro_f1": 0.21 + offset, "weighted_f1": 0.37,
                      "details": {"num_classes": 75}},
        "retrieval": {"text_to_image": recall(0.3 + offset), "image_to_text": recall(0.28),
                      "text_to_image_text_free": recall(0.25), "details": {"num_queries": 952}},
        "instance_retrieval": {"text_to_image": recall(0.2 + offset), "text_to_image_target_only": recall(0.1),
                               "attention_in_box_rate": 0.61, "details": {"attention_in_box_chance": 0.2}},
        "linear_probe": {kind: {"accuracy": 0.7 + offset, "macro_f1": 0.5} for kind in ("image", "text", "both")},
        "clustering": {"nmi": 0.55 + offset, "ari": 0.21},
        "matching": {name: {"f1": 0.45 + offset, "precision": 0.5, "recall": 0.4, "roc_auc": 0.8}
                     for name in ("walmart-amazon", "abt-buy")},
        "restricted": {"zero_shot": dict(binary), "linear_probe": dict(binary)},
    }


def fake_results(with_baseline=True):
    results = {
        "model_path": "runs/eclip",
        "config": {"use_instance_decoder": True, "num_instance_queries": 4},
        "tasks": fake_tasks(0.05),
        "data": {"fashion_products": {"train": 7659, "validation": 972, "test": 952}},
        "limit": None,
        "versions": {"eclip": "0.1.0", "torch": "2.x", "transformers": "5.x"},
    }
    if with_baseline:
        results["baseline"] = {"model_path": "runs/clip", "config": {"use_instance_decoder": False},
                               "tasks": fake_tasks(0.0)}
    return results


@pytest.fixture
def folder(saved_folder):
    return saved_folder


def key(result):
    return (result.task_type, result.dataset_type, result.dataset_config, result.metric_type, result.metric_config)


def test_card_round_trips_with_eval_results(folder, tmp_path):
    results = fake_results()
    card = build_model_card(folder, results, base_model="openai/clip-vit-base-patch16", datasets=["fashion-products"])
    assert isinstance(card, ModelCard)
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)

    before = {key(r): r.metric_value for r in card.data.eval_results}
    after = {key(r): r.metric_value for r in loaded.data.eval_results}
    assert after == before
    assert len(after) == len(card.data.eval_results)  # no two metrics collapse onto one key
    tasks = results["tasks"]
    expected = {
        ("zero-shot-image-classification", "fashion-products", "articleType", "accuracy", None):
            tasks["zero_shot"]["accuracy"],
        ("zero-shot-image-classification", "fashion-products", "articleType", "f1", "macro"):
            tasks["zero_shot"]["macro_f1"],
        ("text-to-image-retrieval", "fashion-products", "titles", "recall@1", None):
            tasks["retrieval"]["text_to_image"]["recall@1"],
        ("image-to-text-retrieval", "fashion-products", "titles", "mrr", None):
            tasks["retrieval"]["image_to_text"]["mrr"],
        ("text-to-image-retrieval", "fashion-products", "instance-scenes", "recall@10", None):
            tasks["instance_retrieval"]["text_to_image"]["recall@10"],
        ("multimodal-classification", "fashion-products", "articleType", "accuracy", None):
            tasks["linear_probe"]["both"]["accuracy"],
        ("image-clustering", "fashion-products", "articleType", "nmi", None): tasks["clustering"]["nmi"],
        ("product-matching", "walmart-amazon", None, "f1", None): tasks["matching"]["walmart-amazon"]["f1"],
        ("image-classification", "fashion-products", "innerwear-vs-rest", "roc_auc", None):
            tasks["restricted"]["linear_probe"]["roc_auc"],
    }
    for k, value in expected.items():
        assert after[k] == pytest.approx(value, abs=1e-6), k
    assert all(r.dataset_split == "test" for r in loaded.data.eval_results)
    assert loaded.data.base_model == "openai/clip-vit-base-patch16"
    assert loaded.data.datasets == ["fashion-products"]
    assert loaded.data.library_name == "transformers"
    assert loaded.data.model_name == "eclip-tiny"


def test_card_sections_and_tables(folder):
    text = str(build_model_card(folder, fake_results()))
    for section in ("## Model description", "## Training data", "## Pretraining objectives", "## Intended uses",
                    "## How to use", "## Limitations", "## Evaluation results"):
        assert section in text, section
    assert "| instance queries K | 4 |" in text
    assert "| inter-product | 1.0 |" in text and "| selection | 0.5 |" in text
    assert "AutoModel.from_pretrained" in text and "AutoProcessor.from_pretrained" in text
    assert "| task | metric | ECLIP | CLIP baseline | ratio |" in text
    assert "| zero_shot | accuracy | 0.4623 | 0.4123 | 1.121 |" in text
    assert "attention peak" in text


def test_baseline_card_and_config_input():
    config = tiny_config(use_instance_decoder=False)
    card = build_model_card(config, None, model_name="clip-baseline")
    text = str(card)
    assert "no instance decoder" in text and "instance queries K" not in text
    assert "No evaluation results yet" in text
    assert not card.data.eval_results
    assert "model-index" not in card.data.to_dict()


def test_skipped_and_missing_metrics_are_left_out():
    tasks = fake_tasks()
    tasks["restricted"] = {"skipped": "only one class"}
    tasks["instance_retrieval"]["text_to_image"]["mrr"] = None
    del tasks["clustering"]
    results = eval_results_from({"tasks": tasks})
    assert not any(r.dataset_config == "innerwear-vs-rest" for r in results)
    assert not any(r.task_type == "image-clustering" for r in results)
    assert not any(r.dataset_config == "instance-scenes" and r.metric_type == "mrr" for r in results)


def test_write_model_card_is_atomic_and_loadable(folder):
    path = write_model_card(folder, fake_results(with_baseline=False))
    assert path == os.path.join(folder, "README.md")
    assert sorted(n for n in os.listdir(folder) if "README" in n) == ["README.md"]  # no temp file left
    loaded = ModelCard.load(path)
    assert {key(r): r.metric_value for r in loaded.data.eval_results}[
        ("image-clustering", "fashion-products", "articleType", "nmi", None)
    ] == pytest.approx(0.6)
    assert "| task | metric | value |" in loaded.text
    # Re-writing replaces the card.
    write_model_card(folder, None)
    assert "No evaluation results yet" in ModelCard.load(path).text
    with pytest.raises(ValueError, match="does not exist"):
        write_model_card(os.path.join(folder, "missing"), None)


def test_template_ships_with_the_package():
    assert os.path.isfile(TEMPLATE_PATH)
    with open(TEMPLATE_PATH) as f:
        assert f.read().startswith("---\n{{ card_data }}\n---")


def test_smoke_model_card_says_what_it_is_and_agrees_with_its_metadata(folder, tmp_path):
    """eclip-pretrain's default run: the card's text comes from the same facts as its metadata (data, image size)."""
    facts = {"dataset": "synthetic", "image_size": 64, "steps": 250}
    write_model_card(folder, training=facts)
    card = ModelCard.load(os.path.join(folder, "README.md"))
    stored = card.data.to_dict()["eclip"]["training"]
    assert stored["dataset"] == "synthetic" and stored["image_size"] == 64
    assert "A smoke model" in card.text and "synthetic catalogue" in card.text
    assert f"{stored['image_size']}x{stored['image_size']} px" in card.text
    assert "224" not in card.text and "fashion catalogue photos" not in card.text
    assert "smoke-test" in card.data.tags


def test_fashion_card_states_its_data_and_resolution():
    facts = {"dataset": "imagefolder:/data/fashion-products", "image_size": 168}
    card = build_model_card(tiny_config(), training=facts)
    assert "fashion catalogue photos" in card.text and "168x168 px" in card.text
    assert "smoke" not in card.text.lower() and "smoke-test" not in card.data.tags
