"""The benchmark runner (training/evaluation/) on tiny random models over a small slice of the real data."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessorPil

from conftest import REPO_ROOT, minilm_dir
from modeling_eclip import EclipConfig, EclipModel, EclipProcessor
from eclip.training.evaluation import main
from eclip.training.evaluation.embedder import Embedder, image_text_scores, normalize
from eclip.training.evaluation.plots import PLOT_FILES
from eclip.training.evaluation.report import BASELINE_SUBDIR, json_default
from eclip.training.evaluation.runner import evaluate_model
from eclip.training.evaluation.scenes import attention_grid
from eclip.training.evaluation.task_names import TASKS, parse_tasks
from eclip.training.evaluation.tasks import selection_diagnostics
from eclip.training.fashion import LABEL_FIELD, TITLE_FIELD, load_split_rows, read_fashion_metadata, stratified_subset
from eclip.training.matching_data import MATCHING_DATASETS

LIMIT = 40
IMAGE_SIZE = 64

torch.set_num_threads(1)  # tiny models: thread hand-offs cost more than they save (as in test_modeling.py)


def tiny_eval_config(use_instance_decoder: bool) -> EclipConfig:
    return EclipConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=16),
        text_config=dict(model_type="bert", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, vocab_size=30522, max_position_embeddings=512),
        projection_dim=16, num_instance_queries=4, decoder_layers=2, decoder_attention_heads=4,
        decoder_hidden_size=32, use_instance_decoder=use_instance_decoder,
    )


def tiny_eval_processor() -> EclipProcessor:
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return EclipProcessor(image_processor, AutoTokenizer.from_pretrained(minilm_dir()))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    processor = tiny_eval_processor()
    out = {}
    for name, decoder in (("eclip", True), ("clip", False)):
        torch.manual_seed(0)
        folder = root / name
        EclipModel(tiny_eval_config(decoder)).save_pretrained(folder)
        processor.save_pretrained(folder)
        out[name] = str(folder)
    return out


def load(folder):
    from transformers import AutoModel, AutoProcessor

    return AutoModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)


@pytest.fixture(scope="module")
def evaluated(folders, data_dir, tmp_path_factory):
    """One full run (every task, ECLIP + baseline) shared by the tests below."""
    output = str(tmp_path_factory.mktemp("eval"))
    model, processor = load(folders["eclip"])
    baseline, baseline_processor = load(folders["clip"])
    results = evaluate_model(
        model, processor, data_dir, "all", output, limit=LIMIT, baseline_model=baseline,
        baseline_processor=baseline_processor, model_path=folders["eclip"], baseline_path=folders["clip"],
        batch_size=32, show_progress=False,
    )
    return results, output


METRIC_KEYS = {
    "zero_shot": {"accuracy", "macro_f1", "weighted_f1"},
    "zero_shot_shopper": {"accuracy", "macro_f1", "weighted_f1"},
    "retrieval": {"text_to_image", "image_to_text", "text_to_image_text_free"},
    "instance_retrieval": {"text_to_image", "text_to_image_target_only", "attention_in_box_rate"},
    "linear_probe": {"image", "text", "both"},
    "clustering": {"nmi", "ari"},
    "matching": set(MATCHING_DATASETS),
    "restricted": {"zero_shot", "linear_probe"},
}
RECALL_KEYS = {"recall@1", "recall@5", "recall@10", "mrr"}


def check_tasks(tasks, eclip: bool):
    assert set(tasks) == set(TASKS)
    for task, keys in METRIC_KEYS.items():
        assert keys <= set(tasks[task]), (task, tasks[task].keys())
        assert "skipped" not in tasks[task]
    for direction in ("text_to_image", "image_to_text", "text_to_image_text_free"):
        assert set(tasks["retrieval"][direction]) == RECALL_KEYS
        assert all(0.0 <= v <= 1.0 for v in tasks["retrieval"][direction].values())
    for variant in ("text_to_image", "text_to_image_target_only"):
        assert set(tasks["instance_retrieval"][variant]) == RECALL_KEYS
    for kind in ("image", "text", "both"):
        assert set(tasks["linear_probe"][kind]) == {"accuracy", "macro_f1"}
    for name in MATCHING_DATASETS:
        assert {"f1", "precision", "recall"} <= set(tasks["matching"][name])
    for kind in ("zero_shot", "linear_probe"):
        assert {"roc_auc", "recall_at_95_precision"} <= set(tasks["restricted"][kind])
    rate = tasks["instance_retrieval"]["attention_in_box_rate"]
    if eclip:
        assert 0.0 <= rate <= 1.0
    else:
        assert rate is None
        assert "skipped" in tasks["instance_retrieval"]["details"]["attention_note"]


def test_results_json_has_every_key(evaluated, folders):
    results, output = evaluated
    with open(os.path.join(output, "results.json")) as f:
        saved = json.load(f)
    for key in ("model_path", "config", "tasks", "data", "wall_time_s", "versions", "limit", "seed", "templates",
                "plots", "baseline", "comparison"):
        assert key in saved, key
    assert saved["model_path"] == folders["eclip"]
    assert saved["config"]["use_instance_decoder"] is True and saved["config"]["num_instance_queries"] == 4
    assert saved["data"]["fashion_products"] == {"train": LIMIT, "validation": LIMIT, "test": LIMIT}
    assert saved["data"]["matching"] == {name: {"valid": LIMIT, "test": LIMIT} for name in MATCHING_DATASETS}
    assert saved["data"]["instance_scenes"] == LIMIT
    assert saved["wall_time_s"] > 0
    assert {"torch", "transformers", "evaluate", "python"} <= set(saved["versions"])
    check_tasks(saved["tasks"], eclip=True)

    baseline = saved["baseline"]
    assert baseline["model_path"] == folders["clip"]
    assert baseline["config"]["use_instance_decoder"] is False and baseline["config"]["num_instance_queries"] is None
    check_tasks(baseline["tasks"], eclip=False)

    # Side by side with ratios, one entry per metric.
    comparison = saved["comparison"]
    assert comparison["zero_shot/accuracy"].keys() == {"model", "baseline", "ratio"}
    assert "retrieval/text_to_image/recall@10" in comparison
    entry = comparison["matching/walmart-amazon/roc_auc"]
    assert entry["ratio"] == pytest.approx(entry["model"] / entry["baseline"])
    assert comparison["instance_retrieval/attention_in_box_rate"]["ratio"] is None
    assert saved == json.loads(json.dumps(results, default=json_default))


def test_results_markdown(evaluated):
    _, output = evaluated
    text = open(os.path.join(output, "results.md")).read()
    assert "| task | metric | model | baseline | ratio |" in text
    assert "| zero_shot | accuracy |" in text
    assert "| matching | abt-buy/f1 |" in text
    assert "attention plot skipped" in text


def check_png(path, min_side=300):
    assert os.path.isfile(path), path
    assert os.path.getsize(path) > 10_000, path
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_side, image.size


def test_every_plot_is_written(evaluated):
    results, output = evaluated
    for name in ("retrieval_examples.png", "zero_shot_confusion.png", "instance_attention.png"):
        check_png(os.path.join(output, name))
    assert set(results["plots"].values()) == set(PLOT_FILES.values())
    baseline_dir = os.path.join(output, BASELINE_SUBDIR)
    for name in ("retrieval_examples.png", "zero_shot_confusion.png"):
        check_png(os.path.join(baseline_dir, name))
    # The baseline has no decoder, hence no cross-attention: the plot is skipped with a note.
    assert not os.path.exists(os.path.join(baseline_dir, "instance_attention.png"))
    assert any("skipped" in note for note in results["baseline"]["notes"])


def test_each_split_is_embedded_once(evaluated):
    results, _ = evaluated
    # train + validation + test images once each, plus one scene per test product in the standard and in each of
    # the two hard scene sets, for each model.
    expected = 3 * LIMIT + 3 * LIMIT
    assert results["embedded"]["images"] == expected
    assert results["baseline"]["embedded"]["images"] == expected


@pytest.mark.parametrize("name", ["eclip", "clip"])
def test_scores_are_the_models_logits(folders, data_dir, name):
    """The runner's image-text scores are the model's own logits (max over instances for ECLIP), unscaled."""
    model, processor = load(folders[name])
    rows = [r for r in read_fashion_metadata(data_dir) if r["split"] == "test"][:6]
    embedder = Embedder(model, processor, batch_size=4, show_progress=False)
    images = embedder.images("rows", [r["path"] for r in rows])
    texts = embedder.texts([r[TITLE_FIELD] for r in rows])
    pil = [Image.open(r["path"]).convert("RGB") for r in rows]
    inputs = processor(images=pil, text=[r[TITLE_FIELD] for r in rows], return_tensors="pt", padding=True)
    with torch.inference_mode():
        logits = model(**inputs).logits_per_image.numpy()
    scale = model.clamped_logit_scale().item()
    np.testing.assert_allclose(image_text_scores(images, texts) * scale, logits, atol=1e-4)
    # Asking again hits the cache.
    embedder.images("rows", [r["path"] for r in rows])
    assert embedder.embedded_images == len(rows)
    # A forgotten set is embedded again, to the same vectors.
    embedder.forget_images("rows")
    again = embedder.images("rows", [r["path"] for r in rows])
    assert embedder.embedded_images == 2 * len(rows)
    np.testing.assert_allclose(again["image_embeds"], images["image_embeds"], atol=1e-6)


def test_zero_shot_accuracy_comes_with_chance_and_majority_baselines(evaluated):
    results, output = evaluated
    zero_shot = results["tasks"]["zero_shot"]
    details = zero_shot["details"]
    assert zero_shot["chance_accuracy"] == pytest.approx(1.0 / details["num_classes"])
    test_labels = [row[LABEL_FIELD] for row in load_split_rows(results["data_dir"], ["test"], LIMIT, 0)["test"]]
    commonest = max(set(test_labels), key=test_labels.count)
    assert zero_shot["majority_accuracy"] == pytest.approx(test_labels.count(commonest) / len(test_labels))
    assert test_labels.count(details["majority_class"]) == test_labels.count(commonest)
    # the most predicted class is a column of the confusion plot whatever its size in the test split
    assert details["most_predicted"][0]["class"] in details["confusion_columns"]
    text = open(os.path.join(output, "results.md")).read()
    assert "| zero_shot | chance_accuracy |" in text and "| zero_shot | majority_accuracy |" in text


def test_confusion_plot_shows_the_classes_the_model_predicts():
    """The failure the plot exists to show: a rare class answered for 75 % of the photos gets its own column."""
    from eclip.training.evaluation.tasks import confusion_table

    rng = np.random.default_rng(0)
    references = np.repeat(np.arange(20), np.arange(40, 0, -2))  # class 0 largest ... class 19 smallest
    predictions = references.copy()
    hijacked = rng.random(len(references)) < 0.75
    predictions[hijacked] = np.where(rng.random(hijacked.sum()) < 0.5, 18, 19)  # the two smallest classes
    rows, columns, matrix = confusion_table(references, predictions, num_classes=25, k=5)
    assert rows[:5] == [0, 1, 2, 3, 4] and {18, 19} <= set(columns) and {18, 19} <= set(rows)
    assert matrix.shape == (len(rows), len(columns) + 1)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    for r, c in enumerate(rows):
        assert matrix[r, columns.index(18)] + matrix[r, columns.index(19)] == pytest.approx(
            np.mean(np.isin(predictions[references == c], [18, 19])))
    assert matrix[:, -1].max() < 0.2  # "(other)" no longer hides where the predictions went
    # never a class without predictions or test rows
    rows, columns, _ = confusion_table(np.array([0, 0, 1]), np.array([0, 0, 0]), num_classes=4, k=3)
    assert rows == [0, 1] and columns == [0, 1]


def test_texts_are_embedded_in_chunks_of_the_batch_size(folders):
    """The embedder encodes through the processor's chunked helper: never more than a batch's texts in memory."""
    model, processor = load(folders["clip"])
    sizes = []
    original = processor.iter_batches

    def spy(*args, **kwargs):
        for batch in original(*args, **kwargs):
            sizes.append(len(batch["input_ids"]))
            yield batch

    processor.iter_batches = spy
    embedder = Embedder(model, processor, batch_size=16, show_progress=False)
    titles = [f"title {i}" for i in range(70)]
    chunked = embedder.texts(titles)
    assert sizes == [16, 16, 16, 16, 6]
    with torch.inference_mode():
        whole = model.get_text_features(**processor(text=titles, return_tensors="pt")).pooler_output
    np.testing.assert_allclose(chunked, torch.nn.functional.normalize(whole, dim=-1).numpy(), atol=1e-5)


def test_shopper_zero_shot_names_the_classes_as_shoppers_do(evaluated, folders):
    from sklearn.metrics import f1_score

    from eclip.training.fashion import SHOPPER_PHRASES

    results, _ = evaluated
    shopper = results["tasks"]["zero_shot_shopper"]
    assert shopper["details"]["classes_without_a_phrase"] == []
    model, processor = load(folders["eclip"])
    rows = load_split_rows(results["data_dir"], ["test"], LIMIT, 0)["test"]
    names = sorted({r[LABEL_FIELD] for r in read_fashion_metadata(results["data_dir"])})
    embedder = Embedder(model, processor, show_progress=False)
    phrases = embedder.class_embeddings([SHOPPER_PHRASES[n] for n in names], results["templates"])
    predicted = image_text_scores(embedder.images("test", [r["path"] for r in rows]), phrases).argmax(axis=1)
    labels = [names.index(r[LABEL_FIELD]) for r in rows]
    expected = f1_score(labels, predicted, average="weighted", labels=sorted(set(labels)))
    assert shopper["weighted_f1"] == pytest.approx(expected, abs=1e-6)
    catalogue = embedder.class_embeddings(names, results["templates"])
    assert not np.allclose(phrases, catalogue)  # the phrases, not the labels, were embedded


def test_cli_update_card_and_entry_point(folders, data_dir, tmp_path):
    output = tmp_path / "cli"
    code = main(["--model", folders["eclip"], "--data", data_dir, "--tasks", "zero_shot,matching",
                    "--output", str(output), "--limit", "12", "--templates", "a photo of {}", "{}",
                    "--update-card", "--no-progress", "--seed", "1"])
    assert code == 0
    saved = json.loads((output / "results.json").read_text())
    assert saved["tasks_run"] == ["zero_shot", "matching"]
    assert saved["templates"] == ["a photo of {}", "{}"]
    assert saved["tasks"]["zero_shot"]["details"]["templates"] == ["a photo of {}", "{}"]
    assert (output / "zero_shot_confusion.png").is_file()
    readme = os.path.join(folders["eclip"], "README.md")
    from huggingface_hub import ModelCard

    card = ModelCard.load(readme)
    values = {(r.task_type, r.dataset_type, r.metric_type, r.metric_config): r.metric_value
              for r in card.data.eval_results}
    assert values[("zero-shot-image-classification", "fashion-products", "accuracy", None)] == pytest.approx(
        saved["tasks"]["zero_shot"]["accuracy"], abs=1e-6)
    assert values[("product-matching", "abt-buy", "f1", None)] == pytest.approx(
        saved["tasks"]["matching"]["abt-buy"]["f1"], abs=1e-6)


def test_module_cli_rejects_unknown_task(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "eclip.training.evaluation", "--model", "unused", "--tasks", "zero_shot,bogus",
         "--output", str(tmp_path / "out")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Unknown task(s) 'bogus'" in result.stderr and "instance_retrieval" in result.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ clear errors early
class ExplodingModel:
    """Any use of the model fails: errors must come before any heavy work."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was touched ({name}) before the inputs were checked")


