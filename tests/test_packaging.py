"""What `pip install eclip` puts into site-packages: no generic top-level name (`training`, `model_cards`) that a
user's own project could shadow or be shadowed by; the three commands resolve to the `eclip` namespace."""

import os
import shutil
import subprocess
import sys
import zipfile
from configparser import ConfigParser

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel built from a copy of the tracked sources (building in place would leave build/ in the checkout)."""
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for path in tracked.splitlines():
        if path.startswith(("benchmarks/", "tests/", "docs/")) or not os.path.exists(os.path.join(REPO, path)):
            continue  # the wheel is built from the working tree: a file deleted there is not in it
        os.makedirs(source / os.path.dirname(path), exist_ok=True)
        shutil.copy2(os.path.join(REPO, path), source / path)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(source)], check=True, capture_output=True)
    (built,) = out.glob("*.whl")
    return zipfile.ZipFile(built)


def test_wheel_installs_no_generic_top_level_names(wheel):
    top = {name.split("/")[0] for name in wheel.namelist() if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"eclip", "modeling_eclip"}


def test_wheel_carries_the_recipes_templates_and_metric_scripts(wheel):
    names = set(wheel.namelist())
    for path in ("eclip/training/configs/default.yaml", "eclip/training/configs/fashion.yaml",
                 "eclip/training/accelerate_configs/ddp.yaml", "eclip/model_cards/template.md",
                 "eclip/training/evaluation/cli.py", "eclip/training/search/api.py", "modeling_eclip/modeling_eclip.py",
                 "modeling_eclip/loading_utils.py", "modeling_eclip/tower_utils.py"):
        assert path in names
    assert any(name.startswith("modeling_eclip/metrics/retrieval/") for name in names)


def test_console_scripts_point_into_the_namespace():
    parser = ConfigParser()
    parser.read(os.path.join(REPO, "setup.cfg"))
    scripts = dict(line.split(" = ") for line in parser["options.entry_points"]["console_scripts"].strip().splitlines())
    assert scripts == {"eclip-pretrain": "eclip.training.pretrain:main",
                       "eclip-finetune": "eclip.training.finetune:main",
                       "eclip-evaluate": "eclip.training.evaluation:main",
                       "eclip-export": "eclip.training.export:main",
                       "eclip-index": "eclip.training.search.index:main",
                       "eclip-search": "eclip.training.search.search:main",
                       "eclip-serve": "eclip.training.search.serve:main"}


def test_installed_package_imports_outside_the_checkout(tmp_path):
    """From a folder other than the checkout, `eclip.training` imports and bare `training` does not exist."""
    code = ("import importlib.util, eclip.training.pretrain, eclip.model_cards.card;"
            "print(importlib.util.find_spec('training'), importlib.util.find_spec('model_cards'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "None"]
