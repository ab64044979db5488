# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
What `EclipTrainer`'s staged checkpoint (training/checkpoints.py) repeats of `transformers.Trainer`'s private
`_save_checkpoint`, copied from transformers 5.25.0 and kept here alone: a checkpoint's content is Trainer's own;
only where it is written and when it becomes visible differ. A private method may change in any release, so
`SAVE_CHECKPOINT_SHA256` pins the source this was copied from, and a test fails when the installed transformers'
differs: re-sync these functions with it, then the hash (`save_checkpoint_source_sha256()`).
"""

import hashlib
import inspect
import os

from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, SaveStrategy, rotate_checkpoints

COPIED_FROM = "transformers 5.25.0, Trainer._save_checkpoint"
SAVE_CHECKPOINT_SHA256 = "a9111e30faa9933986e022e56b5af81fd990356db64d727b4c320c852283bf3b"
TRAINER_STATE_NAME = "trainer_state.json"


def save_checkpoint_source_sha256() -> str:
    """The SHA-256 of the installed `Trainer._save_checkpoint`'s source."""
    from transformers import Trainer

    return hashlib.sha256(inspect.getsource(Trainer._save_checkpoint).encode()).hexdigest()


def checkpoint_location(trainer, trial) -> tuple[str, str]:
    """`(run_dir, "checkpoint-N")` of the checkpoint at this step, after storing the FLOs count as Trainer does."""
    if trainer.hp_search_backend is None and trial is None:
        trainer.store_flos()
    return trainer._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"


def write_checkpoint(trainer, folder: str, final_dir: str) -> None:
    """
    Everything Trainer writes into a checkpoint (model, optimizer, scheduler, scaler, per-process RNG state, trainer
    state), written into `folder`. `final_dir` is where it will be published: a best checkpoint at this very step is
    recorded although it does not exist yet (Trainer checks that the folder exists, which a staged one does not).
    """
    args, state = trainer.args, trainer.state
    trainer.save_model(folder, _internal_call=True)
    if args.save_strategy in [SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST] and state.best_global_step:
        best = os.path.join(os.path.dirname(final_dir), f"{PREFIX_CHECKPOINT_DIR}-{state.best_global_step}")
        if state.best_global_step == state.global_step or os.path.exists(best):
            state.best_model_checkpoint = best
    if not args.save_only_model:
        trainer._save_optimizer_and_scheduler(folder)
        trainer._save_scaler(folder)
        trainer._save_rng_state(folder)  # one file per process
    if args.should_save:
        for callback in [
            cb for cb in trainer.callback_handler.callbacks + [trainer.control] if isinstance(cb, ExportableState)
        ]:
            name, callback_state = callback.__class__.__name__, callback.state()
            if isinstance(state.stateful_callbacks[name], list):
                state.stateful_callbacks[name].append(callback_state)
            else:
                state.stateful_callbacks[name] = callback_state
        state.save_to_json(os.path.join(folder, TRAINER_STATE_NAME))


def finish_checkpoint(trainer, final_dir: str, run_dir: str) -> None:
    """After a checkpoint is published: push it when asked, and rotate old checkpoints, as Trainer does."""
    if trainer.args.push_to_hub:
        trainer._push_from_checkpoint(final_dir)
    if trainer.args.should_save:
        rotate_checkpoints(
            output_dir=run_dir,
            save_total_limit=trainer.args.save_total_limit,
            best_model_checkpoint=trainer.state.best_model_checkpoint,
            use_mtime=True,
        )


__all__ = ["COPIED_FROM", "SAVE_CHECKPOINT_SHA256", "checkpoint_location", "finish_checkpoint",
           "save_checkpoint_source_sha256", "write_checkpoint"]