def test_unknown_task_lists_valid_tasks(data_dir, tmp_path):
    with pytest.raises(ValueError,
                       match=r"Unknown task\(s\) 'zeroshot'; valid tasks: all, zero_shot, zero_shot_shopper, retrieval"):
        evaluate_model(ExplodingModel(), None, data_dir, "zeroshot,retrieval", str(tmp_path))
    with pytest.raises(ValueError, match="valid tasks"):
        parse_tasks([])


def test_missing_data_dir_is_named(tmp_path):
    missing = str(tmp_path / "no-such-data")
    with pytest.raises(ValueError, match="no-such-data"):
        evaluate_model(ExplodingModel(), None, missing, "all", str(tmp_path / "out"))


def write_metadata(root, rows, header):
    os.makedirs(root / "fashion-products", exist_ok=True)
    with open(root / "fashion-products" / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def real_metadata(data_dir, n_per_split=3):
    with open(os.path.join(data_dir, "fashion-products", "metadata.csv"), newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    picked = []
    for split in ("train", "validation", "test"):
        picked += [r for r in rows if r["split"] == split][:n_per_split]
    return header, picked


def test_missing_split_is_named(data_dir, tmp_path):
    header, rows = real_metadata(data_dir)
    write_metadata(tmp_path, [r for r in rows if r["split"] != "validation"], header)
    # Tasks that only read `test` do not need the validation split; those that tune on it fail clearly.
    with pytest.raises(ValueError, match=r"Split 'validation' has no rows in .*metadata\.csv"):
        evaluate_model(ExplodingModel(), None, str(tmp_path), "zero_shot,linear_probe", str(tmp_path / "o"))


def test_missing_metadata_and_matching_files_are_named(data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"fashion-products/metadata\.csv"):
        evaluate_model(ExplodingModel(), None, str(tmp_path), "clustering", str(tmp_path / "o"))
    with pytest.raises(ValueError, match=r"product-matching/walmart-amazon/valid\.txt"):
        evaluate_model(ExplodingModel(), None, str(tmp_path), "matching", str(tmp_path / "o"))


def test_missing_images_and_bad_inputs(data_dir, tmp_path):
    header, rows = real_metadata(data_dir)
    write_metadata(tmp_path, rows, header)  # metadata only, no image files
    with pytest.raises(ValueError, match=r"image file\(s\) of split 'test' are missing"):
        evaluate_model(ExplodingModel(), None, str(tmp_path), "retrieval", str(tmp_path / "o"))
    with pytest.raises(ValueError, match="exactly one"):
        evaluate_model(ExplodingModel(), None, data_dir, "zero_shot", str(tmp_path / "o"), templates=["a photo"])
    with pytest.raises(ValueError, match="limit"):
        evaluate_model(ExplodingModel(), None, data_dir, "zero_shot", str(tmp_path / "o"), limit=0)


# ---------------------------------------------------------------------------------------------- pure helpers
def test_stratified_subset_is_deterministic_and_covers_groups():
    items = [("a", i) for i in range(80)] + [("b", i) for i in range(15)] + [("c", i) for i in range(5)]
    first = stratified_subset(items, 20, seed=0, key=lambda x: x[0])
    assert first == stratified_subset(items, 20, seed=0, key=lambda x: x[0])
    assert len(first) == 20
    counts = {g: sum(1 for x in first if x[0] == g) for g in "abc"}
    assert counts["c"] >= 1 and counts["a"] > counts["b"] > 0  # proportional, no group dropped
    assert first == sorted(first, key=items.index)  # input order kept
    assert len(stratified_subset(items, 2, seed=0, key=lambda x: x[0])) == 2
    assert stratified_subset(items, None, seed=0, key=lambda x: x[0]) == items
    assert stratified_subset(items, 20, seed=1, key=lambda x: x[0]) != first


def test_attention_grid_drops_cls():
    grid = attention_grid(np.arange(17, dtype=float))
    assert grid.shape == (4, 4) and grid[0, 0] == 1.0
    assert attention_grid(np.arange(16, dtype=float)).shape == (4, 4)
    assert attention_grid(np.arange(7, dtype=float)) is None


def test_instance_retrieval_reports_text_free_hard_scenes_and_selection(evaluated):
    results, _ = evaluated
    for side in (results, results["baseline"]):
        task = side["tasks"]["instance_retrieval"]
        for kind in ("crowded", "small"):
            for metric in ("text_to_image", "text_to_image_target_only", "text_free"):
                assert 0.0 <= task[kind][metric]["recall@10"] <= 1.0
        assert 0.0 <= task["text_free"]["mrr"] <= 1.0
    assert results["data"]["hard_scenes"] == {"crowded": LIMIT, "small": LIMIT}
    selection = results["tasks"]["instance_retrieval"]["selection"]
    assert set(selection) == {"scenes", "photos"}
    assert "selection" not in results["baseline"]["tasks"]["instance_retrieval"]  # no decoder, no selection head
    # The CLIP baseline's text-free score is its only score.
    baseline = results["baseline"]["tasks"]["instance_retrieval"]
    assert baseline["text_free"] == baseline["text_to_image"]


def test_selection_diagnostics_tell_a_head_that_reads_the_image_from_one_that_learnt_the_prior():
    rng = np.random.default_rng(0)
    n, k, d = 60, 4, 8
    texts = normalize(rng.normal(size=(n, d)))
    instances = normalize(rng.normal(size=(n, k, d)))
    # Query (i % k) of image i is its product: the title picks it.
    for i in range(n):
        instances[i, i % k] = texts[i]
    members = [[i] for i in range(n)]
    reads = np.full((n, k), -5.0)
    reads[np.arange(n), np.arange(n) % k] = 5.0
    prior = np.zeros((n, k))
    prior[:, 0] = 5.0
    good = selection_diagnostics({"instance_embeds": instances, "selection_logits": reads}, texts, members)
    bad = selection_diagnostics({"instance_embeds": instances, "selection_logits": prior}, texts, members)
    assert good["agreement"] == 1.0 and good["top_query_share"] == pytest.approx(0.25)
    assert bad["agreement"] == bad["top_query_share"] == pytest.approx(0.25)


# ------------------------------------------------------------------------------------------ undecodable images
def test_undecodable_images_are_skipped_or_refused_before_the_model_is_touched(data_dir, tmp_path):
    """Every image of the rows read is checked first: a bad one is left out and named (default), or stops the run
    before any model use and without creating the output folder (`on_bad_image="error"`)."""
    import shutil

    from eclip.training.evaluation.images import UnreadableImage
    from eclip.training.evaluation.runner import prepare

    header, rows = real_metadata(data_dir)
    write_metadata(tmp_path, rows, header)
    for row in rows:
        target = tmp_path / "fashion-products" / row["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(data_dir, "fashion-products", row["file_name"]), target)
    test_rows = [r for r in rows if r["split"] == "test"]
    photo = tmp_path / "fashion-products" / test_rows[0]["file_name"]
    photo.write_bytes(photo.read_bytes()[:200])
    (tmp_path / "fashion-products" / test_rows[1]["file_name"]).write_text("not an image\n")

    prepared = prepare(str(tmp_path), "zero_shot,linear_probe")
    assert [r["id"] for r in prepared["splits"]["test"]] == [r["id"] for r in test_rows[2:]]
    assert len(prepared["splits"]["train"]) == len(prepared["splits"]["validation"]) == 3
    assert prepared["skipped_images"].summary() == (
        f"skipped 2 unreadable images (test 2) in {tmp_path / 'fashion-products'}: {test_rows[0]['file_name']} "
        f"(truncated), {test_rows[1]['file_name']} (not an image)")

    output = tmp_path / "out"
    with pytest.raises(UnreadableImage, match=rf"{test_rows[0]['file_name']} \(test split\) cannot be decoded"):
        evaluate_model(ExplodingModel(), None, str(tmp_path), "zero_shot", str(output), on_bad_image="error")
    assert not output.exists()


def test_a_fine_tuned_folder_is_said_to_be_scored_through_its_backbone(tmp_path):
    from eclip.training.evaluation.cli import fine_tuned_note

    head = tmp_path / "head"
    head.mkdir()
    (head / "config.json").write_text(json.dumps({"architectures": ["EclipForProductClassification"],
                                                  "id2label": {"0": "Apparel", "1": "Footwear"}}))
    (head / "test_metrics.json").write_text(json.dumps({"task": "category", "label_column": "masterCategory"}))
    assert fine_tuned_note(str(head)) == (
        f"{head} holds a category head (EclipForProductClassification, masterCategory labels: Apparel, Footwear); "
        f"eclip-evaluate scores its backbone's embeddings, not the head; the head's own test metrics are in "
        f"{head / 'test_metrics.json'}")
    (head / "adapter_config.json").write_text("{}")
    assert "holds a LoRA adapter of a category head" in fine_tuned_note(str(head))
    assert "with the adapter applied" in fine_tuned_note(str(head))
    (head / "merged").mkdir()
    (head / "merged" / "config.json").write_text(json.dumps({"architectures": ["EclipForTokenClassification"]}))
    assert fine_tuned_note(str(head / "merged")).endswith(f"in {head / 'test_metrics.json'}")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"architectures": ["EclipModel"]}))
    assert fine_tuned_note(str(plain)) is None and fine_tuned_note("org/model") is None
