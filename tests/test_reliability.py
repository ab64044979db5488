"""
Reliability of pretraining: a run killed at a random moment resumes to the weights of an uninterrupted run,
checkpoints are atomic, non-finite losses are skipped (and stop the run when they pile up), logit_scale stays clamped
and corrupt images are skipped and counted.
"""

import logging
import math
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO_ROOT, tiny_processor
from PIL import Image
from safetensors.torch import load_file
from test_trainer import make_rows, make_trainer, tiny_model
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from modeling_eclip import EclipModel
from eclip.training.trainer import EclipTrainer, EclipTrainingArguments

TINY = os.path.join("training", "configs", "tiny.yaml")
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# ------------------------------------------------------------------------------------------- kill and resume


def _pretrain_command(out, *extra) -> list[str]:
    return [
        sys.executable, "-m", "eclip.training.pretrain", "--config", TINY, "--max-steps", "16", "--save-steps", "2",
        "--output-dir", str(out), *extra,
    ]  # fmt: skip


def _run(command) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return result


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_matches_an_uninterrupted_run(tmp_path):
    """
    The tiny CLI run (16 steps, dropout on, scenes from the real collator, checkpoint every 2 steps) is SIGKILLed at a
    random moment after its first checkpoint, possibly mid-save; `--resume` continues from the last complete
    checkpoint and ends with exactly the weights of a run that was never interrupted.
    """
    _run(_pretrain_command(tmp_path / "a"))
    expected = load_file(tmp_path / "a" / "model.safetensors")

    out = tmp_path / "b"
    checkpoints = tmp_path / "b-checkpoints"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        _pretrain_command(out), cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    rng = random.Random(1234)
    try:
        deadline = time.time() + 180

        def wait_for(step: int) -> float:
            while not (checkpoints / f"checkpoint-{step}").is_dir():
                assert process.poll() is None, f"the run ended before checkpoint {step}"
                assert time.time() < deadline, f"no checkpoint {step} after 180 s"
                time.sleep(0.005)
            return time.time()

        # The kill lands anywhere in a whole save interval (mid-step or mid-save) after a random checkpoint, and at
        # least two intervals before the end however fast this machine runs the tiny model.
        first = wait_for(2)
        interval = wait_for(4) - first
        wait_for(rng.choice([4, 6, 8, 10, 12]))
        time.sleep(rng.uniform(0.0, interval))
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists()
    last = get_last_checkpoint(str(checkpoints))
    assert last is not None and int(last.rsplit("-", 1)[1]) < 16

    result = _run(_pretrain_command(out, "--resume"))
    assert "steps:          16" in result.stdout
    resumed = load_file(out / "model.safetensors")
    torch.testing.assert_close(resumed, expected, rtol=0, atol=1e-6)
    assert not [name for name in os.listdir(checkpoints) if not name.startswith("checkpoint-")]  # no staging left


# ------------------------------------------------------------------------------------------ atomic checkpoints


def test_a_save_that_dies_midway_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    settings = dict(max_steps=6, save_strategy="steps", save_steps=2, logging_steps=1, learning_rate=1e-2)
    trainer = make_trainer(tiny_model(), tmp_path, **settings)
    original = EclipTrainer._save_optimizer_and_scheduler

    def dies_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise OSError("killed mid-save")
        return original(self, output_dir)

    monkeypatch.setattr(EclipTrainer, "_save_optimizer_and_scheduler", dies_at_step_4)
    with pytest.raises(OSError, match="killed mid-save"):
        trainer.train()
    run = tmp_path / "run"
    assert sorted(os.listdir(run)) == ["checkpoint-2", "tmp-checkpoint-4"]  # the model was written, but not published
    assert get_last_checkpoint(str(run)) == str(run / "checkpoint-2")
    EclipModel.from_pretrained(run / "checkpoint-2")  # complete and loadable

    monkeypatch.setattr(EclipTrainer, "_save_optimizer_and_scheduler", original)
    resumed = make_trainer(tiny_model(seed=5), tmp_path, save_total_limit=2, **settings)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    assert sorted(os.listdir(run)) == ["checkpoint-4", "checkpoint-6"]  # rotation works, the stale staging is gone
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert (run / "checkpoint-6" / name).is_file()


