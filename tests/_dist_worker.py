# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
One process of the two-process test in `test_trainer.py` (run by `torchrun --nproc_per_node 2`, gloo on CPU) and of
the one-GPU NCCL test in `test_gpu.py` (`torchrun --nproc_per_node 1 ... WORKDIR nccl`).

Usage: `torchrun --nproc_per_node N tests/_dist_worker.py WORKDIR [BACKEND]`, BACKEND `gloo` (default: CPU) or `nccl`
(one GPU per process). WORKDIR holds `model/` (a saved tiny ECLIP) and `data.pt` (the rows). Each process runs one
real EclipTrainer optimizer step (DDP wrapping, scheduled sampler, gradient cache, all-gathered negatives) and writes
`WORKDIR/rank{R}.pt` with the rows it saw, its local loss, the synchronised gradients just before the optimizer step
(on the CPU), the world size, the process group's backend and the device the model ran on.
"""

import os
import sys

import torch
from torch.utils.data import Dataset
from transformers import TrainerCallback

from modeling_eclip import EclipModel
from eclip.training.trainer import EclipTrainer, EclipTrainingArguments


class Rows(Dataset):
    def __init__(self, data: dict):
        self.data = data

    def __len__(self):
        return len(self.data["product_ids"])

    def __getitem__(self, index):
        return {"row": index, **{key: value[index] for key, value in self.data.items()}}


def collate(rows):
    batch = {key: torch.stack([torch.as_tensor(row[key]) for row in rows]) for key in rows[0]}
    batch["num_skipped_images"] = torch.tensor(1)
    return batch


class RecordingTrainer(EclipTrainer):
    """Keeps the rows, the local loss and the synchronised gradients of the first optimizer step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.record = {}

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.record.setdefault("rows", inputs.pop("row").tolist())
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.record.setdefault("loss", loss.item())
        return loss


class GradientCapture(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if "grads" not in self.trainer.record:
            model = self.trainer.accelerator.unwrap_model(self.trainer.model)
            self.trainer.record["grads"] = {
                name: p.grad.detach().cpu().clone() for name, p in model.named_parameters() if p.grad is not None
            }
            self.trainer.record["device"] = str(next(model.parameters()).device)


def main():
    workdir = sys.argv[1]
    backend = sys.argv[2] if len(sys.argv) > 2 else "gloo"
    if backend not in ("gloo", "nccl"):
        raise SystemExit(f"BACKEND must be gloo or nccl, got {backend!r}")
    if backend == "nccl":
        # The test compares the gradients with a float32 CPU reference: no TF32 in the GPU's matmuls and convolutions.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    model = EclipModel.from_pretrained(os.path.join(workdir, "model"))
    data = torch.load(os.path.join(workdir, "data.pt"))
    args = EclipTrainingArguments(
        output_dir=os.path.join(workdir, "run"),
        max_steps=1,
        contrastive_batch_schedule="0:8",
        contrastive_chunk_size=3,  # 4 rows per process: chunks of 3 and 1
        learning_rate=1e-3,
        max_grad_norm=0.0,  # compare raw gradients
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=backend == "gloo",
        ddp_backend=backend,
        disable_tqdm=True,
        seed=0,
    )
    trainer = RecordingTrainer(model=model, args=args, train_dataset=Rows(data), data_collator=collate)
    trainer.add_callback(GradientCapture(trainer))
    trainer.train()
    record = dict(trainer.record)
    initialized = torch.distributed.is_initialized()
    record["world_size"] = torch.distributed.get_world_size() if initialized else 1
    record["backend"] = torch.distributed.get_backend() if initialized else None
    record["log"] = [entry for entry in trainer.state.log_history if "loss" in entry]
    torch.save(record, os.path.join(workdir, f"rank{trainer.args.process_index}.pt"))


if __name__ == "__main__":
    main()
