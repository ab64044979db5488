"""docs/: the performance page's figures are its JSON's, and every link and cited result file exists.
(The other study pages' tables are checked by their benchmark's tests: test_fashion_results, test_matching,
test_eclip_vs_clip*, test_default_refit.)"""

import json
import os
import re

import pytest

from conftest import REPO_ROOT

DOCS = os.path.join(REPO_ROOT, "docs")
RESULTS = os.path.join(REPO_ROOT, "benchmarks", "results")


def page(name: str) -> str:
    with open(os.path.join(DOCS, name), encoding="utf-8") as handle:
        return handle.read()


def result(name: str) -> dict:
    with open(os.path.join(RESULTS, name), encoding="utf-8") as handle:
        return json.load(handle)


def test_performance_table_is_speed_json():
    speed, text = result("speed.json"), page("performance.md")
    inference, training = speed["inference"], speed["training"]
    for key, label in (("image_batch1", "image embedding, batch 1"), ("image_batch64", "image embedding, batch 64")):
        row = inference[key]
        assert (f"| {label} | {row['clip_per_s']:.1f} img/s | {row['eclip_per_s']:.1f} img/s | "
                f"**{row['ratio']:.2f}x** |") in text
    text_ratios = f"**{inference['text_batch1']['ratio']:.2f}x / {inference['text_batch64']['ratio']:.2f}x**"
    assert text_ratios in text
    assert f"| {training['clip']['samples_per_s']:.2f} samples/s | {training['eclip_no_view']['samples_per_s']:.2f} " \
           f"samples/s | **{training['eclip_no_view']['samples_per_s_ratio']:.2f}x** |" in text
    cache = speed["gradient_cache"]["16x_cached"]
    assert f"**{cache['peak_rss_ratio']:.2f}x** | **{cache['time_per_sample_ratio']:.2f}x**" in text


def test_performance_vit_b16_and_text_chunks_are_their_json():
    text = page("performance.md")
    vit = result("speed_vit_b16.json")["inference"]
    assert f"({vit['image_batch1']['eclip_per_s']:.2f} vs {vit['image_batch1']['clip_per_s']:.2f} img/s)" in text
    assert f"**{vit['image_batch1']['ratio']:.2f}x**" in text
    chunks = result("text_chunks.json")
    assert f"{chunks['whole']['peak_rss_mb'] / 1000:.1f} GB peak memory" in text
    assert f"{chunks['whole']['seconds']:.0f}\ns in one call" in text or \
        f"{chunks['whole']['seconds']:.0f} s in one call" in text
    assert f"{chunks['chunks']['peak_rss_mb'] / 1000:.1f} GB and {chunks['chunks']['seconds']:.0f} s in chunks" in text


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(DOCS) if n.endswith(".md")))
def test_links_and_cited_results_exist(name):
    text = page(name)
    for link in re.findall(r"\]\(([^)#\s]+)", text):
        if not link.startswith("http"):
            assert os.path.exists(os.path.normpath(os.path.join(DOCS, link))), f"{name}: broken link {link}"
    for cited in set(re.findall(r"benchmarks/results/[\w./-]+\.(?:json|png)", text)):
        assert os.path.exists(os.path.join(REPO_ROOT, cited)), f"{name} cites {cited}, which is not committed"


def test_fashion_diagnosis_figures_are_its_json():
    text = " ".join(page("fashion.md").split())  # the page's line breaks fall anywhere
    diagnosis = result("fashion_diagnosis.json")
    model = diagnosis["models"]["text_views"]
    test = model["splits"]["test"]
    for key in ("label_standard_templates/max_k", "label_standard_templates/text_free",
                "label_standard_templates/global", "catalogue_path/max_k", "shopper_standard_templates/max_k"):
        assert f"{test[key]['weighted_f1']:.3f}" in text, key
    texts = diagnosis["training_texts"]
    assert f"{texts['share_cut']:.1%} of the {texts['texts']:,} training texts are cut" in text
    old = {e["step"]: e for e in result("fashion.json")["models"]["fashion"]["validation_probe"]}
    new = {e["step"]: e for e in model["validation_probe"]}
    assert (f"| 400 of 600 | {old[200]['zero_shot_weighted_f1']:.3f} | {old[400]['zero_shot_weighted_f1']:.3f} | "
            f"{old[400]['t2i_r1']:.3f} |") in text
    assert (f"| 400 | {new[200]['zero_shot_weighted_f1']:.3f} | {new[400]['zero_shot_weighted_f1']:.3f} | "
            f"{new[400]['t2i_r1']:.3f} |") in text
    per_class = model["test_per_class"]
    assert f"test split to {per_class['zero_shot']['weighted_f1']:.3f} against the recipe's 0.560" in text


def test_search_page_figures_are_its_json():
    text = " ".join(page("search.md").split())
    search, load = result("search.json"), result("search_load.json")
    latency = search["text_query_latency_ms"]
    assert f"| {search['index_throughput']['images_per_second']:.1f} images/s" in text
    assert f"| {latency['total_ms']['p50']:.1f} / {latency['total_ms']['p95']:.1f} ms" in text
    recall = search["approximate_recall"]
    for space in ("image", "instance"):
        assert f"| {recall[space]['hnsw']['recall_at_10']:.3f} (IVF {recall[space]['ivf']['recall_at_10']:.3f}) |" in text
    scenes = search["scenes"]
    for variant in ("instance", "instance_index", "instance_any"):
        ratio = scenes["vs_global"][variant]
        assert (f"| {scenes['hit_rate'][variant]:.3f} | {ratio['ratio']:.2f}x [{ratio['ratio_ci95'][0]:.2f}, "
                f"{ratio['ratio_ci95'][1]:.2f}] |") in text
    assert f"{load['requests']} requests, **{load['errors']} errors**" in text
    assert f"latency p50 {load['latency_ms']['p50']:.0f} ms and p95 {load['latency_ms']['p95']:.0f} ms" in text


def test_serving_figures_are_their_json():
    text = " ".join(page("performance.md").split())
    runtime = result("speed_runtime.json")["runtime"]
    for modality, unit in (("image", "img/s"), ("text", "txt/s")):
        for batch in ("batch1", "batch64"):
            speed, ratios = runtime["throughput"][modality][batch], runtime["ratios"][modality][batch]
            eclip = speed["eclip"]
            assert (f"| {modality}, batch {batch[5:]} | {eclip['eager']:.1f} / {eclip['onnx_fp32']:.1f} / "
                    f"{eclip['onnx_int8']:.1f} {unit} |") in text
            assert (f"**{ratios['eclip.onnx_int8/eclip.eager']:.2f}x** | "
                    f"**{ratios['eclip.onnx_int8/clip.onnx_int8']:.2f}x** |") in text
    achieved = runtime["achieved"]["image"]["batch64"]["eclip"]
    assert f"reaches **{achieved['eager']['fraction_of_fp32_peak']:.0%}** of it" in text
    assert f"peaks at {runtime['cpu_peak']['peak_flop_per_s'] / 1e9:.1f} GFLOP/s" in text
    accuracy = result("onnx_accuracy.json")
    metrics, difference = accuracy["metrics"], accuracy["difference_to_pytorch"]["onnx_int8"]
    for key in ("zero_shot/weighted_f1", "retrieval/text_to_image/recall@1"):
        assert (f"| {metrics['pytorch'][key]:.3f} | {metrics['onnx_float32'][key]:.3f} | "
                f"{metrics['onnx_int8'][key]:.3f} | {difference[key]:+.3f} |") in text