# ----------------------------------------------------------------------------------------- non-finite losses


class Snapshots(TrainerCallback):
    """The weights after each optimizer step."""

    def __init__(self):
        self.weights = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.weights[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}


def _nan_at(model, calls: set | None):
    """Make `model.compute_loss` return NaN at the given call numbers (1-based; None: always)."""
    original = model.compute_loss
    count = [0]

    def compute_loss(*args, **kwargs):
        loss, components = original(*args, **kwargs)
        count[0] += 1
        if calls is None or count[0] in calls:
            nan = torch.tensor(float("nan"))
            return loss * nan, {name: value * nan for name, value in components.items()}
        return loss, components

    model.compute_loss = compute_loss


def test_a_nonfinite_step_is_skipped_counted_and_training_continues(tmp_path, caplog):
    model = tiny_model()
    _nan_at(model, {2})
    trainer = make_trainer(model, tmp_path, max_steps=4, logging_steps=1, learning_rate=1e-2, weight_decay=0.1)
    snapshots = Snapshots()
    trainer.add_callback(snapshots)
    with caplog.at_level(logging.WARNING, logger="eclip.training.trainer"):
        trainer.train()
    assert trainer.state.global_step == 4
    torch.testing.assert_close(snapshots.weights[2], snapshots.weights[1], rtol=0, atol=0)  # step 2: no update
    assert not torch.equal(snapshots.weights[3]["logit_scale"], snapshots.weights[2]["logit_scale"])
    assert all(torch.isfinite(value).all() for value in model.state_dict().values())
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["num_nonfinite_steps"] for entry in logs] == [0, 1, 1, 1]
    assert all(entry["loss_itc"] == entry["loss_itc"] for entry in logs if "loss_itc" in entry)  # no NaN mean
    assert trainer.num_nonfinite_steps == 1
    assert "Non-finite loss or gradient at step 2" in caplog.text


def test_too_many_nonfinite_steps_stop_the_run_with_a_clear_error(tmp_path):
    model = tiny_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    _nan_at(model, None)
    trainer = make_trainer(model, tmp_path, max_steps=5, logging_steps=1, max_nonfinite_steps=2)
    with pytest.raises(RuntimeError, match=r"step 3.*max_nonfinite_steps=2.*Lower the learning rate"):
        trainer.train()
    torch.testing.assert_close(model.state_dict(), initial, rtol=0, atol=0)  # no skipped step touched the weights
    with pytest.raises(ValueError, match="max_nonfinite_steps"):
        EclipTrainingArguments(output_dir="unused", max_nonfinite_steps=-1)


def test_logit_scale_stays_clamped_under_a_huge_learning_rate(tmp_path):
    """
    The scale the model uses is exp(logit_scale) clamped at 100, whatever the raw parameter is. The raw parameter
    starts above ln(100) (so the bound holds only through the clamp; from the default init a huge learning rate
    drives it down, not up) and training with a huge learning rate must neither diverge nor lift the used scale.
    """
    from modeling_eclip.losses import instance_text_scores

    model = tiny_model()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0) + 1.0)  # exp: 272, if nothing clamped it
    trainer = make_trainer(
        model, tmp_path, max_steps=4, learning_rate=50.0, max_grad_norm=0.0, warmup_steps=0, max_nonfinite_steps=4
    )
    trainer.train()
    assert trainer.state.global_step == 4
    assert all(torch.isfinite(value).all() for value in model.state_dict().values())  # diverging steps were skipped
    assert model.logit_scale.item() > math.log(100.0)  # still above the clamp: the clamp is what bounds the scale
    assert model.clamped_logit_scale().item() == pytest.approx(100.0)
    batch = make_rows(4)
    model.eval()
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k != "product_ids"})
    cosines = instance_text_scores(out.instance_embeds, out.text_embeds)[0]  # s(I, T) = max_k <q_k, t>, in [-1, 1]
    torch.testing.assert_close(out.logits_per_image, 100.0 * cosines)
    assert out.logits_per_image.abs().max() <= 100.0 + 1e-3


# ------------------------------------------------------------------------------------------- corrupt images


