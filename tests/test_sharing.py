"""
Sharing what was trained: `--push-to-hub` (one commit at huggingface_hub's boundary, exact files, revision and
privacy passed through, cards that parse), loading the pushed files by repo id from a Hub cache (Auto classes, the
pipelines, trust_remote_code without the package, PeftModel), cards that keep their facts, portable adapters and
folders readable under the user's umask.
"""

import json
import os
import stat

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

from conftest import DATA_DIR, REPO_ROOT, tiny_config, tiny_processor
from hub_fixtures import FakeHub, card_of, lay_into_cache, run_offline
from eclip.training.hub import PushError, adapter_config_for_hub, folder_files, push_folder

TINY = os.path.join(REPO_ROOT, "training", "configs", "tiny.yaml")
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
TITLES = ["Spykar Men Stripes Grey Sweaters", "Jockey Men Black Trunk", "Nike Women Pink Running Shoes"]


def local_files(folder):
    """{relative path: bytes} of every file under `folder`."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder).replace(os.sep, "/")] = open(path, "rb").read()
    return out


def assert_clean(paths):
    assert not [p for p in paths if p.endswith(PICKLES)], paths
    assert not [p for p in paths if ".partial-" in p or ".old-" in p or "checkpoint-" in p or ".tmp-" in p], paths


def modes(folder):
    """{relative path: permission bits} of `folder` and everything in it."""
    out = {".": stat.S_IMODE(os.stat(folder).st_mode)}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = stat.S_IMODE(os.stat(path).st_mode)
    return out


@pytest.fixture
def umask():
    def set_umask(value):
        previous.append(os.umask(value))

    previous = []
    yield set_umask
    if previous:
        os.umask(previous[0])


# ------------------------------------------------------------------------------------------------ push_folder
def test_push_folder_is_one_commit_of_exactly_the_model_files(saved_folder, monkeypatch):
    from eclip.model_cards.card import write_model_card

    write_model_card(saved_folder, None)
    expected = set(local_files(saved_folder))
    # debris a run can leave next to a model: none of it may reach the Hub
    os.makedirs(os.path.join(saved_folder, ".eclip-tiny.partial-x1y2"))
    open(os.path.join(saved_folder, ".eclip-tiny.partial-x1y2", "model.safetensors"), "wb").write(b"half")
    os.makedirs(os.path.join(saved_folder, "checkpoint-4"))
    open(os.path.join(saved_folder, "checkpoint-4", "optimizer.pt"), "wb").write(b"pickle")
    open(os.path.join(saved_folder, "training_args.bin"), "wb").write(b"pickle")
    open(os.path.join(saved_folder, "README.md.tmp-1234"), "w").write("half a card")

    hub = FakeHub().install(monkeypatch)
    push_folder(saved_folder, "org/eclip-tiny", private=True, revision="v1")
    commit = hub.only_commit("org/eclip-tiny")
    assert set(commit["files"]) == expected == set(folder_files(saved_folder))
    assert {"model.safetensors", "config.json", "README.md", "modeling_eclip.py", "tokenizer.json"} <= expected
    assert_clean(commit["files"])
    assert commit["revision"] == "v1" and hub.branches == [{"repo_id": "org/eclip-tiny", "branch": "v1"}]
    assert hub.repos == [{"repo_id": "org/eclip-tiny", "private": True, "exist_ok": True}]
    assert all(commit["files"][p] == open(os.path.join(saved_folder, p), "rb").read() for p in expected)
    card_of(commit["files"])  # parses

    push_folder(saved_folder, "org/public")  # not private: the repo keeps the owner's default visibility
    assert hub.repos[-1]["private"] is None and hub.commits[-1]["revision"] is None


def test_a_failed_push_says_why_and_where_the_intact_folder_is(saved_folder):
    # HF_HUB_OFFLINE=1 here (conftest): the real HfApi refuses at once
    before = local_files(saved_folder)
    with pytest.raises(PushError) as error:
        push_folder(saved_folder, "org/eclip-tiny")
    message = str(error.value)
    assert "offline" in message and os.path.abspath(saved_folder) in message and "intact" in message
    assert f"python -m eclip.training.hub {os.path.abspath(saved_folder)} org/eclip-tiny" in message
    assert "\n" not in message
    assert local_files(saved_folder) == before


# ------------------------------------------------------------------------------------------- eclip-pretrain
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """`eclip-pretrain --push-to-hub org/tiny-eclip --hub-private --hub-revision dev` on the tiny config."""
    from _pytest.monkeypatch import MonkeyPatch

    from eclip.training.pretrain import main

    out = tmp_path_factory.mktemp("pretrain") / "tiny-eclip"
    monkeypatch = MonkeyPatch()
    hub = FakeHub().install(monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["--config", TINY, "--max-steps", "2", "--output-dir", str(out), "--push-to-hub",
                     "org/tiny-eclip", "--hub-private", "--hub-revision", "dev"])
    finally:
        torch.set_num_threads(threads)
        monkeypatch.undo()
    assert code == 0
    return str(out), hub


def test_pretrain_pushes_its_final_folder_in_one_commit(pretrained):
    out, hub = pretrained
    commit = hub.only_commit("org/tiny-eclip")
    assert set(commit["files"]) == set(local_files(out))
    assert_clean(commit["files"])
    assert commit["revision"] == "dev" and hub.repos[0]["private"] is True
    card = card_of(commit["files"])
    assert card.text.lstrip().startswith("# org/tiny-eclip")  # the repo id, never the staging folder's name
    assert 'AutoModel.from_pretrained("org/tiny-eclip", trust_remote_code=True)' in card.text
    assert "partial" not in card.content and "tiny-eclip." not in card.content
    facts = card.data.to_dict()["eclip"]
    assert facts["repo_id"] == "org/tiny-eclip"
    assert facts["training"]["steps"] == 2 and facts["training"]["dataset"] == "synthetic:64"
    assert "- optimizer steps: 2" in card.text and "- data: `synthetic:64`" in card.text


def test_pretrained_folder_is_readable_by_others(pretrained):
    out, _ = pretrained
    umask = os.umask(0)
    os.umask(umask)
    for path, mode in modes(out).items():
        wanted = (0o777 if os.path.isdir(os.path.join(out, path)) else 0o666) & ~umask
        assert mode == wanted, (path, oct(mode), oct(wanted))


@pytest.mark.slow
def test_pushed_pretrained_model_loads_by_repo_id(pretrained, tmp_path):
    out, hub = pretrained
    commit = hub.only_commit("org/tiny-eclip")
    cache = tmp_path / "hub"
    lay_into_cache(cache, "org/tiny-eclip", commit["files"], revision="dev", oid=commit["oid"])
    image = tmp_path / "red.png"
    Image.new("RGB", (40, 50), (200, 10, 10)).save(image)
    script = """
