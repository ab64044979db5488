# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Staged checkpoints: Trainer's checkpoint is written into `tmp-checkpoint-N` and renamed to `checkpoint-N` only once
complete, so a kill mid-save never leaves a partial `checkpoint-N` for `resume_from_checkpoint=True`
(`get_last_checkpoint` matches `^checkpoint-(\\d+)$`) to pick, and neither that nor Trainer's `checkpoint-*` glob
(`rotate_checkpoints`) ever matches a staging folder.
"""

import contextlib
import os
import re
import shutil

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from modeling_eclip.modeling_eclip import share_under_umask
from eclip.training.trainer_internals import checkpoint_location, finish_checkpoint, write_checkpoint

STAGING_PREFIX = "tmp-"
STAGING_PATTERN = re.compile(rf"^{STAGING_PREFIX}(old-)?{PREFIX_CHECKPOINT_DIR}-\d+$")


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


def save_staged_checkpoint(trainer, trial) -> None:
    """
    `Trainer._save_checkpoint`, staged: every process writes its part into the staging folder, then, after a
    barrier, the main process renames it (an existing `checkpoint-N` is replaced) and rotates old checkpoints.
    """
    run_dir, name = checkpoint_location(trainer, trial)
    final_dir = os.path.join(run_dir, name)
    staging = os.path.join(run_dir, f"{STAGING_PREFIX}{name}")
    if trainer.args.should_save:
        remove_stale_staging(run_dir)  # left by a run killed mid-save
    trainer.accelerator.wait_for_everyone()
    write_checkpoint(trainer, staging, final_dir)
    trainer.accelerator.wait_for_everyone()  # every process's files are in the staging folder
    if trainer.args.should_save:
        publish(staging, final_dir)
    trainer.accelerator.wait_for_everyone()
    finish_checkpoint(trainer, final_dir, run_dir)


__all__ = ["STAGING_PATTERN", "STAGING_PREFIX", "publish", "remove_stale_staging", "save_staged_checkpoint"]
