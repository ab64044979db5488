"""
transformers' common model checks (`ModelTesterMixin` in transformers' tests/test_modeling_common.py), ported to
pytest and run on `CLIPModel` and on `EclipModel` with the same tiny towers: a CLIP ViT and a CLIP text transformer.
transformers' test package is not installed, so the checks are re-written here from its logic; each runs on both
models, so a check that `EclipModel` fails and `CLIPModel` passes is a conformance bug of ours.
"""

import copy
import inspect

import pytest
import torch
from transformers import CLIPConfig, CLIPModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from modeling_eclip import EclipConfig, EclipModel

torch.set_num_threads(1)

BATCH, SEQ, IMAGE, PATCH, LAYERS, HEADS = 3, 7, 30, 6, 2, 4
NUM_PATCHES = (IMAGE // PATCH) ** 2
VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
              image_size=IMAGE, patch_size=PATCH, dropout=0.0, attention_dropout=0.0)
EOS = 98  # CLIP's text tower pools the first eos token
TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            max_position_embeddings=64, dropout=0.0, attention_dropout=0.0, eos_token_id=EOS)
MODELS = ("clip", "eclip")


def make_config(kind: str, attn_implementation: str | None = None):
    if kind == "clip":
        config = CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)
    else:
        config = EclipConfig(
            vision_config={"model_type": "clip_vision_model", **VISION},
            text_config={"model_type": "clip_text_model", **TEXT},
            projection_dim=16, text_pooling="pooler", num_instance_queries=4, decoder_layers=2,
            decoder_attention_heads=HEADS, decoder_hidden_size=32,
        )
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    return config


def make_model(kind: str, attn_implementation: str | None = None, seed: int = 0):
    torch.manual_seed(seed)
    config = make_config(kind, attn_implementation)
    return (CLIPModel if kind == "clip" else EclipModel)(config).eval()


def make_inputs(seed: int = 1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, EOS, (BATCH, SEQ), generator=generator)
    attention_mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    input_ids[:, -1] = EOS
    attention_mask[0, -2:] = 0  # a right-padded row (as CLIP's tokenizer pads), its eos before the padding
    input_ids[0, -3:] = torch.tensor([EOS, 1, 1])
    pixel_values = torch.randn(BATCH, 3, IMAGE, IMAGE, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


def assert_same(a, b, atol=1e-5, path="output"):
    """Recursive equality of (nested) tuples, lists, dicts, ModelOutputs and tensors."""
    if isinstance(a, ModelOutput):
        a = a.to_tuple()
    if isinstance(b, ModelOutput):
        b = b.to_tuple()
    if isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b), f"{path}: {type(a)} of {len(a)} vs {type(b)}"
        for index, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, atol, f"{path}[{index}]")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], atol, f"{path}[{key!r}]")
    elif torch.is_tensor(a):
        torch.testing.assert_close(a, b, atol=atol, rtol=0, msg=lambda m: f"{path}: {m}")
    else:
        assert a == b, path


# ------------------------------------------------------------------------------------------- signatures, loading
@pytest.mark.parametrize("kind", MODELS)
def test_forward_signature_starts_with_the_main_input(kind):
    model = make_model(kind)
    names = list(inspect.signature(model.forward).parameters)
    assert names[:1] == [model.main_input_name]
    assert names[:4] == ["input_ids", "pixel_values", "attention_mask", "position_ids"]


@pytest.mark.parametrize("kind", MODELS)
def test_save_load(kind, tmp_path):
    model, inputs = make_model(kind), make_inputs()
    with torch.no_grad():
        first = model(**inputs)[0]
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        second = reloaded(**inputs)[0]
    assert_same(first, second)
    reloaded.save_pretrained(tmp_path)  # from_pretrained adds config fields: they must load back too
    assert_same(first, type(model).from_pretrained(tmp_path).eval()(**inputs)[0])


