# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
The contrastive batch-size schedule: `contrastive_batch_schedule="0:256,2000:1024"` sets the global contrastive batch
size by optimizer step through a deterministic batch sampler, so Trainer's resume (which skips the batches already
consumed) stays exact; with the gradient cache's chunk size fixed, memory stays flat as the batch grows.
"""

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def parse_batch_schedule(spec: str) -> list[tuple[int, int]]:
    """
    Parse `"0:256,2000:1024,8000:4096"` into `[(0, 256), (2000, 1024), (8000, 4096)]`: from each optimizer step on,
    the global contrastive batch size. Raises `ValueError` saying what is wrong.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"Empty contrastive batch schedule {spec!r}: expected 'step:size,...' such as '0:256,2000:1024'."
        )
    schedule = []
    for item in spec.split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            step, size = int(parts[0]), int(parts[1])
        except ValueError:
            raise ValueError(
                f"Bad entry {item.strip()!r} in contrastive batch schedule {spec!r}: expected 'step:size' with two "
                "integers, e.g. '0:256,2000:1024'."
            ) from None
        if size < 1:
            raise ValueError(
                f"Contrastive batch schedule {spec!r}: batch size {size} at step {step} must be positive."
            )
        if schedule and step <= schedule[-1][0]:
            raise ValueError(
                f"Contrastive batch schedule {spec!r}: steps must increase, got {step} after {schedule[-1][0]}."
            )
        schedule.append((step, size))
    if schedule[0][0] != 0:
        raise ValueError(f"Contrastive batch schedule {spec!r} must start at step 0, got {schedule[0][0]}.")
    return schedule


def batch_size_at(schedule: list[tuple[int, int]], step: int) -> int:
    """The global batch size the schedule gives at optimizer step `step`."""
    size = schedule[0][1]
    for start, value in schedule:
        if step < start:
            break
        size = value
    return size


class ScheduledBatchSampler(Sampler[list[int]]):
    """
    Deterministic batch sampler whose global batch size follows a schedule by optimizer step.

    The data is read pass after pass, each pass in its own permutation seeded by `(seed, pass)`; batch `b` (of
    optimizer step `b // gradient_accumulation_steps`) takes the next `batch_size_at(step)` indices of the current pass
    and this process keeps its `1 / num_replicas` share. A batch never straddles two passes (the tail of a pass too
    small for the next batch is dropped), so a batch never holds one row twice. Batch `b` depends only on `b`: skipping
    the first `k` batches, as Trainer does on resume, continues exactly where an uninterrupted run would be.

    Args:
        num_samples (`int`): size of the dataset.
        schedule (`str` or list of `(step, size)`): the global batch-size schedule.
        num_batches (`int`): batches to yield (Trainer: `max_steps * gradient_accumulation_steps`).
        seed (`int`): seed of the permutations.
        num_replicas (`int`), rank (`int`): the processes sharing each global batch.
        gradient_accumulation_steps (`int`): batches per optimizer step.
    """

    def __init__(
        self,
        num_samples: int,
        schedule: str | list[tuple[int, int]],
        num_batches: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        gradient_accumulation_steps: int = 1,
    ):
        self.schedule = parse_batch_schedule(schedule) if isinstance(schedule, str) else list(schedule)
        self.num_samples = num_samples
        self.num_batches = num_batches
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.gradient_accumulation_steps = gradient_accumulation_steps
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas}).")
        for step, size in self.schedule:
            if size % num_replicas:
                raise ValueError(
                    f"Contrastive batch size {size} (from step {step}) is not divisible by the {num_replicas} "
                    "processes."
                )
            if size > num_samples:
                raise ValueError(
                    f"Contrastive batch size {size} (from step {step}) exceeds the {num_samples} rows of the dataset."
                )

    def __len__(self) -> int:
        return self.num_batches

    def global_batch_size(self, batch_index: int) -> int:
        return batch_size_at(self.schedule, batch_index // self.gradient_accumulation_steps)

    def _permutation(self, data_pass: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + data_pass)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        data_pass, position = 0, 0
        order = self._permutation(data_pass)
        for batch_index in range(self.num_batches):
            size = self.global_batch_size(batch_index)
            if position + size > self.num_samples:
                data_pass, position = data_pass + 1, 0
                order = self._permutation(data_pass)
            share = size // self.num_replicas
            start = position + self.rank * share
            yield order[start : start + share]
            position += size


__all__ = ["ScheduledBatchSampler", "batch_size_at", "parse_batch_schedule"]