def test_corrupt_images_in_the_training_set_are_skipped_and_counted(tmp_path, caplog):
    from eclip.training.data import PretrainingCollator, load_product_dataset

    photos = tmp_path / "photos"
    photos.mkdir()
    lines = ["image_path,product_id,title"]
    for index in range(6):
        Image.new("RGB", (40, 40), (40 * index, 255 - 30 * index, 90)).save(photos / f"{index}.jpg")
        lines.append(f"photos/{index}.jpg,{index},Product number {index}")
    good = (photos / "0.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (photos / "empty.jpg").write_bytes(b"")
    lines += ["photos/truncated.jpg,100,Truncated photo", "photos/empty.jpg,101,Empty photo"]
    (tmp_path / "products.csv").write_text("\n".join(lines) + "\n")

    dataset = load_product_dataset(f"csv:{tmp_path / 'products.csv'}")
    assert len(dataset) == 8
    args = EclipTrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=4, per_device_train_batch_size=4, logging_steps=1,
        report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0,
    )  # fmt: skip
    collator = PretrainingCollator(tiny_processor(), scene_probability=0.5, max_length=16, seed=0)
    trainer = EclipTrainer(model=tiny_model(), args=args, train_dataset=dataset, data_collator=collator)
    with caplog.at_level(logging.WARNING):
        trainer.train()
    # 4 steps of 4 rows: two passes over the 8 rows, so each of the 2 bad rows is seen twice.
    assert trainer.state.global_step == 4
    assert trainer.num_skipped_images == 2 * 2
    assert trainer.state.log_history[-1]["num_skipped_images"] == 4  # the end-of-training summary
    assert "4 corrupt or unreadable images were skipped" in caplog.text
    assert caplog.text.count("cannot be decoded") == 4


def test_fine_tuning_skips_corrupt_images_and_a_batch_left_empty(tmp_path):
    """eclip-finetune's trainer: rows whose image does not decode leave their batch and are recorded once per file; a
    batch with no decodable image is skipped (no forward, no gradient) and training goes on with the others."""
    import datasets
    from conftest import tiny_config

    from modeling_eclip import EclipForProductClassification
    from eclip.training.evaluation.images import SkippedImages
    from eclip.training.finetune import ClassificationCollator, skipping_trainer_class

    photos = tmp_path / "photos"
    photos.mkdir()
    paths = []
    for index in range(4):
        Image.new("RGB", (40, 40), (60 * index, 90, 200 - 40 * index)).save(photos / f"{index}.jpg")
        paths.append(str(photos / f"{index}.jpg"))
    good = (photos / "0.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (photos / "notes.txt").write_text("not an image\n")
    bad = [str(photos / "truncated.jpg"), str(photos / "notes.txt")]
    # Unshuffled batches of 2: the bad pair forms a batch of its own (skipped), the good photos two batches.
    dataset = datasets.Dataset.from_dict(
        {"image": [{"bytes": None, "path": p} for p in bad + paths], "labels": [0, 1, 0, 1, 0, 1]},
        features=datasets.Features({"image": datasets.Image(decode=False), "labels": datasets.Value("int64")}),
    )
    torch.manual_seed(0)
    model = EclipForProductClassification(tiny_config(num_labels=2, modality="image"))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = EclipTrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=6, per_device_train_batch_size=2, report_to=[], use_cpu=True,
        disable_tqdm=True, save_strategy="no", seed=0, train_sampling_strategy="sequential", learning_rate=1e-2,
    )  # fmt: skip
    trainer = skipping_trainer_class()(model=model, args=args, train_dataset=dataset,
                                       data_collator=ClassificationCollator(tiny_processor(), "image", 16))
    trainer.skipped_images = SkippedImages(str(photos))
    forwards = []
    model.register_forward_hook(lambda module, inputs, output: forwards.append(1))
    trainer.train()
    assert trainer.state.global_step == 6
    assert len(forwards) == 4  # two epochs of three batches: the bad pair's batch never reaches the model
    assert trainer.skipped_images.as_dict()["files"] == [
        {"file": "truncated.jpg", "reason": "truncated", "splits": ["train"]},
        {"file": "notes.txt", "reason": "not an image", "splits": ["train"]},
    ]  # each file once, though met in both epochs
    assert any(not torch.equal(before[name], p) for name, p in model.named_parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
