"""Training progress as log lines, for runs whose output goes to a file.

Trainer's tqdm bar is switched off when stderr is not a terminal (``nohup ... > run.log``), and its loss lines come
only every ``logging_steps``; :class:`ProgressLogCallback` logs, at most every ``every_seconds``, the step, the
steps/s since the start and the time left at that rate::

    progress: step 120/384 (31%), 0.42 steps/s, elapsed 4m46s, ETA 10m28s
"""

from __future__ import annotations

import logging
import time

from transformers import TrainerCallback

logger = logging.getLogger("eclip.progress")


def format_seconds(seconds: float) -> str:
    """``3725`` -> ``"1h02m05s"``; ``65`` -> ``"1m05s"``; ``9`` -> ``"9s"``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{seconds:02d}s"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class ProgressLogCallback(TrainerCallback):
    """Log step, steps/s and ETA at most every ``every_seconds`` (and at the last step)."""

    def __init__(self, every_seconds: float = 60.0, log=None):
        self.every_seconds = every_seconds
        self.log = log or logger.info
        self._start = self._last = None
        self._first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = self._last = time.monotonic()
        self._first_step = state.global_step  # a resumed run counts its rate from where it resumed

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        last_step = state.global_step >= state.max_steps
        if now - self._last < self.every_seconds and not last_step:
            return
        self._last = now
        elapsed = now - self._start
        done = state.global_step - self._first_step
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = format_seconds((state.max_steps - state.global_step) / rate) if rate > 0 else "?"
        self.log(
            f"progress: step {state.global_step}/{state.max_steps} "
            f"({100.0 * state.global_step / max(state.max_steps, 1):.0f}%), {rate:.2f} steps/s, "
            f"elapsed {format_seconds(elapsed)}, ETA {eta}"
        )


__all__ = ["ProgressLogCallback", "format_seconds"]