@pytest.mark.parametrize("kind", MODELS)
def test_from_pretrained_no_checkpoint(kind):
    model = make_model(kind)
    state_dict = model.state_dict()
    new_model = type(model).from_pretrained(None, config=copy.deepcopy(model.config), state_dict=state_dict)
    assert new_model.state_dict().keys() == state_dict.keys()
    for name, tensor in new_model.state_dict().items():
        torch.testing.assert_close(tensor, state_dict[name], msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("kind", MODELS)
def test_determinism(kind):
    model, inputs = make_model(kind), make_inputs()
    with torch.no_grad():
        assert_same(model(**inputs)[0], model(**inputs)[0], atol=0)


# ---------------------------------------------------------------------------------------- outputs and return_dict
@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("extra", [{}, {"output_hidden_states": True}, {"output_attentions": True},
                                   {"output_hidden_states": True, "output_attentions": True}])
def test_model_outputs_equivalence(kind, extra):
    """`return_dict=False` gives a tuple holding exactly the dict output's non-None fields (nested too)."""
    model, inputs = make_model(kind, "eager"), make_inputs()
    with torch.no_grad():
        as_dict = model(**inputs, **extra, return_dict=True)
        as_tuple = model(**inputs, **extra, return_dict=False)
    assert isinstance(as_dict, ModelOutput) and type(as_tuple) is tuple
    assert_same(as_tuple, as_dict.to_tuple())


@pytest.mark.parametrize("kind", MODELS)
def test_config_return_dict_false_gives_tuples_of_features(kind):
    model, inputs = make_model(kind), make_inputs()
    model.config.return_dict = False
    with torch.no_grad():
        assert type(model.get_image_features(inputs["pixel_values"])) is tuple
        assert type(model.get_text_features(inputs["input_ids"], inputs["attention_mask"])) is tuple


@pytest.mark.parametrize("kind", [
    pytest.param("clip", marks=pytest.mark.xfail(strict=True, raises=AttributeError, reason=(
        "CLIPModel.forward reads .pooler_output of what its get_image_features returns, a tuple under "
        "config.return_dict=False"))),
    "eclip",
])
def test_config_return_dict_false_gives_a_tuple(kind):
    model, inputs = make_model(kind), make_inputs()
    model.config.return_dict = False
    with torch.no_grad():
        assert type(model(**inputs)) is tuple


TOKENS = {"image": (NUM_PATCHES + 1, VISION["hidden_size"]), "text": (SEQ, TEXT["hidden_size"])}


def get_features(model, inputs: dict, modality: str, **kwargs):
    if modality == "image":
        return model.get_image_features(pixel_values=inputs["pixel_values"], **kwargs)
    return model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **kwargs)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("modality", ["image", "text"])
@pytest.mark.parametrize("return_dict", [True, False, None])
def test_get_features_output(kind, modality, return_dict):
    model, inputs = make_model(kind), make_inputs()
    with torch.no_grad():
        out = get_features(model, inputs, modality, **({} if return_dict is None else {"return_dict": return_dict}))
    if return_dict is False:
        assert type(out) is tuple
        last_hidden_state, pooled = out[0], out[1]
    else:
        assert isinstance(out, BaseModelOutputWithPooling)
        last_hidden_state, pooled = out.last_hidden_state, out.pooler_output
    assert last_hidden_state.shape == (BATCH, *TOKENS[modality])
    assert pooled.shape == (BATCH, model.config.projection_dim)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("modality", ["image", "text"])
def test_get_features_hidden_states(kind, modality):
    model, inputs = make_model(kind), make_inputs()
    with torch.no_grad():
        out = get_features(model, inputs, modality, output_hidden_states=True)
        as_tuple = get_features(model, inputs, modality, output_hidden_states=True, return_dict=False)
    assert out.hidden_states is not None and len(out.hidden_states) == LAYERS + 1
    assert all(state.shape == (BATCH, *TOKENS[modality]) for state in out.hidden_states)
    assert out.attentions is None
    assert type(as_tuple) is tuple and len(as_tuple[2]) == LAYERS + 1


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("modality", ["image", "text"])
def test_get_features_attentions(kind, modality):
    model, inputs = make_model(kind, "eager"), make_inputs()
    with torch.no_grad():
        out = get_features(model, inputs, modality, output_attentions=True)
    length = TOKENS[modality][0]
    assert out.attentions is not None and len(out.attentions) == LAYERS
    assert all(attention.shape == (BATCH, HEADS, length, length) for attention in out.attentions)
    assert out.hidden_states is None


