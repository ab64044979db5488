# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Training progress that reaches a log file. Trainer's tqdm bar redraws one line with carriage returns: in a terminal
that is what a user wants, in a redirected log (`eclip-finetune ... > run.log 2>&1`, a batch job) it is either
disabled or one unreadable line. `ProgressLogCallback` writes a plain line every `every_seconds` instead:

    [eclip-finetune] step 120/500 (24%), 1.35 steps/s, elapsed 1m29s, ETA 4m41s, loss 0.8123

    trainer = Trainer(..., callbacks=progress_callbacks("eclip-finetune"))   # a line logger only when not a terminal
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
    per second over this run (a resumed run counts from where it resumed), elapsed time, ETA and the last logged loss.
    Only the main process writes.
    """

    def __init__(self, prefix: str = "train", every_seconds: float = 30.0, stream=None, clock=time.monotonic):
        if every_seconds < 0:
            raise ValueError(f"every_seconds must be >= 0, got {every_seconds}.")
        self.prefix, self.every_seconds, self.stream, self.clock = prefix, every_seconds, stream, clock
        self.lines: list[str] = []  # what was written, for the caller's summary and for tests
        self._start = self._last = None
        self._start_step = 0
        self._loss = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = self._last = self.clock()
        self._start_step = state.global_step
        self._loss = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self._loss = logs["loss"]

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is None or not state.is_world_process_zero:
            return
        now = self.clock()
        first = state.global_step == self._start_step + 1
        last = state.max_steps > 0 and state.global_step >= state.max_steps
        if first or last or now - self._last >= self.every_seconds:
            self._last = now
            self._write(self.line(state.global_step, state.max_steps, now - self._start))

    def line(self, step: int, max_steps: int, elapsed: float) -> str:
        done = step - self._start_step
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"step {step}/{max_steps} ({100.0 * step / max_steps:.0f}%)" if max_steps > 0 else f"step {step}"]
        parts.append(f"{rate:.2f} steps/s" if rate >= 0.01 else f"{elapsed / max(done, 1):.0f} s/step")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if max_steps > 0 and rate > 0:
            parts.append(f"ETA {format_duration((max_steps - step) / rate)}")
        if self._loss is not None:
            parts.append(f"loss {self._loss:.4f}")
        return f"[{self.prefix}] " + ", ".join(parts)

    def _write(self, line: str) -> None:
        self.lines.append(line)
        stream = sys.stderr if self.stream is None else self.stream
        print(line, file=stream, flush=True)


def progress_callbacks(prefix: str, every_seconds: float = 30.0, stream=None) -> list[TrainerCallback]:
    """`[ProgressLogCallback]` when `stream` (default stderr) is not a terminal, else `[]` (tqdm's bar shows it)."""
    return [] if is_terminal(stream) else [ProgressLogCallback(prefix, every_seconds, stream)]


__all__ = ["ProgressLogCallback", "format_duration", "is_terminal", "progress_callbacks"]