import json, sys
import torch
from PIL import Image
import modeling_eclip
from transformers import AutoModel, AutoProcessor, pipeline

model = AutoModel.from_pretrained("org/tiny-eclip", revision="dev").eval()
processor = AutoProcessor.from_pretrained("org/tiny-eclip", revision="dev")
image = Image.open(sys.argv[1])
inputs = processor(images=[image], text=["red shirt", "blue jeans"], return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits_per_image
classifier = pipeline("zero-shot-image-classification", model="org/tiny-eclip", revision="dev")
scores = {r["label"]: r["score"] for r in classifier(image, candidate_labels=["shirt", "jeans"])}
print(json.dumps({"logits": logits.tolist(), "scores": scores, "module": modeling_eclip.__file__}))
"""
    report = json.loads(run_offline(script, cache, tmp_path, image).strip().splitlines()[-1])
    assert report["module"].startswith(REPO_ROOT)
    from transformers import AutoModel, AutoProcessor, pipeline

    model, processor = AutoModel.from_pretrained(out).eval(), AutoProcessor.from_pretrained(out)
    inputs = processor(images=[Image.open(image)], text=["red shirt", "blue jeans"], return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits_per_image
    torch.testing.assert_close(torch.tensor(report["logits"]), expected, atol=1e-5, rtol=1e-5)
    local = {r["label"]: r["score"] for r in pipeline("zero-shot-image-classification", model=out)(
        Image.open(image), candidate_labels=["shirt", "jeans"])}
    assert report["scores"] == pytest.approx(local, abs=1e-5)

    # A machine without the package: the code pushed with the weights runs, with the same numbers.
    remote = """
import json, sys
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("org/tiny-eclip", revision="dev", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("org/tiny-eclip", revision="dev", trust_remote_code=True)
inputs = processor(images=[Image.open(sys.argv[1])], text=["red shirt", "blue jeans"], return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits_per_image
print(json.dumps({"logits": logits.tolist(), "module": type(model).__module__,
                  "eclip": "modeling_eclip" in sys.modules}))
"""
    report = json.loads(run_offline(remote, cache, tmp_path, image, hide_package=True).strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules.") and not report["eclip"]
    torch.testing.assert_close(torch.tensor(report["logits"]), expected, atol=1e-5, rtol=1e-5)


def test_update_card_keeps_the_training_facts_and_adds_results(pretrained, tmp_path):
    from eclip.model_cards.card import write_model_card

    out, _ = pretrained
    folder = tmp_path / "copy"
    folder.mkdir()
    for path, data in local_files(out).items():
        (folder / path).write_bytes(data)
    results = {"tasks": {"zero_shot": {"accuracy": 0.25, "macro_f1": 0.1, "weighted_f1": 0.2, "chance_accuracy": 0.05,
                                       "majority_accuracy": 0.12}}, "limit": 12}
    write_model_card(str(folder), results)
    card = ModelCard.load(folder / "README.md")
    assert card.text.lstrip().startswith("# org/tiny-eclip")
    assert "- optimizer steps: 2" in card.text and "- data: `synthetic:64`" in card.text
    assert card.data.to_dict()["eclip"]["training"]["steps"] == 2
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results][0] == ("accuracy", 0.25)
    assert "against 0.0500 for a uniform guess and 0.1200 for always the commonest test class" in card.text


@pytest.mark.slow
def test_evaluate_update_card_pushes_the_folder_with_its_results(pretrained, tmp_path, monkeypatch, data_dir):
    from eclip.training.evaluation import main

    out, _ = pretrained
    folder = tmp_path / "model"
    folder.mkdir()
    for path, data in local_files(out).items():
        (folder / path).write_bytes(data)
    hub = FakeHub().install(monkeypatch)
    assert main(["--model", str(folder), "--data", data_dir, "--tasks", "zero_shot", "--limit", "12",
                 "--output", str(tmp_path / "eval"), "--no-progress", "--push-to-hub", "org/tiny-eclip-eval"]) == 0
    commit = hub.only_commit("org/tiny-eclip-eval")
    assert set(commit["files"]) == set(local_files(folder))
    card = card_of(commit["files"])
    assert card.text.lstrip().startswith("# org/tiny-eclip-eval")
    assert "- optimizer steps: 2" in card.text  # the pretraining facts survived the rebuild
    assert {r.metric_type for r in card.data.eval_results} >= {"accuracy", "f1"}


# ----------------------------------------------------------------------------------- LoRA adapters, portable
@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    from _heads_backbone import build_backbone

    return build_backbone(str(tmp_path_factory.mktemp("share")))


def test_adapter_names_its_base_by_absolute_path_and_loads_from_anywhere(backbone, tmp_path, monkeypatch, one_thread):
    from transformers import AutoModelForSequenceClassification, AutoProcessor, pipeline

    from modeling_eclip import EclipForProductClassification
    from eclip.training.lora import apply_lora, load_adapter, save_adapter

    work = tmp_path / "work"
    work.mkdir()
    os.symlink(backbone, work / "eclip-default")
    monkeypatch.chdir(work)  # the base is given as a relative path, as on a command line
    torch.manual_seed(0)
    head = EclipForProductClassification.from_pretrained("eclip-default", num_labels=3, modality="text",
                                                         id2label={0: "Apparel", 1: "Footwear", 2: "Accessories"})
    model = apply_lora(head, r=4, alpha=8, dropout=0.0)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            torch.nn.init.normal_(parameter, std=0.05)
    model.eval()
    processor = AutoProcessor.from_pretrained("eclip-default")
    tokens = processor.tokenizer(TITLES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**tokens).logits
    save_adapter(model, "adapter", processor)
    config = json.loads((work / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == os.path.abspath("eclip-default")

    card = ModelCard.load(work / "adapter" / "README.md")  # a real card, not peft's blank template
    assert "More Information Needed" not in card.text and card.data.library_name == "peft"
    assert "PeftModel.from_pretrained" in card.text and "text-classification" in card.text

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    adapter = str(work / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(load_adapter(adapter).eval()(**tokens).logits, expected, atol=1e-5, rtol=0)
        auto = AutoModelForSequenceClassification.from_pretrained(adapter).eval()
        torch.testing.assert_close(auto(**tokens).logits, expected, atol=1e-5, rtol=0)
    results = pipeline("text-classification", model=adapter)(TITLES)
    assert [r["label"] for r in results] == [auto.config.id2label[i] for i in expected.argmax(-1).tolist()]

    pushed = adapter_config_for_hub(adapter, "org/eclip-base")
    assert json.loads(pushed["adapter_config.json"])["base_model_name_or_path"] == "org/eclip-base"
    assert config == json.loads((work / "adapter" / "adapter_config.json").read_text())  # the local file is untouched


def test_a_moved_base_is_a_clear_error(backbone, tmp_path, one_thread):
    from modeling_eclip import EclipForProductClassification
    from eclip.training.lora import apply_lora, load_adapter, save_adapter

    model = apply_lora(EclipForProductClassification.from_pretrained(backbone, num_labels=2, modality="text"), r=2)
    save_adapter(model, str(tmp_path / "adapter"))
    config_path = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(tmp_path / "moved-away")
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="is not a folder on this machine"):
        load_adapter(str(tmp_path / "adapter"))


@pytest.mark.parametrize("value", [0o022, 0o027], ids=["umask022", "umask027"])
def test_saved_folders_follow_the_umask(value, umask, tmp_path, backbone, one_thread):
    from modeling_eclip import EclipForProductClassification, EclipModel
    from eclip.training.lora import apply_lora, save_adapter

    umask(value)
    model_dir, adapter_dir = tmp_path / "model", tmp_path / "adapter"
    EclipModel(tiny_config()).save_pretrained(model_dir)
    head = EclipForProductClassification.from_pretrained(backbone, num_labels=2, modality="text")
    save_adapter(apply_lora(head, r=2), str(adapter_dir), tiny_processor())
    for folder in (model_dir, adapter_dir):
        for path, mode in modes(folder).items():
            wanted = (0o777 if os.path.isdir(os.path.join(folder, path)) else 0o666) & ~value
            assert mode == wanted, (folder, path, oct(mode))


# ------------------------------------------------------------------------------------------- eclip-finetune
@pytest.mark.slow
def test_finetune_lora_push_and_load_by_repo_id(backbone, tmp_path, monkeypatch, capsys, data_dir):
    from eclip.training.finetune import main

    out = tmp_path / "category-lora"
    hub = FakeHub().install(monkeypatch)
    argv = ["--task", "category", "--label-column", "masterCategory", "--model", backbone, "--data", data_dir,
            "--modality", "text", "--lora", "r=4,alpha=8,dropout=0", "--merge-lora", "--limit", "60",
            "--max-steps", "4", "--batch-size", "8", "--max-length", "24", "--logging-steps", "2",
            "--output-dir", str(out), "--push-to-hub", "org/category-lora", "--hub-revision", "exp1",
            "--base-model-id", "org/eclip-base"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "[eclip-finetune] step 4/4 (100%)" in err and "steps/s" in err and "ETA" in err  # a redirected log

    commit = hub.only_commit("org/category-lora")
    files = commit["files"]
    assert set(files) == set(local_files(out)) and commit["revision"] == "exp1"
    assert {"adapter_model.safetensors", "adapter_config.json", "config.json", "README.md", "test_metrics.json",
            "merged/model.safetensors", "merged/config.json", "merged/README.md", "merged/tokenizer.json"} <= set(files)
    assert_clean(files)
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == "org/eclip-base"
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == os.path.abspath(backbone)
    report = json.loads(files["test_metrics.json"])
    card = card_of(files)
    assert card.text.lstrip().startswith("# org/category-lora")
    assert card.data.base_model == "org/eclip-base" and card.data.library_name == "peft"
    accuracy = {(r.metric_type, r.metric_config): r.metric_value for r in card.data.eval_results}[("accuracy", None)]
    assert accuracy == pytest.approx(report["test"]["accuracy"], abs=1e-6)
    merged_card = card_of(files, "merged/README.md")
    assert 'EclipForProductClassification.from_pretrained("org/category-lora", subfolder="merged")' in merged_card.text
    assert merged_card.data.eval_results

    # a second run into the same folder is refused before anything loads
    assert main(argv) == 2
    assert "already holds a trained model" in capsys.readouterr().err

    cache = tmp_path / "hub"
    lay_into_cache(cache, "org/eclip-base", local_files(backbone))
    lay_into_cache(cache, "org/category-lora", files, revision="exp1", oid=commit["oid"])
    script = """
import json, sys
import torch
import modeling_eclip
from peft import PeftModel
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoProcessor, pipeline

titles = json.loads(sys.argv[1])
repo = "org/category-lora"
processor = AutoProcessor.from_pretrained(repo, revision="exp1")
tokens = processor.tokenizer(titles, padding=True, return_tensors="pt")
config = AutoConfig.from_pretrained(repo, revision="exp1")
base = AutoModelForSequenceClassification.from_pretrained("org/eclip-base", config=config)
peft_model = PeftModel.from_pretrained(base, repo, revision="exp1").eval()
# (Auto classes would take the root's adapter_config.json for the subfolder too: the merged copy names its class)
merged = modeling_eclip.EclipForProductClassification.from_pretrained(repo, revision="exp1", subfolder="merged").eval()
with torch.no_grad():
    out = {"peft": peft_model(**tokens).logits.tolist(), "merged": merged(**tokens).logits.tolist()}
# (the pipeline would look for the adapter's revision in the base repo too: it reads main, the same commit here)
out["pipeline"] = [r["label"] for r in pipeline("text-classification", model=repo)(titles)]
print(json.dumps(out))
"""
    report = json.loads(run_offline(script, cache, tmp_path, json.dumps(TITLES)).strip().splitlines()[-1])
    from transformers import AutoProcessor

    from eclip.training.lora import load_adapter

    tokens = AutoProcessor.from_pretrained(out).tokenizer(TITLES, padding=True, return_tensors="pt")
    local = load_adapter(str(out)).eval()
    with torch.no_grad():
        expected = local(**tokens).logits
    torch.testing.assert_close(torch.tensor(report["peft"]), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(report["merged"]), expected, atol=1e-4, rtol=0)
    id2label = local.get_base_model().config.id2label
    assert report["pipeline"] == [id2label[i] for i in expected.argmax(-1).tolist()]


@pytest.mark.slow
def test_python_push_to_hub_of_a_head_loads_with_its_auto_class(backbone, tmp_path, monkeypatch, one_thread):
    """The README's Python path: `model.push_to_hub` and `processor.push_to_hub` (two commits), loaded by repo id."""
    from transformers import AutoProcessor

    from modeling_eclip import EclipForProductClassification

    torch.manual_seed(0)
    head = EclipForProductClassification.from_pretrained(backbone, num_labels=2, modality="image",
                                                         id2label={0: "Apparel", 1: "Footwear"}).eval()
    processor = AutoProcessor.from_pretrained(backbone)
    hub = FakeHub().install(monkeypatch)
    head.push_to_hub("org/eclip-head", private=True)
    processor.push_to_hub("org/eclip-head")
    files = {}
    for commit in hub.commits:
        files.update(commit["files"])
    assert len(hub.commits) == 2 and hub.repos[0]["private"] is True
    assert "model.safetensors" in files and "processor_config.json" in files
    assert_clean(files)
    cache = tmp_path / "hub"
    lay_into_cache(cache, "org/eclip-head", files)
    image = tmp_path / "shoe.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 70, 3), dtype=np.uint8)).save(image)
    script = """
import json, sys
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, AutoProcessor, pipeline

model = AutoModelForImageClassification.from_pretrained("org/eclip-head", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("org/eclip-head", trust_remote_code=True)
with torch.no_grad():
    logits = model(pixel_values=processor(images=Image.open(sys.argv[1]), return_tensors="pt")["pixel_values"]).logits
labels = [r["label"] for r in pipeline("image-classification", model="org/eclip-head", trust_remote_code=True)(
    Image.open(sys.argv[1]))]
print(json.dumps({"logits": logits.tolist(), "labels": labels, "module": type(model).__module__}))
"""
    report = json.loads(run_offline(script, cache, tmp_path, image, hide_package=True).strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules.")
    with torch.no_grad():
        expected = head(pixel_values=processor(images=Image.open(image), return_tensors="pt")["pixel_values"]).logits
    torch.testing.assert_close(torch.tensor(report["logits"]), expected, atol=1e-5, rtol=1e-5)
    assert report["labels"][0] == head.config.id2label[int(expected.argmax())]
