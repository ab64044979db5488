"""The README as a user copies it: every Python snippet runs, its first fine-tuning command runs, and its results
table is the committed JSON's.

The snippets run as written, in a folder where the model names they use (`eclip-fashion`, `eclip-default`) are tiny
random ECLIP folders and `photo.jpg` is a real catalogue photo; Hub pushes stop at huggingface_hub's commit boundary.
"""

import json
import os
import re
import shlex
import shutil

import pytest
import torch

from conftest import REPO_ROOT, tiny_config, tiny_processor
from hub_fixtures import FakeHub

README = os.path.join(REPO_ROOT, "README.md")
RESULTS = os.path.join(REPO_ROOT, "benchmarks", "results")


def readme() -> str:
    with open(README, encoding="utf-8") as handle:
        return handle.read()


def fenced_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", readme(), flags=re.M | re.S)


def shell_commands(program: str) -> list[list[str]]:
    """Every `program ...` command of the README's bash blocks, line continuations joined, comments dropped."""
    commands = []
    for block in fenced_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(program + " "):
                commands.append(shlex.split(line)[1:])
    return commands


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, data_dir):
    """A user's folder: the models the README names, a real photo, and the README's cheap fine-tuning run's output."""
    from modeling_eclip import EclipModel

    work = tmp_path_factory.mktemp("readme")
    torch.manual_seed(0)
    model, processor = EclipModel(tiny_config()), tiny_processor()
    for name in ("eclip-fashion", "eclip-default"):
        model.save_pretrained(work / name)
        processor.save_pretrained(work / name)
    shutil.copy(os.path.join(data_dir, "fashion-products", "images", "10000.jpg"), work / "photo.jpg")
    from _search_helpers import build_index, small_catalogue

    # The search snippet's index: the real eclip-index over the first fashion photos.
    build_index(str(work / "eclip-fashion"), work / "fashion-index", catalogue=small_catalogue(work / "catalogue"))

    (cheap,) = [c for c in shell_commands("eclip-finetune") if "--lora" in c and "--merge-lora" in c]
    from eclip.training.finetune import main

    cwd = os.getcwd()
    os.chdir(work)
    try:  # the README's command as written; later flags shrink it to a smoke run (argparse keeps the last value)
        assert main([*cheap, "--data", data_dir, "--limit", "40", "--max-steps", "2", "--batch-size", "8"]) == 0
    finally:
        os.chdir(cwd)
    return work


def test_readme_has_the_snippets_it_should():
    snippets = fenced_blocks("python")
    assert len(snippets) >= 4
    assert all("import modeling_eclip" in s for s in snippets if "from_pretrained" in s or "pipeline(" in s)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(fenced_blocks("python"))))
def test_readme_python_snippet_runs(index, workdir, monkeypatch, one_thread):
    snippet = fenced_blocks("python")[index]
    FakeHub().install(monkeypatch)
    monkeypatch.chdir(workdir)
    exec(compile(snippet, f"README.md python snippet {index}", "exec"), {"__name__": "__readme__"})


@pytest.mark.slow
def test_readme_finetune_example_wrote_what_the_snippet_loads(workdir):
    """The cheap run is an image head with an adapter and a merged copy, as the loading snippet assumes."""
    config = json.loads((workdir / "runs" / "category-lora" / "config.json").read_text())
    assert config["modality"] == "image"
    assert (workdir / "runs" / "category-lora" / "adapter_config.json").exists()
    assert (workdir / "runs" / "category-lora" / "merged" / "model.safetensors").exists()


def test_first_mention_of_the_default_model_says_it_is_a_smoke_model():
    text = readme()
    first = text.index("eclip-default")
    assert "smoke" in text[first - 300: first + 300]
    assert "smoke test only" in text


def _ratio(measure: dict) -> str:
    low, high = measure["ratio_ci95"]
    return f"{measure['ratio']:.2f}x [{low:.2f}, {high:.2f}]"


def headline_rows() -> list[str]:
    """The README's results rows, each made from its JSON."""
    with open(os.path.join(RESULTS, "fashion.json"), encoding="utf-8") as handle:
        fashion = json.load(handle)["models"]["fashion"]["metrics"]
    with open(os.path.join(RESULTS, "eclip_vs_clip_pretrained.json"), encoding="utf-8") as handle:
        measures = json.load(handle)["comparisons"]["eclip"]["measures"]
    with open(os.path.join(RESULTS, "matching.json"), encoding="utf-8") as handle:
        matching = json.load(handle)
    with open(os.path.join(RESULTS, "speed.json"), encoding="utf-8") as handle:
        speed = json.load(handle)["inference"]

    def f1(benchmark):
        summary = matching["summary"][benchmark]["bi_encoder"]
        return f"{100 * summary['test_f1_mean']:.1f} ± {100 * summary['test_f1_std']:.1f}"

    return [
        f"| fashion zero-shot articleType weighted F1 (test, 952 photos) | {fashion['zero_shot/weighted_f1']:.3f} |",
        f"| fashion product retrieval, title to photo R@1 | {fashion['retrieval/text_to_image/recall@1']:.3f} |",
        f"| fashion image linear probe accuracy | {fashion['linear_probe/image/accuracy']:.3f} |",
        f"| scene retrieval R@1, crowded scenes, ECLIP / CLIP (9 seeds) | {_ratio(measures['scene_crowded_r1']['pooled'])} |",
        f"| scene retrieval R@1, small items, ECLIP / CLIP | {_ratio(measures['scene_small_r1']['pooled'])} |",
        f"| scene retrieval R@1, plain scenes, ECLIP / CLIP | {_ratio(measures['scene_standard_r1']['pooled'])} |",
        f"| matching F1, Walmart-Amazon (bi-encoder, 3 seeds) | {f1('walmart-amazon')} | "
        f"{matching['ditto_f1']['walmart-amazon']} Ditto (published) |",
        f"| matching F1, Abt-Buy | {f1('abt-buy')} | {matching['ditto_f1']['abt-buy']} Ditto (published) |",
        f"| image embedding speed, ECLIP / CLIPModel, batch 64 (CPU) | {speed['image_batch64']['ratio']:.2f}x |",
    ]


def test_readme_results_are_the_committed_json():
    text = readme()
    for row in headline_rows():
        assert row in text, f"README's results table differs from benchmarks/results: expected a row starting\n{row}"
    seeds = json.load(open(os.path.join(RESULTS, "eclip_vs_clip_pretrained.json")))["comparisons"]["eclip"]["seeds"]
    assert f"({len(seeds)} seeds)" in text


def test_readme_is_a_product_page():
    lines = readme().splitlines()
    assert len(lines) <= 300
    head = "\n".join(lines[:150])
    for needle in ("AutoModel.from_pretrained", "eclip-finetune", "AutoModelForImageClassification"):
        assert needle in head
    for link in re.findall(r"\]\((docs/[^)#]+)", readme()):
        assert os.path.exists(os.path.join(REPO_ROOT, link)), link
