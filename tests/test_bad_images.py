"""
Undecodable images in the data of `eclip-finetune` and `eclip-evaluate` (issue #37): a truncated JPEG and a text file
listed as a photo, in both the train and the test split. By default both commands skip such rows, finish, and name
the files in one log line; with `--on-bad-image error` they stop with one line naming the file, no traceback, and no
output folder. Run as a user runs them: `python -m ...` in a subprocess.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import DATA_DIR, tiny_config, tiny_processor

pytestmark = pytest.mark.slow  # four subprocess runs of the commands: ~35 s of CPU, over a minute on a busy machine

PER_CLASS = 3  # rows per class and split: 6 per split, two classes of masterCategory
NON_IMAGES = {"train": "images/notes1.txt", "test": "images/notes2.txt"}  # no split keyword in the names


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory, data_dir):
    """A fashion-products data root with, in train and in test, one truncated JPEG and one text file."""
    root = tmp_path_factory.mktemp("bad-data")
    source, target = os.path.join(data_dir, "fashion-products"), root / "fashion-products"
    (target / "images").mkdir(parents=True)
    with open(os.path.join(source, "metadata.csv"), newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    picked = []
    for split in ("train", "validation", "test"):
        for category in ("Apparel", "Footwear"):
            picked += [r for r in rows if r["split"] == split and r["masterCategory"] == category][:PER_CLASS]
    for row in picked:
        shutil.copy(os.path.join(source, row["file_name"]), target / row["file_name"])
    bad = {}
    for split in ("train", "test"):
        row = next(r for r in picked if r["split"] == split)
        photo = (target / row["file_name"]).read_bytes()
        (target / row["file_name"]).write_bytes(photo[: len(photo) // 2])
        (target / NON_IMAGES[split]).write_text("not an image\n")
        picked.append({**row, "file_name": NON_IMAGES[split], "id": f"9{row['id']}"})
        bad[split] = {row["file_name"]: "truncated", NON_IMAGES[split]: "not an image"}
    with open(target / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(picked)
    return str(root), bad


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "eclip-tiny"
    torch.manual_seed(0)
    from modeling_eclip import EclipModel

    EclipModel(tiny_config()).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return str(folder)


def run(module, *args, cwd):
    env = {**os.environ, "ECLIP_DATA_DIR": DATA_DIR, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def finetune(model, data, output, *extra, cwd):
    return run("eclip.training.finetune", "--task", "category", "--label-column", "masterCategory", "--model", model,
               "--data", data, "--max-steps", 2, "--batch-size", 4, "--output-dir", output, *extra, cwd=cwd)


def evaluate(model, data, output, *extra, cwd):
    return run("eclip.training.evaluation", "--model", model, "--data", data, "--tasks", "zero_shot,linear_probe",
               "--output", output, "--limit", 10, "--batch-size", 8, "--no-progress", *extra, cwd=cwd)


def skip_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if "unreadable image" in line]
    assert len(lines) == 1, result.stderr[-3000:]  # one line names them all
    return lines[0]


def check_one_line_error(result, bad, output):
    assert result.returncode != 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert any(name in errors[0] for split in bad.values() for name in split), errors[0]
    assert not os.path.exists(output), os.listdir(output)


@pytest.fixture(scope="module")
def finetuned(bad_data, tiny_model, tmp_path_factory):
    data, _ = bad_data
    cwd = tmp_path_factory.mktemp("finetune")
    result = finetune(tiny_model, data, "head", cwd=cwd)
    return result, cwd / "head"


def assert_skip_line_names_every_file(result, bad):
    """The command's one skip line counts the four bad files (two per split) and names each with its reason."""
    line = skip_line(result)
    assert "skipped 4 unreadable images (train 2, test 2)" in line, line
    for files in bad.values():
        for name, reason in files.items():
            assert f"{name} ({reason})" in line, line


def test_finetune_skips_counts_and_names_undecodable_images(finetuned, bad_data):
    result, output = finetuned
    _, bad = bad_data
    assert result.returncode == 0, result.stderr[-3000:]
    assert_skip_line_names_every_file(result, bad)
    metrics = json.loads((output / "test_metrics.json").read_text())
    assert metrics["skipped_images"]["count"] == 4
    assert {entry["file"] for entry in metrics["skipped_images"]["files"]} == {n for f in bad.values() for n in f}
    # The last lines say where every artefact went.
    tail = result.stdout.strip().splitlines()[-4:]
    assert tail[0].startswith("  skipped images: 4 unreadable"), tail
    assert tail[1].split() == ["model:", "head", "(EclipForProductClassification,", "with", "its", "processor)"], tail
    assert tail[2].split() == ["test", "metrics:", os.path.join("head", "test_metrics.json")], tail
    assert tail[3].split() == ["model", "card:", os.path.join("head", "README.md")], tail


def test_finetune_fails_on_the_first_undecodable_image_when_asked(bad_data, tiny_model, tmp_path):
    data, bad = bad_data
    result = finetune(tiny_model, data, "head", "--on-bad-image", "error", cwd=tmp_path)
    check_one_line_error(result, bad, tmp_path / "head")
    assert "cannot be decoded" in result.stderr


def test_evaluate_skips_counts_and_names_undecodable_images_and_says_what_it_scores(finetuned, bad_data, tmp_path):
    _, head = finetuned
    data, bad = bad_data
    result = evaluate(head, data, "eval", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_skip_line_names_every_file(result, bad)
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["skipped_images"]["count"] == 4
    assert results["data"]["fashion_products"] == {"train": 5, "validation": 6, "test": 5}  # 7 rows, 2 bad
    # A fine-tuned head folder: one line says that its backbone is what is scored, and where the head's metrics are.
    notes = [line for line in result.stderr.splitlines() if "holds a category head" in line]
    assert len(notes) == 1 and "scores its backbone's embeddings" in notes[0], result.stderr[-3000:]
    assert "labels: Apparel, Footwear" in notes[0] and os.path.join(str(head), "test_metrics.json") in notes[0]
    tail = result.stdout.strip().splitlines()[-4:]
    assert tail[0].startswith("  skipped images: 4 unreadable"), tail
    assert tail[1].split() == ["results:", os.path.join("eval", "results.json")], tail
    assert tail[2].split() == ["report:", os.path.join("eval", "results.md")], tail
    assert tail[3].split() == ["plots:", os.path.join("eval", "zero_shot_confusion.png")], tail


def test_evaluate_fails_on_the_first_undecodable_image_when_asked(bad_data, tiny_model, tmp_path):
    data, bad = bad_data
    result = evaluate(tiny_model, data, "eval", "--on-bad-image", "error", cwd=tmp_path)
    check_one_line_error(result, bad, tmp_path / "eval")
    assert "cannot be decoded" in result.stderr and "train split" in result.stderr
