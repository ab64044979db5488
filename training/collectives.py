# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
The collectives of contrastive pretraining across processes: every process's row count, an all-gather of embeddings
with gradients (negatives from every process, "local loss" style), and the gradient all-reduce that DDP would do.
"""

import warnings
from collections.abc import Callable

import torch
import torch.distributed as dist


def row_counts(num_rows: int, device: torch.device) -> list[int]:
    """Every process's row count (collective)."""
    counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([num_rows], dtype=torch.long, device=device))
    return [int(count) for count in counts]


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous.

    The backward of `torch.distributed.nn.functional.all_gather` receives into `torch.empty_like(grad)` buffers,
    which keep a non-contiguous gradient's strides, and the collective then fills them as if they were contiguous:
    with the gradient an einsum gives (the inter-product loss), the text embeddings got scrambled gradients on gloo.
    """

    @staticmethod
    def forward(ctx, tensor):
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


def make_all_gather(counts: list[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """
    A gather for `EclipModel.compute_loss`: concatenates every process's tensor along dim 0, with gradients (the
    backward of `torch.distributed.nn.functional.all_gather` sums every process's gradient for this process's rows).
    Processes may hold different numbers of rows (a batch that lost corrupt images): tensors are padded to the
    largest count and trimmed after.
    """
    from torch.distributed.nn.functional import all_gather

    largest = max(counts)

    def gather(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.shape[0] < largest:
            tensor = torch.cat([tensor, tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))], 0)
        with warnings.catch_warnings():  # deprecated for functional collectives, whose autograd gloo lacks
            warnings.simplefilter("ignore", FutureWarning)
            pieces = all_gather(tensor)
        return torch.cat([_ContiguousGrad.apply(piece[:count]) for piece, count in zip(pieces, counts)], 0)

    return gather


def all_reduce_gradients(parameters, bucket_mb: float = 25.0) -> None:
    """
    Average the gradients of `parameters` over all processes in flat buckets, as DDP does. Parameters that got no
    gradient here take zeros, so every process reduces the same buckets.
    """
    parameters = [p for p in parameters if p.requires_grad]
    if all(p.grad is None for p in parameters):
        return  # a step skipped by every process together (see `EclipTrainer.training_step`)
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    world_size = dist.get_world_size()
    cap = int(bucket_mb * 2**20)

    def reduce(bucket: list[torch.Tensor]) -> None:
        flat = torch.cat([grad.reshape(-1) for grad in bucket])
        dist.all_reduce(flat)  # SUM, then divide: gloo has no AVG
        flat /= world_size
        offset = 0
        for grad in bucket:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    # One flat buffer per dtype and device, cut into buckets of about `cap` bytes, in parameter order (the same order
    # on every process, so the collectives pair up).
    by_kind: dict[tuple, list[torch.Tensor]] = {}
    for p in parameters:
        by_kind.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in by_kind.values():
        bucket, nbytes = [], 0
        for grad in grads:
            bucket.append(grad)
            nbytes += grad.numel() * grad.element_size()
            if nbytes >= cap:
                reduce(bucket)
                bucket, nbytes = [], 0
        if bucket:
            reduce(bucket)


__all__ = ["all_reduce_gradients", "make_all_gather", "row_counts"]
