# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
`EclipTrainer`: `transformers.Trainer` plus the three things contrastive pretraining needs and Trainer lacks
(DESIGN.md, "Training system"), per-objective logging and an atomic final save.

* **Negatives across processes** (training/collectives.py): each process embeds its local rows; embeddings and
  product ids are all-gathered with gradients and every loss takes the local rows against the global columns.
* **Gradient cache** (training/gradient_cache.py), with `contrastive_chunk_size`: a contrastive batch far larger
  than memory, with the gradients of the whole batch and the activation memory of one chunk.
* **Contrastive batch-size schedule** (training/batch_schedule.py): `contrastive_batch_schedule="0:256,2000:1024"`
  sets the global contrastive batch size by optimizer step, exactly resumable.

Checkpoints are staged (training/checkpoints.py): a kill mid-save never leaves a partial `checkpoint-N`.
The names of those modules that other code uses are re-exported here.

**How gradients are synchronised (DDP).** DistributedDataParallel only all-reduces gradients for a backward whose
forward went through the DDP wrapper, and it expects every parameter to get its gradient from that one backward.
Neither holds here: the gradient cache runs one backward for the loss (which is the only user of `logit_scale`) and
one per chunk, and the embeddings come from `pretraining_embeddings`, not `forward`. So every pass runs on the
unwrapped module (DDP's hooks stay idle: its reducer only acts after a wrapped forward), and at the last
micro-batch of each optimizer step the trainer all-reduces the accumulated gradients itself (bucketed, averaged over
processes), which is exactly what DDP would have done. Averaging is the right reduction: each process's loss is a
mean over its local rows, and the all-gather's backward (a reduce-scatter) sends every process the gradient that all
processes' losses have with respect to its embeddings, so the mean of the processes' gradients is the gradient of
the full-batch loss. FSDP and DeepSpeed shard the parameters, so the unwrapped module cannot run on its own: they
are refused with a clear error.
"""

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import seed_worker
from transformers.utils import is_datasets_available, logging

from modeling_eclip.losses import LOSS_NAMES
from modeling_eclip import atomic_directory, vision_layers
from eclip.training.batch_schedule import ScheduledBatchSampler, batch_size_at, parse_batch_schedule
from eclip.training.checkpoints import save_staged_checkpoint
from eclip.training.collectives import all_reduce_gradients, make_all_gather, row_counts
from eclip.training.feature_cache import FeatureCache, lock_vision_tower
from eclip.training.gradient_cache import contrastive_backward

logger = logging.get_logger(__name__)


def is_stream(dataset) -> bool:
    """Whether a dataset is read as a stream (an iterable one, or one without a length), not by index."""
    return isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__")


# ---------------------------------------------------------------------------------------------------- arguments
@dataclass
class EclipTrainingArguments(TrainingArguments):
    r"""
    [`~transformers.TrainingArguments`] plus the contrastive-pretraining options of [`EclipTrainer`].

    Args:
        contrastive_chunk_size (`int`, *optional*):
            Rows per chunk of the gradient cache (per process). `None` embeds the whole batch with one graph.
        contrastive_batch_schedule (`str`, *optional*):
            Global contrastive batch size by optimizer step, as `"step:size,step:size,..."` starting at step 0
            (e.g. `"0:256,2000:1024,8000:4096"`). Replaces `per_device_train_batch_size` for training (each
            process takes `size / world_size` rows); needs `max_steps > 0` and a map-style dataset.
        scene_probability (`float`, *optional*, defaults to 0.5):
            Probability that the pretraining collator pastes a product into a synthesised scene.
        remove_unused_columns (`bool`, *optional*, defaults to `False`):
            Raw product columns (image, title...) feed the collator, so they are kept.
        max_nonfinite_steps (`int`, *optional*, defaults to 10):
            Optimizer steps whose loss (or one of its objectives, or a gradient) was NaN or infinite are skipped (no
            weight update)
            and counted (`num_nonfinite_steps` in the logs). When the *total* number of such steps in the run (a
            resumed run included) exceeds this, training stops with a `RuntimeError`. A total rather than a
            consecutive count: a run that diverges every few steps is as broken as one that diverges for good.
        selection_refit (`bool`, *optional*, defaults to `False`):
            After training, refit the selection head alone on the trained model's frozen decoder states
            (`eclip.training.selection_refit`) of `selection_refit_scenes` composed scenes and `selection_refit_photos`
            photos of the training data; `eclip-pretrain` runs it before the model is saved, on the processes that
            save it. A model without the instance decoder (the CLIP baseline) has no head to refit: the stage is
            skipped.
    """

    contrastive_chunk_size: int | None = field(
        default=None, metadata={"help": "Rows per gradient-cache chunk (per process); None: no gradient cache."}
    )
    contrastive_batch_schedule: str | None = field(
        default=None,
        metadata={"help": "Global contrastive batch size by optimizer step, e.g. '0:256,2000:1024,8000:4096'."},
    )
    scene_probability: float = field(
        default=0.5, metadata={"help": "Probability that the collator pastes a product into a synthesised scene."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep raw product columns: the pretraining collator needs them."}
    )
    max_nonfinite_steps: int = field(
        default=10,
        metadata={"help": "Stop with an error when more than this many steps (in total) had a non-finite loss."},
    )
    lock_image_tower: bool = field(
        default=False,
        metadata={"help": "Locked-image-tower training (LiT): freeze the vision tower but its last unlocked_image_layers blocks."},
    )
    unlocked_image_layers: int = field(
        default=0, metadata={"help": "With lock_image_tower: how many of the vision tower's last blocks still train."}
    )
    feature_cache_dir: str | None = field(
        default=None,
        metadata={"help": "With lock_image_tower: where the locked tower's feature cache is built and read (None: pixels)."},
    )
    feature_cache_passes: int = field(
        default=2, metadata={"help": "Passes over the data held by the feature cache; training cycles through them."}
    )
    feature_cache_layer: int | None = field(
        default=None,
        metadata={"help": "The block after which the cache stores the tower's hidden states (default: the first "
                  "unlocked block); an earlier block lets one cache serve runs that unlock more blocks."},
    )

    selection_refit: bool = field(
        default=False,
        metadata={"help": "After training, refit the selection head on frozen decoder states (eclip-pretrain)."},
    )
    selection_refit_scenes: int = field(
        default=1500, metadata={"help": "Composed training scenes the selection refit fits on."}
    )
    selection_refit_photos: int = field(
        default=1500, metadata={"help": "Training photos the selection refit fits on."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.contrastive_chunk_size is not None and (
            isinstance(self.contrastive_chunk_size, bool)
            or not isinstance(self.contrastive_chunk_size, int)
            or self.contrastive_chunk_size < 1
        ):
            raise ValueError(
                f"contrastive_chunk_size must be a positive integer, got {self.contrastive_chunk_size!r}."
            )
        if self.contrastive_batch_schedule is not None:
            parse_batch_schedule(self.contrastive_batch_schedule)  # fail at configuration time, not at step 2000
        if not 0.0 <= self.scene_probability <= 1.0:
            raise ValueError(f"scene_probability must be in [0, 1], got {self.scene_probability!r}.")
        for name, least in (("max_nonfinite_steps", 0), ("unlocked_image_layers", 0), ("feature_cache_passes", 1),
                            ("selection_refit_scenes", 2), ("selection_refit_photos", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                kind = {0: "a non-negative integer", 1: "a positive integer"}.get(least,
                                                                               f"an integer of at least {least}")
                raise ValueError(f"{name} must be {kind}, got {value!r}.")
        if self.feature_cache_dir is not None and not self.lock_image_tower:
            raise ValueError("feature_cache_dir caches a locked tower's features: it needs lock_image_tower=True.")
        if self.unlocked_image_layers and not self.lock_image_tower:
            raise ValueError("unlocked_image_layers counts the blocks left trainable by lock_image_tower=True.")



def _grads_finite(parameters) -> bool:
    """Whether every gradient is finite (one host sync)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return True
    return bool(torch.stack([torch.isfinite(grad).all() for grad in grads]).all().item())



# ------------------------------------------------------------------------------------------------------ trainer
class EclipTrainer(Trainer):
    r"""
    [`~transformers.Trainer`] for ECLIP pretraining, with [`EclipTrainingArguments`]. Batches come from
    `eclip.training.data.PretrainingCollator` (`input_ids`, `attention_mask`, `pixel_values`, `view_pixel_values`,
    `product_ids`, `num_skipped_images`). Logs each objective (`loss_itc`, `loss_inter`, `loss_intra`,
    `loss_selection`), the contrastive batch size and the running count of skipped corrupt images with the loss.

    Example:

    ```python
    >>> from eclip.training.trainer import EclipTrainer, EclipTrainingArguments
    >>> args = EclipTrainingArguments("out", max_steps=1000, contrastive_chunk_size=64,
    ...                               contrastive_batch_schedule="0:256,500:1024")
    >>> trainer = EclipTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
    ...                        processing_class=processor)
    >>> trainer.train()
    >>> trainer.save_model("eclip-pretrained")  # atomic: weights (safetensors), config, processor
    ```
    """

    def __init__(self, model=None, args: EclipTrainingArguments | None = None, **kwargs):
        if args is None:
            args = EclipTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, EclipTrainingArguments):
            raise TypeError(f"EclipTrainer needs EclipTrainingArguments, got {type(args).__name__}.")
        # Locked before Trainer builds anything, so that its optimizer only ever sees the trainable parameters.
        self._locked_vision_start = None
        if args.lock_image_tower and model is not None:
            self._locked_vision_start = lock_vision_tower(model, args.unlocked_image_layers)
        train_dataset = kwargs.get("train_dataset")
        # A cache taken at an earlier block serves too: the locked blocks after it then run (frozen) in training.
        if isinstance(train_dataset, FeatureCache) and not 0 <= train_dataset.layer <= self._locked_vision_start:
            raise ValueError(
                f"The feature cache holds the vision tower's hidden states after block {train_dataset.layer}, but the "
                f"training unlocks the tower from block {self._locked_vision_start} on: lock_image_tower and "
                "unlocked_image_layers must leave at least the blocks before the cache's locked."
            )
        if train_dataset is not None and is_stream(train_dataset) and args.accelerator_config.dispatch_batches is None:
            # accelerate's default for a stream has the main process fetch and concatenate every process's batch,
            # which cannot concatenate the collator's scalar skip count: each process reads its own share instead.
            args.accelerator_config.dispatch_batches = False
        super().__init__(model=model, args=args, **kwargs)
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            raise ValueError(
                "EclipTrainer runs the contrastive step on the unwrapped model and all-reduces gradients itself (DDP "
                "semantics); FSDP and DeepSpeed shard the parameters, which that step cannot run on. Use multi-GPU "
                "DDP (training/accelerate_configs/ddp.yaml) with contrastive_chunk_size to bound memory."
            )
        # Trainer sets this per optimizer step in its loop; a default lets `training_step` run on its own too.
        self.current_gradient_accumulation_steps = self.args.gradient_accumulation_steps
        # Per-process sums since the last log: each objective's sum and count, the skipped images.
        self._stats = None
        self._num_skipped_total: int | None = None
        # Non-finite steps: the running total (the same on every process, as the decision is all-reduced) and
        # whether a micro-batch of the optimizer step in progress was non-finite.
        self._num_nonfinite_total: int | None = None
        self._nonfinite_in_step = False

    # ---------------------------------------------------------------------------------------------- data
    def get_train_dataloader(self) -> DataLoader:
        """
        Trainer's dataloader; with a batch-size schedule, one driven by a [`ScheduledBatchSampler`]; with a
        [`FeatureCache`] as the train dataset, its cached batches in order.
        """
        if isinstance(self.train_dataset, FeatureCache):
            if self.args.max_steps <= 0:
                raise ValueError("Training from a feature cache runs by steps: set max_steps > 0.")
            cache = self.train_dataset
            sampler = cache.batch_sampler(
                self.args.max_steps * self.args.gradient_accumulation_steps,
                num_replicas=self.args.world_size, rank=self.args.process_index,
            )
            return self._batch_sampler_loader(cache, sampler, cache.collate)
        schedule = self.args.contrastive_batch_schedule
        if schedule is None:
            return super().get_train_dataloader()
        dataset = self.train_dataset
        if dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        if is_stream(dataset):
            raise ValueError("contrastive_batch_schedule needs a map-style dataset (with a length), not a stream.")
        if self.args.max_steps <= 0:
            raise ValueError("contrastive_batch_schedule sets batch sizes by step: set max_steps > 0.")
        # Column pruning as Trainer does it (a no-op with the default remove_unused_columns=False).
        collator = self.data_collator
        is_hf_dataset = False
        if is_datasets_available():
            import datasets

            is_hf_dataset = isinstance(dataset, datasets.Dataset)
        if is_hf_dataset:
            dataset = self._remove_unused_columns(dataset, description="training")
        else:
            collator = self._get_collator_with_removed_columns(collator, description="training")
        sampler = ScheduledBatchSampler(
            len(dataset),
            schedule,
            num_batches=self.args.max_steps * self.args.gradient_accumulation_steps,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            num_replicas=self.args.world_size,
            rank=self.args.process_index,
            gradient_accumulation_steps=self.args.gradient_accumulation_steps,
        )
        return self._batch_sampler_loader(dataset, sampler, collator)

    def _batch_sampler_loader(self, dataset, sampler, collator) -> DataLoader:
        """A prepared DataLoader over `sampler`'s batches, each already this process's share."""
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collator,
            num_workers=self.args.dataloader_num_workers,
            # Pinned memory only speeds up copies to an accelerator; on a CPU run torch would just warn about it.
            pin_memory=self.args.dataloader_pin_memory and self.args.device.type != "cpu",
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
            prefetch_factor=self.args.dataloader_prefetch_factor,
            worker_init_fn=functools.partial(
                seed_worker, num_workers=self.args.dataloader_num_workers, rank=self.args.process_index
            ),
        )
        loader = self.accelerator.prepare(loader)
        # The sampler already gives each process its share; accelerate's shard wrapper (several processes) would
        # deal out whole batches round-robin instead, so make it a passthrough (as Trainer does for its own
        # rank-aware BatchRebalanceSampler).
        shard = getattr(loader, "batch_sampler", None)
        if shard is not None and getattr(shard, "batch_sampler", None) is sampler:
            shard.num_processes, shard.process_index = 1, 0
        return loader

    # ------------------------------------------------------------------------------------------ training
    def training_step(self, model, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
        """One contrastive batch: embeddings (gradient cache if chunked), loss on gathered negatives, backward."""
        model.train()
        if self._locked_vision_start is not None:
            # The locked blocks compute as the feature cache did, in eval mode (dropout off); the unlocked ones train.
            tower = self.accelerator.unwrap_model(model).vision_model
            tower.eval()
            if self._locked_vision_start >= 0:
                for layer in vision_layers(tower)[self._locked_vision_start:]:
                    layer.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        skipped = inputs.pop("num_skipped_images", None)
        product_ids = inputs.pop("product_ids", None)
        member_ids = inputs.pop("member_ids", None)
        eclip = self.accelerator.unwrap_model(model)
        device = self.args.device
        num_rows = int(inputs["input_ids"].shape[0])

        distributed = self.args.world_size > 1
        counts = row_counts(num_rows, device) if distributed else [num_rows]
        if min(counts) == 0:
            # Every image of some process's batch was corrupt. All processes skip together: a lone process
            # leaving would stall the others' all-gathers.
            loss, components = torch.zeros((), device=device), {}
        else:
            gather = None
            if distributed:
                gather = make_all_gather(counts)
                if product_ids is None:  # every row its own product: ids must be unique across processes
                    offset = sum(counts[: self.args.process_index])
                    product_ids = torch.arange(offset, offset + num_rows, device=device)
            # Trainer averages micro-batch losses over gradient accumulation by scaling each before backward. Across
            # processes, gradients are averaged, so a process's local mean is weighted by its share of the rows: the
            # result is the full-batch mean even when a process lost rows to corrupt images.
            scale = len(counts) * num_rows / sum(counts) / self.current_gradient_accumulation_steps
            loss, components = contrastive_backward(
                eclip, inputs, product_ids, chunk_size=self.args.contrastive_chunk_size, gather=gather, scale=scale,
                backward=self.accelerator.backward, autocast=self.accelerator.autocast, member_ids=member_ids,
            )
        finite = self._all_finite(loss, components, distributed)
        if not finite:
            self._nonfinite_in_step = True
            components = {}  # a NaN would poison the logged means of the objectives
        if self.accelerator.sync_gradients and not self._nonfinite_in_step:
            if distributed:
                all_reduce_gradients(eclip.parameters(), self.args.ddp_bucket_cap_mb or 25.0)
            # A finite loss can still give an overflowing gradient. After the all-reduce every process holds the same
            # gradients, so each reaches the same decision without another collective. (An fp16 grad scaler checks
            # its scaled gradients itself.)
            if getattr(self.accelerator, "scaler", None) is None and not _grads_finite(eclip.parameters()):
                self._nonfinite_in_step = True
        if self.accelerator.sync_gradients and self._nonfinite_in_step:
            self._skip_optimizer_step(eclip)
        self._record(components, skipped)
        return loss.detach() / self.current_gradient_accumulation_steps

    # -------------------------------------------------------------------------------------- numerical faults
    def _all_finite(self, loss: torch.Tensor, components: dict, distributed: bool) -> bool:
        """Whether the loss and every objective are finite on every process (collective when distributed)."""
        values = [loss.detach().float().reshape(())] + [value.detach().float().reshape(()) for value in components.values()]
        bad = (~torch.isfinite(torch.stack(values))).any().float().reshape(1)
        if distributed:  # every process must take the same decision, or the others would hang in the next collective
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        return not bool(bad.item())

    def _skip_optimizer_step(self, eclip) -> None:
        """
        Make the coming optimizer step a no-op: gradients become `None`, which torch optimizers (AdamW included)
        skip entirely (no weight decay, no moment update). With an fp16 grad scaler the gradients become NaN instead,
        so that the scaler skips the step (and lowers its scale) as it does for any overflow. Counts the step and
        raises once more than `max_nonfinite_steps` steps were skipped.
        """
        self._nonfinite_in_step = False
        if getattr(self.accelerator, "scaler", None) is not None:
            for p in eclip.parameters():
                if p.requires_grad:
                    p.grad = torch.full_like(p, float("nan"))
        else:
            eclip.zero_grad(set_to_none=True)
        if self._num_nonfinite_total is None:
            self._num_nonfinite_total = self._logged_total("num_nonfinite_steps")
        self._num_nonfinite_total += 1
        step = self.state.global_step + 1
        limit = self.args.max_nonfinite_steps
        if self._num_nonfinite_total > limit:
            raise RuntimeError(
                f"The loss or its gradient was NaN or infinite at step {step}, the {self._num_nonfinite_total}th such step of this run "
                f"(max_nonfinite_steps={limit}): training diverged. Each was skipped without updating the weights, "
                "but the run is not recovering. Lower the learning rate (or lengthen the warmup), train in bf16 "
                "rather than fp16, set max_grad_norm, and check the data for broken rows; resume from the last "
                "checkpoint afterwards."
            )
        if self.is_world_process_zero():
            logger.warning(
                f"Non-finite loss or gradient at step {step}: the step is skipped (no weight update); "
                f"{self._num_nonfinite_total} of at most {limit} so far."
            )

    @property
    def num_nonfinite_steps(self) -> int:
        """Optimizer steps skipped so far because the loss was NaN or infinite."""
        return self._num_nonfinite_total or 0

    def _logged_total(self, key: str) -> int:
        """The last logged running total of `key` (a resumed run continues the count of the checkpointed run)."""
        logged = [entry[key] for entry in self.state.log_history if key in entry]
        return int(logged[-1]) if logged else 0

    # ------------------------------------------------------------------------------------------- logging
    def _record(self, components: dict, skipped) -> None:
        """Add one micro-batch's objectives and skipped-image count to the per-process sums (no device sync)."""
        if self._stats is None:
            self._stats = self._new_stats()
        for index, name in enumerate(LOSS_NAMES):
            if name in components:
                self._stats[index] += components[name].detach().float()
                self._stats[len(LOSS_NAMES) + index] += 1
        if skipped is not None:
            self._stats[-1] += torch.as_tensor(skipped, device=self.args.device).float().sum()

    def _new_stats(self) -> torch.Tensor:
        # [sum of each objective..., micro-batches that had it..., skipped images], on device so that recording
        # costs no host sync; float32 (not 64) so that every accelerator has the dtype.
        return torch.zeros(2 * len(LOSS_NAMES) + 1, device=self.args.device)

    def _drain_stats(self) -> dict[str, float]:
        """Means of each objective since the last log over all processes, and the running skipped-image total."""
        if self._num_skipped_total is None:  # resumed runs continue the count of the checkpointed run
            self._num_skipped_total = self._logged_total("num_skipped_images")
        if self._num_nonfinite_total is None:
            self._num_nonfinite_total = self._logged_total("num_nonfinite_steps")
        stats = self._stats if self._stats is not None else self._new_stats()
        if self.args.world_size > 1:
            stats = self.accelerator.reduce(stats.clone(), reduction="sum")
        stats = stats.tolist()
        self._stats = None
        logs = {}
        for index, name in enumerate(LOSS_NAMES):
            count = stats[len(LOSS_NAMES) + index]
            if count:
                logs[f"loss_{name}"] = stats[index] / count
        self._num_skipped_total += int(stats[-1])
        logs["num_skipped_images"] = self._num_skipped_total
        logs["num_nonfinite_steps"] = self._num_nonfinite_total
        return logs

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Trainer's log, plus each objective's mean, the contrastive batch size and the skipped-image count."""
        # Trainer logs "loss" during training and "train_loss" at its end, on every process at the same point, so the
        # cross-process reduction inside is safe there.
        if "loss" in logs or "train_loss" in logs:
            logs.update(self._drain_stats())
            schedule = self.args.contrastive_batch_schedule
            if "loss" in logs:
                logs["contrastive_batch_size"] = (
                    batch_size_at(parse_batch_schedule(schedule), max(self.state.global_step - 1, 0))
                    if schedule is not None
                    else self.args.per_device_train_batch_size * self.args.world_size
                )
        super().log(logs, start_time)

    @property
    def num_skipped_images(self) -> int:
        """Corrupt images skipped so far, over all processes (updated at each logging step)."""
        return self._num_skipped_total or 0

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        if self.num_skipped_images and self.is_world_process_zero():
            logger.warning(
                f"{self._num_skipped_total} corrupt or unreadable images were skipped during training (their rows "
                "were dropped from their batches)."
            )
        if self.num_nonfinite_steps and self.is_world_process_zero():
            logger.warning(
                f"{self.num_nonfinite_steps} steps had a NaN or infinite loss or gradient and were skipped (no weight update)."
            )
        return output

    # ---------------------------------------------------------------------------------------------- saving
    # While a checkpoint is written: the staging folder Trainer's own `_save_checkpoint` writes into.
    checkpoint_staging_dir: str | None = None

    def _get_output_dir(self, trial) -> str:
        return self.checkpoint_staging_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Trainer's own checkpoint, staged so that a kill mid-save never leaves a partial one (training/checkpoints.py)."""
        run_dir = super()._get_output_dir(trial)
        save_staged_checkpoint(self, run_dir, lambda: super(EclipTrainer, self)._save_checkpoint(model, trial))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints (internal calls) as Trainer does; a user's save goes through [`save_final_model`]."""
        if _internal_call:
            return super().save_model(output_dir, _internal_call=True)
        self.save_final_model(output_dir)

    def save_final_model(
        self, output_dir: str | None = None, write_extra_files: Callable[[str], None] | None = None
    ) -> str:
        """
        Save model (safetensors) and processor with `save_pretrained` into a temporary sibling folder, then swap it in
        atomically (see [`atomic_directory`]); `write_extra_files(folder)` adds files (a model card) to the same swap.
        Returns the folder.
        """
        output_dir = os.path.abspath(output_dir or self.args.output_dir)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            with atomic_directory(output_dir) as folder:
                self.accelerator.unwrap_model(self.model).save_pretrained(folder)
                if self.processing_class is not None:
                    self.processing_class.save_pretrained(folder)
                if write_extra_files is not None:
                    write_extra_files(folder)
        self.accelerator.wait_for_everyone()
        return output_dir


__all__ = [
    "EclipTrainer",
    "EclipTrainingArguments",
    "ScheduledBatchSampler",
    "parse_batch_schedule",
    "batch_size_at",
    "all_reduce_gradients",
    "contrastive_backward",
    "make_all_gather",
]

