# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
The gradient cache (e-CLIP's accumulation with one set of negatives): a contrastive batch far larger than memory,
with gradients equal to the unchunked batch's. Pass 1 embeds the batch chunk by chunk without a graph, the loss and
its gradient with respect to the (detached) embeddings are computed on the whole batch, and pass 2 re-embeds each
chunk with a graph (under the RNG state pass 1 saw, so dropout matches) and back-propagates the cached embedding
gradients. Activation memory is that of one chunk.
"""

import contextlib
from collections.abc import Callable

import torch


class _RNGState:
    """The CPU (and CUDA) RNG states before a chunk's pass-1 forward, so that pass 2 replays the same dropout."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = self.cuda_index = None
        if device.type == "cuda":
            self.cuda_index = device.index if device.index is not None else torch.cuda.current_device()
            self.cuda = torch.cuda.get_rng_state(self.cuda_index)

    @contextlib.contextmanager
    def replay(self):
        # fork_rng puts the current states back afterwards: the global stream advances once, as in pass 1.
        with torch.random.fork_rng(devices=[self.cuda_index] if self.cuda is not None else []):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.cuda_index)
            yield


def _split_rows(inputs: dict, num_rows: int, chunk_size: int) -> list[dict]:
    """Split every per-row tensor of a batch into chunks of `chunk_size` rows (other entries are shared)."""
    chunks = []
    for start in range(0, num_rows, chunk_size):
        chunks.append(
            {
                key: value[start : start + chunk_size]
                if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == num_rows
                else value
                for key, value in inputs.items()
            }
        )
    return chunks


def contrastive_backward(
    model,
    inputs: dict,
    product_ids: torch.Tensor | None = None,
    chunk_size: int | None = None,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    scale: float = 1.0,
    backward: Callable[[torch.Tensor], None] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    member_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """
    Pretraining loss of one contrastive batch and its backward pass into `model`'s gradients.

    With `chunk_size` smaller than the batch this is the gradient cache: pass 1 embeds every chunk without a graph
    (saving the RNG state before each), the loss and its gradient w.r.t. the embeddings are computed on the whole
    batch, and pass 2 replays each chunk's RNG state, re-embeds it with a graph and back-propagates the cached
    embedding gradients. Gradients equal the unchunked batch's; activation memory is one chunk's.

    Args:
        model: an `EclipModel` (unwrapped).
        inputs: the batch without `product_ids` (`input_ids`, `attention_mask`, `pixel_values`, ...).
        member_ids: the products each image shows (scene-aware targets), `(rows, W)`; `None` if unknown.
        gather: all-gather across processes (see [`make_all_gather`]); `None` on one process.
        scale: multiplier of the loss before backward (gradient accumulation, share of rows across processes).
        backward: how to back-propagate a loss (Trainer passes `accelerator.backward`, which applies fp16 scaling).
        autocast: mixed-precision context factory (Trainer passes `accelerator.autocast`).
    Returns:
        `(loss, components)`, unscaled.
    """
    backward = backward or torch.Tensor.backward
    num_rows = int(inputs["input_ids"].shape[0])
    if chunk_size is None or chunk_size >= num_rows:
        with autocast():
            embeddings = model.pretraining_embeddings(**inputs)
            loss, components = model.compute_loss(**embeddings, product_ids=product_ids, gather=gather,
                                              member_ids=member_ids)
        backward(loss * scale)
        return loss, components

    device = inputs["input_ids"].device
    chunks = _split_rows(inputs, num_rows, chunk_size)
    rng_states, pass_one = [], []
    with torch.no_grad():
        for chunk in chunks:
            rng_states.append(_RNGState(device))
            with autocast():
                pass_one.append(model.pretraining_embeddings(**chunk))
    embeddings = {key: torch.cat([piece[key] for piece in pass_one]).detach().requires_grad_() for key in pass_one[0]}
    del pass_one
    with autocast():
        loss, components = model.compute_loss(**embeddings, product_ids=product_ids, gather=gather,
                                              member_ids=member_ids)
    # Gradients of the (scaled, for fp16) loss w.r.t. the embeddings, and logit_scale's gradient, which only the loss
    # uses. Going through the given backward keeps an fp16 loss scale in the cached gradients.
    backward(loss * scale)
    start = 0
    for chunk, rng_state in zip(chunks, rng_states):
        with rng_state.replay(), autocast():
            chunk_embeddings = model.pretraining_embeddings(**chunk)
        rows = next(iter(chunk_embeddings.values())).shape[0]
        keys = [key for key in chunk_embeddings if embeddings[key].grad is not None]
        torch.autograd.backward(
            [chunk_embeddings[key] for key in keys], [embeddings[key].grad[start : start + rows] for key in keys]
        )
        start += rows
    return loss, components


__all__ = ["contrastive_backward"]