@pytest.mark.parametrize("kind", MODELS)
def test_forward_returns_the_towers_hidden_states_and_attentions(kind):
    model, inputs = make_model(kind, "eager"), make_inputs()
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, output_attentions=True)
    for tower, length in ((out.vision_model_output, NUM_PATCHES + 1), (out.text_model_output, SEQ)):
        assert len(tower.hidden_states) == LAYERS + 1 and len(tower.attentions) == LAYERS
        assert tower.attentions[0].shape == (BATCH, HEADS, length, length)
    with torch.no_grad():
        plain = model(**inputs)
    assert plain.vision_model_output.hidden_states is None and plain.text_model_output.attentions is None


@pytest.mark.parametrize("kind", MODELS)
def test_batching_equivalence(kind):
    """A row's outputs do not depend on the other rows of its batch."""
    model, inputs = make_model(kind), make_inputs()
    with torch.no_grad():
        images = model.get_image_features(inputs["pixel_values"]).pooler_output
        texts = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        for row in range(BATCH):
            one = {key: value[row : row + 1] for key, value in inputs.items()}
            torch.testing.assert_close(model.get_image_features(one["pixel_values"]).pooler_output, images[row : row + 1],
                                       atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(
                model.get_text_features(one["input_ids"], one["attention_mask"]).pooler_output, texts[row : row + 1],
                atol=1e-5, rtol=1e-4,
            )


# ------------------------------------------------------------------------------------------ attention backends
@pytest.mark.parametrize("kind", MODELS)
def test_eager_and_sdpa_agree(kind):
    eager, inputs = make_model(kind, "eager"), make_inputs()
    sdpa = make_model(kind, "sdpa")
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    with torch.no_grad():
        assert_same(eager(**inputs).logits_per_image, sdpa(**inputs).logits_per_image, atol=1e-5)


@pytest.mark.parametrize("kind", MODELS)
def test_set_attn_implementation_reaches_every_attention(kind):
    model, inputs = make_model(kind, "sdpa"), make_inputs()
    with torch.no_grad():
        before = model(**inputs).logits_per_image
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    assert model.config.vision_config._attn_implementation == "eager"
    assert model.config.text_config._attn_implementation == "eager"
    with torch.no_grad():
        assert_same(before, model(**inputs).logits_per_image)


# ----------------------------------------------------------------------------------------------------- training
def _train_step(model, inputs) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    loss = model(**inputs, return_loss=True).loss
    assert torch.isfinite(loss)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", MODELS)
def test_training(kind):
    model, inputs = make_model(kind), make_inputs()
    grads = _train_step(model, inputs)
    assert grads and all(torch.isfinite(g).all() for g in grads.values())
    assert "logit_scale" in grads and any(name.startswith("vision_model.") for name in grads)
    assert any(name.startswith("text_model.") for name in grads)


@pytest.mark.parametrize("kind", MODELS)
def test_training_gradient_checkpointing(kind):
    """Gradient checkpointing changes memory, not gradients (no dropout in these towers)."""
    model, inputs = make_model(kind), make_inputs()
    plain = _train_step(model, inputs)
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    checkpointed = _train_step(model, inputs)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=lambda m: f"{name}: {m}")
    model.activation_checkpointing_disable()
    assert not model.is_activation_checkpointing


@pytest.mark.parametrize("kind", MODELS)
def test_retain_grad_hidden_states_attentions(kind):
    model, inputs = make_model(kind, "eager"), make_inputs()
    model.train()
    out = model(**inputs, output_hidden_states=True, output_attentions=True)
    hidden, attention = out.vision_model_output.hidden_states[0], out.vision_model_output.attentions[0]
    hidden.retain_grad()
    attention.retain_grad()
    out.logits_per_image.sum().backward()
    assert hidden.grad is not None and attention.grad is not None
