"""Progress lines for redirected logs (training/progress.py), with a real transformers.Trainer."""

import io
import re

import pytest
import torch
from transformers import Trainer, TrainingArguments

from eclip.training.progress import (
    ProgressLogCallback,
    disable_progress_bars_off_terminal,
    format_duration,
    progress_callbacks,
)


class TinyRegression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x, labels):
        return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)}


class Rows(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        x = torch.randn(4, generator=generator)
        return {"x": x, "labels": x.sum()}


class FakeClock:
    """Each call advances time by `step` seconds: training that takes exactly `step` s per optimizer step."""

    def __init__(self, step):
        self.now, self.step = 0.0, step

    def __call__(self):
        self.now += self.step
        return self.now


def train(tmp_path, callback, max_steps=6, logging_steps=1):
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=max_steps, per_device_train_batch_size=4,
                             logging_steps=logging_steps, report_to="none", save_strategy="no", use_cpu=True,
                             disable_tqdm=True, learning_rate=0.1)
    trainer = Trainer(model=TinyRegression(), args=args, train_dataset=Rows(), callbacks=[callback])
    trainer.train()
    return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}


def test_lines_carry_step_rate_eta_and_loss(tmp_path, one_thread):
    stream = io.StringIO()
    callback = ProgressLogCallback("eclip-test", every_seconds=0, stream=stream)
    train(tmp_path, callback)
    lines = stream.getvalue().splitlines()
    assert lines == callback.lines and len(lines) == 6
    assert lines[0].startswith("[eclip-test] step 1/6 (17%), ")
    assert lines[-1].startswith("[eclip-test] step 6/6 (100%), ")
    for line in lines:
        assert "steps/s" in line or "s/step" in line
        assert "elapsed " in line and "ETA " in line
    assert "loss " in lines[-1]  # the last logged training loss


def line_loss(line):
    """`(loss, step it was logged at or None)` of a progress line, or None without a loss."""
    match = re.search(r", loss (\S+)(?: \(step (\d+)\))?$", line)
    return None if match is None else (float(match[1]), int(match[2]) if match[2] else None)


def test_each_line_carries_the_loss_of_its_own_step(tmp_path, one_thread):
    # Trainer logs a step's loss after the step ends: a line due at a logging step waits for it (it used to show the
    # previous log's loss, a whole logging interval stale).
    callback = ProgressLogCallback("p", every_seconds=0, stream=io.StringIO())
    losses = train(tmp_path, callback, max_steps=5)
    assert len(callback.lines) == 5 and len(set(losses.values())) == 5
    for step, line in enumerate(callback.lines, start=1):
        assert line_loss(line) == (pytest.approx(losses[step], abs=5e-5), None), line


def test_between_logging_steps_the_loss_names_its_step(tmp_path, one_thread):
    callback = ProgressLogCallback("p", every_seconds=0, stream=io.StringIO())
    losses = train(tmp_path, callback, max_steps=7, logging_steps=3)
    assert sorted(losses) == [3, 6]
    got = [line_loss(line) for line in callback.lines]
    assert got[:2] == [None, None]  # nothing logged yet
    assert got[2] == (pytest.approx(losses[3], abs=5e-5), None)
    assert got[3] == got[4] == (pytest.approx(losses[3], abs=5e-5), 3)
    assert got[5] == (pytest.approx(losses[6], abs=5e-5), None)
    assert got[6] == (pytest.approx(losses[6], abs=5e-5), 6)  # the last step is no logging step


def test_interval_first_and_last_step(tmp_path, one_thread):
    # 4 s per step, a line every 10 s: the first step, then every third step, then the last one.
    callback = ProgressLogCallback("p", every_seconds=10, stream=io.StringIO(), clock=FakeClock(4.0))
    train(tmp_path, callback, max_steps=8)
    steps = [int(line.split()[2].split("/")[0]) for line in callback.lines]
    assert steps == [1, 4, 7, 8]
    assert "0.25 steps/s" in callback.lines[-1] and "ETA 0s" in callback.lines[-1]


def test_only_when_the_stream_is_not_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert progress_callbacks("p", stream=Terminal()) == []
    (callback,) = progress_callbacks("p", stream=io.StringIO())
    assert isinstance(callback, ProgressLogCallback)
    with pytest.raises(ValueError, match="every_seconds"):
        ProgressLogCallback("p", every_seconds=-1)


def test_library_progress_bars_are_off_only_off_terminal():
    import datasets
    import huggingface_hub.utils
    import transformers.utils.logging as transformers_logging

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    # An in-process command run earlier in the session (eclip-finetune's main, say) may have turned them off.
    transformers_logging.enable_progress_bar()
    datasets.enable_progress_bars()
    huggingface_hub.utils.enable_progress_bars()
    try:
        assert disable_progress_bars_off_terminal(Terminal()) is False
        assert transformers_logging.is_progress_bar_enabled() and datasets.is_progress_bar_enabled()
        assert disable_progress_bars_off_terminal(io.StringIO()) is True
        assert not transformers_logging.is_progress_bar_enabled()
        assert not datasets.is_progress_bar_enabled()
        assert huggingface_hub.utils.are_progress_bars_disabled()
    finally:
        transformers_logging.enable_progress_bar()
        datasets.enable_progress_bars()
        huggingface_hub.utils.enable_progress_bars()


def test_format_duration():
    assert [format_duration(s) for s in (0, 12.4, 281, 7500)] == ["0s", "12s", "4m41s", "2h05m"]
