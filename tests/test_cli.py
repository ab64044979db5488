"""
The three commands fail fast and clearly: `--help` imports no torch, every argument, path and name is checked before a
model or the data loads, and a mistake is one line (with the closest valid name), exit status 2, no traceback.
"""

import configparser
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from eclip.training.cli import UsageError, check_model_reference, check_output_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_commands_import_no_torch_before_their_arguments_are_checked():
    code = (
        "import sys\n"
        "import eclip.training.pretrain, eclip.training.finetune, eclip.training.evaluation, eclip.training.evaluation.cli, eclip.training.hub\n"
        "parsers = [eclip.training.pretrain.build_arg_parser(), eclip.training.finetune.build_parser(),\n"
        "           eclip.training.evaluation.cli.build_parser()]\n"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
    for module in ("eclip.training.finetune", "eclip.training.evaluation"):
        result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0 and "--push-to-hub" in result.stdout, result.stderr[-2000:]


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "eclip-default"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "processor_config.json").write_text("{}")
    return folder


def one_line_error(capsys, prog):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def test_finetune_mistakes_are_one_line_with_a_suggestion(model_folder, tmp_path, capsys, data_dir, monkeypatch):
    from eclip.training.finetune import main

    monkeypatch.delenv("HF_TOKEN", raising=False)
    model = str(model_folder)
    out = str(tmp_path / "out")
    common = ["--data", data_dir, "--output-dir", out]
    cases = [
        (["--task", "category", "--model", model[:-2] + "tl"], "(did you mean"),
        (["--task", "category", "--model", model, "--label-column", "articletype"], "(did you mean 'articleType'?)"),
        (["--task", "category", "--model", model, "--lora", "r=8,alpah=16"], "unknown key 'alpah' (did you mean 'alpha'?"),
        (["--task", "category", "--model", model, "--lora", "r=eight"], "r='eight' is not an integer"),
        (["--task", "matching", "--model", model, "--matching-datasets", "abt-by"], "(did you mean 'abt-buy'?)"),
        (["--task", "category", "--model", model, "--data", str(tmp_path / "nowhere")], "no such folder"),
        (["--task", "category", "--model", "eclip-defualt"], "no such folder"),
        (["--task", "category", "--model", model, "--push-to-hub", "org/x"], "needs a Hugging Face token"),
        (["--task", "category", "--model", model, "--push-to-hub", "not a repo"], "is not a Hub repo id"),
        (["--task", "category", "--model", model, "--hub-revision", "dev"], "need --push-to-hub"),
        (["--task", "category", "--model", str(tmp_path)], "is not a model folder: it has no config.json"),
    ]
    for argv, message in cases:
        assert main([*common, *argv]) == 2, argv
        line = one_line_error(capsys, "eclip-finetune")
        assert message in line, (argv, line)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert main(["--task", "category", "--model", model, "--lora", "--push-to-hub", "org/x", *common]) == 2
    assert "--base-model-id ORG/NAME" in one_line_error(capsys, "eclip-finetune")
    os.makedirs(out)
    open(os.path.join(out, "adapter_config.json"), "w").write("{}")
    assert main(["--task", "category", "--model", model, *common]) == 2
    assert "already holds a trained model (adapter_config.json): pass --overwrite" in one_line_error(capsys, "eclip-finetune")
    for argv, message in ((["--task", "categry", "--model", model], "(did you mean 'category'?)"),
                          (["--task", "category", "--model", model, "--epochs", "0"], "--epochs must be positive"),
                          (["--task", "category", "--model", model, "--lerning-rate", "1"], "'--learning-rate'")):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, *common])
        assert exit_info.value.code == 2
        assert message in one_line_error(capsys, "eclip-finetune")
    assert not os.path.exists(os.path.join(out, "test_metrics.json"))


def test_evaluate_mistakes_are_one_line(model_folder, tmp_path, capsys, data_dir):
    from eclip.training.evaluation import main

    out = str(tmp_path / "eval")
    cases = [
        (["--model", str(model_folder), "--tasks", "zero_sht"], "(did you mean 'zero_shot'?)"),
        (["--model", str(model_folder)[:-1]], "(did you mean"),
        (["--model", "org/eclip", "--update-card"], "is not a local folder, and --update-card (and --push-to-hub) write"),
        (["--model", str(model_folder), "--hub-private"], "need --push-to-hub"),
        (["--model", str(model_folder), "--batch-size", "0"], "--batch-size must be positive"),
        (["--model", str(model_folder), "--limit", "0"], "limit must be a positive integer"),
    ]
    for argv, message in cases:
        assert main([*argv, "--data", data_dir, "--output", out]) == 2, argv
        assert message in one_line_error(capsys, "eclip-evaluate")
    assert not os.path.exists(out)


def test_a_mistyped_local_model_is_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    (tmp_path / "eclip-default").mkdir()
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert check_model_reference("eclip-default") == "local"
    with pytest.raises(UsageError, match=r"'eclip-defualt': no such folder \(did you mean 'eclip-default'\?\)"):
        check_model_reference("eclip-defualt")
    with pytest.raises(UsageError, match="no such folder"):  # runs/ is local: runs/x is a path, not a repo id
        check_model_reference("runs/eclip")
    with pytest.raises(UsageError, match="no such folder"):  # no namespace: not an ECLIP repo id
        check_model_reference("my-model")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    assert check_model_reference("bert-base-uncased", "--text-model", namespaced=False) == "hub"
    assert check_model_reference("org/eclip-fashion") == "hub"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UsageError, match="not in the Hub cache while HF_HUB_OFFLINE is set"):
        check_model_reference("org/eclip-fashion")
    (tmp_path / "cache" / "models--org--eclip-fashion" / "snapshots" / "abc").mkdir(parents=True)
    assert check_model_reference("org/eclip-fashion") == "hub"


def test_output_dir_checks(tmp_path):
    check_output_dir(str(tmp_path / "new"), overwrite=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "plan.txt").write_text("not a model")
    check_output_dir(str(tmp_path / "notes"), overwrite=False)  # a folder without a model is fine
    (tmp_path / "notes" / "model.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match="--overwrite"):
        check_output_dir(str(tmp_path / "notes"), overwrite=False)
    check_output_dir(str(tmp_path / "notes"), overwrite=True)


def test_the_main_jobs_text_tower_is_a_requirement_of_the_package():
    """`pip install -e .` (no extra) must be enough for `eclip-pretrain`, whose text tower is a package."""
    from importlib.metadata import packages_distributions

    from eclip.training.towers import default_text_model

    module = os.path.basename(os.path.dirname(default_text_model()))  # .../site-packages/<module>/model
    distribution = packages_distributions()[module][0]
    setup = configparser.ConfigParser()
    setup.read(os.path.join(REPO_ROOT, "setup.cfg"))
    requirements = setup["options"]["install_requires"].split()
    assert distribution in requirements, (distribution, requirements)
