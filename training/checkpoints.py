# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Staged checkpoints: Trainer's checkpoint is written into `tmp-checkpoint-N/checkpoint-N` and renamed to
`checkpoint-N` only once complete, so a kill mid-save never leaves a partial `checkpoint-N` for
`resume_from_checkpoint=True` (`get_last_checkpoint` matches `^checkpoint-(\\d+)$`) to pick, and neither that nor
Trainer's `checkpoint-*` glob (`rotate_checkpoints`) ever matches a staging folder.

The checkpoint itself is written by the installed transformers' own `Trainer._save_checkpoint`, unchanged and not
copied: `EclipTrainer` only points the run folder that method writes into (`Trainer._get_output_dir`) at the staging
folder for the duration of the call, then publishes the result (rename, best-checkpoint path, rotation). So whatever
a transformers release adds to a checkpoint lands in ours. What this relies on, and what happens if it changes:

* `Trainer._save_checkpoint(model, trial)` is where Trainer saves a checkpoint (overridden by `EclipTrainer`; if a
  release stopped calling it, checkpoints would be Trainer's own, unstaged: the kill-mid-save test of
  tests/test_reliability.py fails);
* it writes into `os.path.join(self._get_output_dir(trial), "checkpoint-N")` (if a release stopped asking
  `_get_output_dir`, the checkpoint appears directly as `checkpoint-N`: it is kept, a warning says that it was not
  staged, and tests/test_trainer.py's staging test fails).

Either way a user's run keeps working on a newer transformers; only the staging is lost, loudly.
"""

import contextlib
import os
import re
import shutil

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from transformers.utils import logging

from modeling_eclip import share_under_umask

logger = logging.get_logger(__name__)

STAGING_PREFIX = "tmp-"
STAGING_PATTERN = re.compile(rf"^{STAGING_PREFIX}(old-)?{PREFIX_CHECKPOINT_DIR}-\d+$")
TRAINER_STATE_NAME = "trainer_state.json"  # transformers.trainer.TRAINER_STATE_NAME


def remove_stale_staging(run_dir: str) -> None:
    """Delete the staging folders a run killed mid-save left behind."""
    if os.path.isdir(run_dir):
        for entry in os.listdir(run_dir):
            if STAGING_PATTERN.match(entry):
                shutil.rmtree(os.path.join(run_dir, entry), ignore_errors=True)


def publish(staging: str, final_dir: str) -> None:
    """Rename a complete staging folder to `final_dir`, replacing an existing one (a save at the same step); its files
    get the modes of the user's umask (transformers writes weights 0600)."""
    share_under_umask(staging)
    if os.path.exists(final_dir):
        parent, name = os.path.split(final_dir)
        old = os.path.join(parent, f"{STAGING_PREFIX}old-{name}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final_dir, old)
        os.rename(staging, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, final_dir)
    # Make the rename durable before training goes on (best effort: not every OS can fsync a folder).
    with contextlib.suppress(OSError):
        descriptor = os.open(os.path.dirname(final_dir), os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def save_staged_checkpoint(trainer, run_dir: str, save_checkpoint) -> None:
    """
    Run `save_checkpoint()` (Trainer's own `_save_checkpoint`) while `trainer.checkpoint_staging_dir` holds the staging
    folder `run_dir/tmp-checkpoint-N` (`EclipTrainer._get_output_dir` returns it then), so that every process writes
    its part into `tmp-checkpoint-N/checkpoint-N`; then, after a barrier, the main process points
    `state.best_model_checkpoint` at the published path, renames the folder to `run_dir/checkpoint-N` (an existing one
    is replaced) and rotates old checkpoints (Trainer's own rotation only saw the staging folder).
    """
    name = f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
    final_dir = os.path.join(run_dir, name)
    staging_root = os.path.join(run_dir, f"{STAGING_PREFIX}{name}")
    staged = os.path.join(staging_root, name)
    should_save = trainer.args.should_save
    if should_save:
        remove_stale_staging(run_dir)  # left by a run killed mid-save
    trainer.accelerator.wait_for_everyone()
    trainer.checkpoint_staging_dir = staging_root
    try:
        save_checkpoint()
    finally:
        trainer.checkpoint_staging_dir = None
    trainer.accelerator.wait_for_everyone()  # every process's files are in the staging folder
    state = trainer.state
    # Trainer records the best checkpoint where it found it: in the staging folder when it is this very one.
    best = state.best_model_checkpoint
    if best is not None and os.path.dirname(os.path.abspath(best)) == os.path.abspath(staging_root):
        state.best_model_checkpoint = os.path.join(run_dir, os.path.basename(best))
    if should_save:
        if os.path.isdir(staged):
            if best != state.best_model_checkpoint and os.path.isfile(os.path.join(staged, TRAINER_STATE_NAME)):
                state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
            publish(staged, final_dir)
            shutil.rmtree(staging_root, ignore_errors=True)
        elif os.path.isdir(final_dir):
            logger.warning_once(
                f"This transformers version wrote {name} directly rather than through Trainer._get_output_dir, so "
                "checkpoints are not staged: a kill mid-save can leave a partial checkpoint (eclip.training.checkpoints)."
            )
            shutil.rmtree(staging_root, ignore_errors=True)
        else:
            raise RuntimeError(f"Trainer._save_checkpoint wrote neither {staged} nor {final_dir}.")
    trainer.accelerator.wait_for_everyone()
    if should_save:
        rotate_checkpoints(
            output_dir=run_dir,
            save_total_limit=trainer.args.save_total_limit,
            best_model_checkpoint=state.best_model_checkpoint,
            use_mtime=True,
        )


__all__ = ["STAGING_PATTERN", "STAGING_PREFIX", "publish", "remove_stale_staging", "save_staged_checkpoint"]
