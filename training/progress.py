# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Training progress that reaches a log file. Trainer's tqdm bar redraws one line with carriage returns: in a terminal
that is what a user wants, in a redirected log (`eclip-finetune ... > run.log 2>&1`, a batch job) it is either
disabled or one unreadable line. `ProgressLogCallback` writes a plain line every `every_seconds` instead, with the
most recent training loss and, when it was logged at an earlier step (between `logging_steps`), that step:

    [eclip-finetune] step 120/500 (24%), 1.35 steps/s, elapsed 1m29s, ETA 4m41s, loss 0.8123
    [eclip-finetune] step 130/500 (26%), 1.35 steps/s, elapsed 1m36s, ETA 4m34s, loss 0.8123 (step 125)

    trainer = Trainer(..., callbacks=progress_callbacks("eclip-finetune"))   # a line logger only when not a terminal

The libraries' own bars (transformers' "Loading weights" / "Writing model shards", datasets' Map / Filter,
huggingface_hub's downloads) are turned off for a command whose stderr is not a terminal by
`disable_progress_bars_off_terminal()`, which each command calls first.
"""

from __future__ import annotations

import sys
import time

from transformers import TrainerCallback


def is_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed or detached stream
        return False


def format_duration(seconds: float) -> str:
    """`4m41s`, `2h05m`, `12s`."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class ProgressLogCallback(TrainerCallback):
    """
    Every `every_seconds` of training (and at the first and the last step) write one line to `stream` (default:
    stderr, looked up at each write so that redirections made later still apply): step / max steps, optimizer steps
    per second over this run (a resumed run counts from where it resumed), elapsed time, ETA and the most recent
    training loss, followed by `(step N)` when it was logged at an earlier step N. Trainer logs a step's loss after
    the step ends, so a line due at a logging step waits for that log and carries its loss. Only the main process
    writes.
    """

    def __init__(self, prefix: str = "train", every_seconds: float = 30.0, stream=None, clock=time.monotonic):
        if every_seconds < 0:
            raise ValueError(f"every_seconds must be >= 0, got {every_seconds}.")
        self.prefix, self.every_seconds, self.stream, self.clock = prefix, every_seconds, stream, clock
        self.lines: list[str] = []  # what was written, for the caller's summary and for tests
        self._start = self._last = None
        self._start_step = 0
        self._loss = self._loss_step = None
        self._pending = None  # (step, max_steps, elapsed) of a line waiting for its step's loss

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = self._last = self.clock()
        self._start_step = state.global_step
        self._loss = self._loss_step = None
        self._pending = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self._loss, self._loss_step = logs["loss"], state.global_step
            self._flush()

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is None or not state.is_world_process_zero:
            return
        self._flush()  # a line whose log never came (a log without a loss)
        now = self.clock()
        first = state.global_step == self._start_step + 1
        last = state.max_steps > 0 and state.global_step >= state.max_steps
        if first or last or now - self._last >= self.every_seconds:
            self._last = now
            self._pending = (state.global_step, state.max_steps, now - self._start)
            if not control.should_log:  # no loss comes for this step: write now, with the last one
                self._flush()

    def on_train_end(self, args, state, control, **kwargs):
        self._flush()

    def line(self, step: int, max_steps: int, elapsed: float) -> str:
        done = step - self._start_step
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"step {step}/{max_steps} ({100.0 * step / max_steps:.0f}%)" if max_steps > 0 else f"step {step}"]
        parts.append(f"{rate:.2f} steps/s" if rate >= 0.01 else f"{elapsed / max(done, 1):.0f} s/step")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if max_steps > 0 and rate > 0:
            parts.append(f"ETA {format_duration((max_steps - step) / rate)}")
        if self._loss is not None:
            parts.append(f"loss {self._loss:.4f}" + ("" if self._loss_step == step else f" (step {self._loss_step})"))
        return f"[{self.prefix}] " + ", ".join(parts)

    def _flush(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._write(self.line(*pending))

    def _write(self, line: str) -> None:
        self.lines.append(line)
        stream = sys.stderr if self.stream is None else self.stream
        print(line, file=stream, flush=True)


def progress_callbacks(prefix: str, every_seconds: float = 30.0, stream=None) -> list[TrainerCallback]:
    """`[ProgressLogCallback]` when `stream` (default stderr) is not a terminal, else `[]` (tqdm's bar shows it)."""
    return [] if is_terminal(stream) else [ProgressLogCallback(prefix, every_seconds, stream)]


def disable_progress_bars_off_terminal(stream=None) -> bool:
    """
    When `stream` (default stderr) is not a terminal, turn off the tqdm bars of transformers ("Loading weights",
    "Writing model shards"), datasets (Map, Filter, data files) and huggingface_hub (downloads) for this process: in
    a log file each would be carriage-return redraws. A command calls it first; the training progress itself then
    comes from [`ProgressLogCallback`]. Returns whether the bars were turned off.
    """
    if is_terminal(stream):
        return False
    import huggingface_hub.utils
    import transformers.utils.logging

    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency, but not of every caller
        pass
    else:
        datasets.disable_progress_bars()
    return True


__all__ = ["ProgressLogCallback", "disable_progress_bars_off_terminal", "format_duration", "is_terminal",
           "progress_callbacks"]
