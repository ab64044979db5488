"""
EclipModel's own contracts (config checks, outputs, losses, save / load, remote code, pipelines), with and without the
instance decoder, on ECLIP's default towers; test_conformance.py runs transformers' common model tests themselves.
Over 600 lines because it is the one test module of the model class, in the order of the model's features.
"""

import copy
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor, pipeline

from conftest import minilm_dir, tiny_config, tiny_processor
from modeling_eclip import EclipConfig, EclipModel, EclipOutput

torch.set_num_threads(1)


def make_inputs(batch_images=3, batch_texts=2, image_size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, 2000, (batch_texts, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, 6:] = 0  # one padded text
    input_ids[-1, 6:] = 0
    pixel_values = torch.randn(batch_images, 3, image_size, image_size, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


@pytest.fixture(params=[True, False], ids=["eclip", "clip-baseline"])
def model(request):
    torch.manual_seed(0)
    return EclipModel(tiny_config(use_instance_decoder=request.param)).eval()


# ---------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "field, value",
    [
        ("num_instance_queries", 0),
        ("decoder_layers", -1),
        ("projection_dim", 0),
        ("text_pooling", "max"),
        ("vision_pooling", "avg"),
        ("decoder_hidden_size", 30),
        ("intra_weight", -0.5),
        ("selection_weight", float("nan")),
        ("decoder_dropout", 1.0),
        ("logit_scale_init_value", 10.0),
        ("instance_matching", "hungarian"),
        ("selection_target", "best"),
    ],
)
def test_invalid_config_value_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_config(**{field: value})


def test_one_to_one_matching_needs_scene_positives_and_no_smooth_max():
    with pytest.raises(ValueError, match="needs scene_positives=True.*instance_matching='max'"):
        tiny_config(scene_positives=False)
    with pytest.raises(ValueError, match="alternatives: pass instance_matching='max'"):
        tiny_config(inter_temperature=0.1)
    assert tiny_config(instance_matching="max", inter_temperature=0.1).inter_temperature == 0.1
    assert tiny_config(scene_positives=False, instance_matching="max").instance_matching == "max"


RECIPE = {"scene_positives": True, "instance_matching": "one_to_one", "instance_residual": True}


def _objectives(config) -> dict:
    return {name: getattr(config, name) for name in RECIPE}


def test_the_default_config_is_the_recommended_recipe(tmp_path):
    assert _objectives(EclipConfig()) == RECIPE
    assert _objectives(tiny_config()) == RECIPE
    EclipConfig().save_pretrained(tmp_path)  # saved explicitly, so it loads as saved whatever the defaults become
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {name: saved[name] for name in RECIPE} == RECIPE
    assert _objectives(AutoConfig.from_pretrained(tmp_path)) == RECIPE


def test_unknown_tower_type_is_a_clear_error():
    with pytest.raises(ValueError, match="vision_config has unknown model_type 'not_a_model'"):
        EclipConfig(vision_config={"model_type": "not_a_model"})


def test_config_accepts_config_objects_and_round_trips(tmp_path):
    from transformers import BertConfig, ViTConfig

    config = EclipConfig(
        vision_config=ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                image_size=32, patch_size=8),
        text_config=BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64),
        num_instance_queries=3,
    )
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, EclipConfig)
    assert loaded.vision_config.model_type == "vit" and loaded.vision_config.hidden_size == 32
    assert loaded.num_instance_queries == 3
    # any registered tower type builds: a ViT vision tower with a BERT text tower
    outputs = EclipModel(config).eval()(**make_inputs())
    assert outputs.instance_embeds.shape == (3, 3, config.projection_dim)


# ---------------------------------------------------------------------------------------------------- outputs
def test_output_shapes_and_normalisation(model):
    outputs = model(**make_inputs())
    assert isinstance(outputs, EclipOutput)
    assert outputs.logits_per_image.shape == (3, 2)
    torch.testing.assert_close(outputs.logits_per_text, outputs.logits_per_image.t())
    for name in ("text_embeds", "image_embeds", "global_image_embeds"):
        torch.testing.assert_close(getattr(outputs, name).norm(dim=-1), torch.ones(getattr(outputs, name).shape[0]))
    if model.config.use_instance_decoder:
        assert outputs.instance_embeds.shape == (3, 4, 16)
        assert outputs.selection_logits.shape == (3, 4)
        expected = torch.einsum("ikd,jd->ijk", outputs.instance_embeds, outputs.text_embeds).amax(-1)
    else:
        assert outputs.instance_embeds is None and outputs.selection_logits is None
        expected = outputs.image_embeds @ outputs.text_embeds.t()
    torch.testing.assert_close(outputs.logits_per_image, model.logit_scale.exp() * expected)


def test_logit_scale_is_clamped_at_ln_100(model):
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    outputs = model(**make_inputs())
    assert outputs.logits_per_image.abs().max() <= 100.0 + 1e-4


def test_eval_mode_is_deterministic(model):
    inputs = make_inputs()
    first, second = model(**inputs), model(**inputs)
    torch.testing.assert_close(first.logits_per_image, second.logits_per_image, rtol=0, atol=0)


def test_batched_equals_one_by_one(model):
    inputs = make_inputs(batch_images=3, batch_texts=2)
    with torch.no_grad():
        batched = model(**inputs)
        for i in range(3):
            single = model(pixel_values=inputs["pixel_values"][i : i + 1])
            torch.testing.assert_close(single.image_embeds[0], batched.image_embeds[i], atol=1e-5, rtol=1e-5)
        for j in range(2):
            length = int(inputs["attention_mask"][j].sum())
            single = model(input_ids=inputs["input_ids"][j : j + 1, :length])
            torch.testing.assert_close(single.text_embeds[0], batched.text_embeds[j], atol=1e-5, rtol=1e-5)


def test_return_dict_false_matches_dataclass(model):
    inputs = make_inputs()
    as_dict = model(**inputs)
    as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_dict, EclipOutput) and type(as_tuple) is tuple  # a forward that ignored the flag fails here
    fields = as_dict.to_tuple()
    assert len(as_tuple) == len(fields)
    for got, want in zip(as_tuple[:5], fields[:5]):
        torch.testing.assert_close(got, want)
    # the features, too, come as tuples (tower outputs nested as tuples, as in CLIPModel)
    features = model.get_image_features(inputs["pixel_values"], return_dict=False)
    assert type(features) is tuple and features[1].shape == (3, 16)
    assert type(model.get_text_features(inputs["input_ids"], inputs["attention_mask"], return_dict=False)) is tuple
    if model.instance_decoder is not None:
        instance = model.get_instance_features(inputs["pixel_values"], return_dict=False)
        assert type(instance) is tuple and instance[0].shape == (3, 4, 16)  # instance_embeds first
        assert type(instance[-1]) is tuple  # the vision tower's output


def test_outputs_honour_output_attentions_and_hidden_states():
    torch.manual_seed(0)
    model = EclipModel(tiny_config(attn_implementation="eager")).eval()
    inputs = make_inputs()
    num_tokens = (32 // 8) ** 2 + 1
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, output_hidden_states=True)
        image = model.get_image_features(inputs["pixel_values"], output_attentions=True, output_hidden_states=True)
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"], output_hidden_states=True)
        plain = model(**inputs)
    assert len(out.cross_attentions) == 2 and out.cross_attentions[0].shape == (3, 4, 4, num_tokens)
    for tower in (out.vision_model_output, image):
        assert len(tower.hidden_states) == 3 and len(tower.attentions) == 2
        assert tower.attentions[0].shape == (3, 4, num_tokens, num_tokens)
    assert len(out.text_model_output.hidden_states) == 3 and len(out.text_model_output.attentions) == 2
    assert len(text.hidden_states) == 3 and text.attentions is None
    assert plain.cross_attentions is None and plain.vision_model_output.attentions is None
    torch.testing.assert_close(plain.logits_per_image, out.logits_per_image)
    # the default attention implementation: the decoder's maps still come (computed eagerly for that call)
    torch.manual_seed(0)
    sdpa = EclipModel(tiny_config()).eval()
    with torch.no_grad():
        maps = sdpa(**inputs, output_attentions=True).cross_attentions
    assert sdpa.config._attn_implementation == "sdpa" and len(maps) == 2
    torch.testing.assert_close(maps[0], out.cross_attentions[0])


def test_training_arguments_of_forward_are_keyword_only():
    import inspect

    parameters = inspect.signature(EclipModel.forward).parameters
    assert list(parameters)[:7] == ["self", "input_ids", "pixel_values", "attention_mask", "position_ids",
                                    "token_type_ids", "return_loss"]
    for name in ("product_ids", "view_pixel_values", "member_ids"):
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert EclipModel.main_input_name == "input_ids"


@pytest.mark.parametrize(
    "ids, message",
    [
        (torch.tensor([[5, 30522, 7]]), r"input_ids holds the token id 30522 \(row 0, position 1\), outside .*\[0, 30522\)"),
        (torch.tensor([[5, 6], [-3, 7]]), r"input_ids holds the token id -3 \(row 1, position 0\)"),
        (torch.tensor([[5.0, 6.0]]), "input_ids must hold integer token ids, got a torch.float32 tensor"),
        (torch.tensor([[True, False]]), "input_ids must hold integer token ids"),
        (torch.full((1, 129), 5), r"input_ids has 129 tokens, more than the text tower's 128 positions"),
    ],
)
def test_bad_token_ids_name_the_input_and_the_value(ids, message):
    model = EclipModel(tiny_config())
    with pytest.raises(ValueError, match=message):
        model(input_ids=ids)
    with pytest.raises(ValueError, match=message):
        model.get_text_features(ids)
    with pytest.raises(ValueError, match=message):
        model.pretraining_embeddings(ids, pixel_values=torch.randn(ids.shape[0], 3, 32, 32))


@pytest.mark.parametrize("shape", [(0, 4), (2, 0)], ids=["no-text", "no-token"])
def test_empty_token_batches_are_refused_by_name(shape):
    model = EclipModel(tiny_config())
    ids = torch.zeros(shape, dtype=torch.long)
    for call in (lambda: model(input_ids=ids), lambda: model.get_text_features(ids)):
        with pytest.raises(ValueError, match=r"input_ids holds no text: its shape is \(%d, %d\)" % shape):
            call()


@pytest.mark.parametrize("shape", [(0, 3, 32, 32), (1, 3, 0, 32)], ids=["no-image", "no-pixel"])
def test_empty_image_batches_are_refused_by_name(shape):
    model = EclipModel(tiny_config())
    pixels = torch.zeros(shape)
    for call in (lambda: model.get_image_features(pixels), lambda: model.get_instance_features(pixels),
                 lambda: model(pixel_values=pixels, input_ids=torch.tensor([[5, 6]]))):
        with pytest.raises(ValueError, match="pixel_values holds no image"):
            call()


def test_bad_token_ids_of_a_heads_second_product_name_it():
    from modeling_eclip import EclipForProductMatching, EclipForTokenClassification

    matcher = EclipForProductMatching(tiny_config(modality="text"))
    good = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match=r"input_ids_b holds the token id 99999"):
        matcher(input_ids=good, input_ids_b=torch.tensor([[5, 99999, 7]]))
    tagger = EclipForTokenClassification(tiny_config(num_labels=3))
    with pytest.raises(ValueError, match="input_ids holds the token id -1"):
        tagger(input_ids=torch.tensor([[5, -1]]))


def test_decoder_dispatches_to_the_configured_attention_backend(monkeypatch):
    """The decoder never masks and is never causal, so flex (and flash) attention apply to it as they are."""
    from transformers.modeling_utils import AttentionInterface

    from modeling_eclip.modeling_eclip import EclipAttention

    torch.manual_seed(0)
    model = EclipModel(tiny_config()).eval()
    pixel_values = make_inputs()["pixel_values"]
    with torch.no_grad():
        reference = model.get_instance_features(pixel_values).instance_embeds
    flex, calls = AttentionInterface._global_mapping["flex_attention"], []

    def spy(module, *args, **kwargs):
        if isinstance(module, EclipAttention):
            calls.append(kwargs.get("is_causal"))
        return flex(module, *args, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, "flex_attention", spy)
    model.set_attn_implementation("flex_attention")
    assert model.config._attn_implementation == "flex_attention"
    with torch.no_grad():
        torch.testing.assert_close(model.get_instance_features(pixel_values).instance_embeds, reference,
                                   atol=1e-5, rtol=1e-4)
    assert calls == [False] * 4  # two decoder layers, self- and cross-attention, none causal
    assert EclipModel._supports_flash_attn and EclipModel._supports_flex_attn


def test_single_modality_calls(model):
    inputs = make_inputs()
    image_only = model(pixel_values=inputs["pixel_values"])
    assert image_only.logits_per_image is None and image_only.text_embeds is None
    # the first field of an image-only output is the image embedding (image-feature-extraction pipeline uses [0])
    torch.testing.assert_close(image_only[0], image_only.image_embeds)
    features = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    torch.testing.assert_close(torch.nn.functional.normalize(features, dim=-1), image_only.image_embeds)
    text_features = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    assert text_features.pooler_output.shape == (2, 16)
    assert text_features.last_hidden_state.shape == (2, 9, 32)


def test_instance_features_and_cross_attention_maps():
    torch.manual_seed(0)
    model = EclipModel(tiny_config()).eval()
    pixel_values = make_inputs()["pixel_values"]
    instance = model.get_instance_features(pixel_values, output_attentions=True)
    assert instance.instance_embeds.shape == (3, 4, 16)
    assert instance.last_hidden_state.shape == (3, 4, 32)
    assert len(instance.cross_attentions) == 2
    num_tokens = (32 // 8) ** 2 + 1
    assert instance.cross_attentions[0].shape == (3, 4, 4, num_tokens)  # (batch, heads, queries, image tokens)
    torch.testing.assert_close(instance.cross_attentions[0].sum(-1), torch.ones(3, 4, 4))
    weights = instance.selection_logits.softmax(-1).unsqueeze(-1)
    expected = torch.nn.functional.normalize((weights * instance.instance_embeds).sum(1), dim=-1)
    torch.testing.assert_close(instance.image_embeds, expected)
    # asking for the maps does not change the embeddings
    torch.testing.assert_close(model.get_instance_features(pixel_values).instance_embeds, instance.instance_embeds)


def test_residual_instances_add_the_decoder_offset_to_the_global_embedding():
    torch.manual_seed(0)
    model = EclipModel(tiny_config(instance_residual=True)).eval()
    pixel_values = make_inputs()["pixel_values"]
    with torch.no_grad():
        instances = model.get_instance_features(pixel_values)
        global_raw = model.visual_projection(model.vision_model(pixel_values=pixel_values).pooler_output)
        offsets = model.instance_projection(instances.last_hidden_state)
        torch.testing.assert_close(
            instances.instance_embeds, torch.nn.functional.normalize(global_raw[:, None] + offsets, dim=-1)
        )
        # With a zero offset every instance is the whole-image embedding the global ITC trains.
        model.instance_projection.weight.zero_()
        image_embeds = model.get_image_features(pixel_values).pooler_output
        for k in range(model.config.num_instance_queries):
            torch.testing.assert_close(model.get_instance_features(pixel_values).instance_embeds[:, k],
                                       torch.nn.functional.normalize(image_embeds, dim=-1))


def test_baseline_has_no_instance_features():
    model = EclipModel(tiny_config(use_instance_decoder=False))
    assert not any("instance" in name for name, _ in model.named_parameters())
    with pytest.raises(ValueError, match="use_instance_decoder=False"):
        model.get_instance_features(make_inputs()["pixel_values"])


# ------------------------------------------------------------------------------------------------- attention
def test_sdpa_matches_eager(saved_folder):
    inputs = make_inputs()
    sdpa = EclipModel.from_pretrained(saved_folder, attn_implementation="sdpa").eval()
    eager = EclipModel.from_pretrained(saved_folder, attn_implementation="eager").eval()
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    assert eager.text_model.config._attn_implementation == "eager"
    with torch.no_grad():
        a, b = sdpa(**inputs), eager(**inputs)
    for name in ("logits_per_image", "text_embeds", "image_embeds", "instance_embeds", "selection_logits"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-5)


# -------------------------------------------------------------------------------------------------- training
def _loss_and_grads(model, inputs):
    model.zero_grad()
    outputs = model(**inputs, return_loss=True)
    outputs.loss.backward()
    return outputs.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_same_loss_and_gradients():
    torch.manual_seed(0)
    model = EclipModel(tiny_config(decoder_dropout=0.1)).train()
    inputs = make_inputs(batch_images=4, batch_texts=4)
    inputs["product_ids"] = torch.tensor([0, 1, 1, 2])
    torch.manual_seed(1)
    loss, grads = _loss_and_grads(model, inputs)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert model.is_activation_checkpointing
    checkpointed = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)]
    assert any(type(m).__name__ == "EclipDecoderLayer" for m in checkpointed)  # the decoder is checkpointed too
    recomputed = []
    hook = model.instance_decoder.layers[0].mlp.register_forward_hook(lambda *a: recomputed.append(1))
    torch.manual_seed(1)
    loss_ckpt, grads_ckpt = _loss_and_grads(model, inputs)
    hook.remove()
    assert len(recomputed) == 2  # forward + recomputation in backward
    torch.testing.assert_close(loss_ckpt, loss)
    assert grads.keys() == grads_ckpt.keys()
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("use_decoder", [True, False])
def test_every_parameter_gets_a_gradient(use_decoder):
    torch.manual_seed(0)
    model = EclipModel(tiny_config(use_instance_decoder=use_decoder)).train()
    inputs = make_inputs(batch_images=4, batch_texts=4)
    outputs = model(**inputs, return_loss=True, product_ids=torch.arange(4),
                    view_pixel_values=torch.randn(4, 3, 32, 32))
    expected = {"itc", "inter", "intra", "selection"} if use_decoder else {"itc"}
    assert set(outputs.loss_components) == expected
    outputs.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_the_retrieval_selection_target_trains_the_head_and_leaves_the_instances_alone():
    """`selection_target="retrieval"`: with every other objective off, the selection loss moves the selection head
    (and the decoder under it) but not the instance projection nor the towers' projections."""
    torch.manual_seed(0)
    model = EclipModel(tiny_config(selection_target="retrieval", itc_weight=0.0, inter_weight=0.0,
                                   intra_weight=0.0, selection_weight=1.0)).train()
    inputs = make_inputs(batch_images=4, batch_texts=4)
    outputs = model(**inputs, return_loss=True, product_ids=torch.arange(4))
    assert set(outputs.loss_components) == {"selection"}
    outputs.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["instance_decoder.selection_head.weight"].abs().sum() > 0
    for name in ("instance_projection.weight", "visual_projection.weight", "text_projection.weight", "logit_scale"):
        assert grads[name] is None or not grads[name].abs().sum() > 0, name


def test_duplicates_of_a_product_are_not_negatives():
    torch.manual_seed(0)
    model = EclipModel(tiny_config(use_instance_decoder=False)).eval()
    inputs = make_inputs(batch_images=4, batch_texts=4)
    with torch.no_grad():
        distinct = model(**inputs, return_loss=True, product_ids=torch.tensor([0, 1, 2, 3])).loss
        merged = model(**inputs, return_loss=True, product_ids=torch.tensor([0, 0, 2, 3])).loss
    assert not torch.isclose(distinct, merged)


def test_loss_input_errors():
    model = EclipModel(tiny_config())
    inputs = make_inputs(batch_images=3, batch_texts=2)
    with pytest.raises(ValueError, match="paired rows"):
        model.pretraining_embeddings(**inputs)
    with pytest.raises(ValueError, match="needs both"):
        model(pixel_values=inputs["pixel_values"], return_loss=True)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"pixel_values": torch.full((1, 3, 32, 32), float("nan"))}, "NaN"),
        ({"pixel_values": torch.randn(3, 32, 32)}, "batch, channels, height, width"),
        ({"pixel_values": torch.randn(1, 1, 32, 32)}, "channels"),
        ({"input_ids": torch.tensor([1, 2, 3])}, "batch, sequence"),
        ({"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 5)}, "attention_mask"),
        ({}, "input_ids"),
    ],
)
def test_bad_tensors_give_clear_errors(bad, message):
    model = EclipModel(tiny_config())
    with pytest.raises(ValueError, match=message):
        model(**bad)


# ------------------------------------------------------------------------------------------------ save / load
def test_save_load_round_trip_is_identical_and_safetensors_only(saved_folder):
    files = set(os.listdir(saved_folder))
    assert "model.safetensors" in files
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)
    code = {"configuration_eclip.py", "modeling_eclip.py", "processing_eclip.py", "losses.py", "loading_utils.py",
            "tower_utils.py"}
    assert code <= files  # every module the modeling code imports travels with it (remote code)
    auto_map = json.load(open(os.path.join(saved_folder, "config.json")))["auto_map"]
    assert auto_map["AutoModel"] == "modeling_eclip.EclipModel"
    torch.manual_seed(0)
    original = EclipModel(tiny_config()).eval()
    loaded = AutoModel.from_pretrained(saved_folder).eval()
    assert isinstance(loaded, EclipModel)
    inputs = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits_per_image, original(**inputs).logits_per_image,
                                   rtol=0, atol=0)
    assert isinstance(AutoModelForZeroShotImageClassification.from_pretrained(saved_folder), EclipModel)


def test_meta_device_initialisation():
    with torch.device("meta"):
        model = EclipModel(tiny_config())
    assert all(p.device.type == "meta" for p in model.parameters())


@pytest.mark.parametrize("use_decoder", [True, False])
def test_weights_missing_from_a_checkpoint_initialise_as_in_init(monkeypatch, use_decoder):
    """transformers' `test_can_init_all_missing_weights`: materialised from the meta device (`from_pretrained` with no
    weights), the model gets the weights `__init__` gives, towers included, when each module's init is seeded alike."""
    from transformers import PreTrainedModel

    initialize = PreTrainedModel._initialize_weights

    def seeded(*args, **kwargs):
        torch.manual_seed(42)
        return initialize(*args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "_initialize_weights", seeded)
    config = tiny_config(use_instance_decoder=use_decoder)
    built = EclipModel(copy.deepcopy(config)).state_dict()
    loaded = EclipModel.from_pretrained(None, config=copy.deepcopy(config), state_dict={}).state_dict()
    assert built.keys() == loaded.keys()
    assert [name for name in built if not torch.equal(built[name], loaded[name])] == []


def test_output_capture_is_never_nested_nor_doubled(monkeypatch):
    """transformers' `test_capture_outputs_decorator`: no `capture_outputs` runs inside another one recording the same
    output (the BERT text tower records `cross_attentions` too, so only the decoder may capture the decoder's), and
    hooks installed by a tower before the decoder's never record an output twice."""
    from collections import Counter

    from transformers.utils.output_capturing import CompileableContextVar

    active, original_set, original_reset = Counter(), CompileableContextVar.set, CompileableContextVar.reset

    def counting_set(self, value):
        active.update(value.keys())
        assert max(active.values(), default=0) <= 1, f"capture_outputs nested: {dict(active)}"
        return original_set(self, value)

    def counting_reset(self, token):
        active.subtract(self.context_var.get().keys())
        original_reset(self, token)

    monkeypatch.setattr(CompileableContextVar, "set", counting_set)
    monkeypatch.setattr(CompileableContextVar, "reset", counting_reset)
    torch.manual_seed(0)
    model = EclipModel(tiny_config(attn_implementation="eager")).eval()
    inputs = make_inputs()
    with torch.no_grad():
        image = model.get_image_features(inputs["pixel_values"], output_hidden_states=True)  # the tower hooks first
        out = model(**inputs, output_attentions=True, output_hidden_states=True)
    assert len(image.hidden_states) == 3 and len(out.vision_model_output.hidden_states) == 3
    assert len(out.text_model_output.attentions) == 2 and len(out.cross_attentions) == 2


def test_ignore_mismatched_sizes_when_projection_dim_differs(saved_folder):
    model = EclipModel.from_pretrained(saved_folder, projection_dim=8, ignore_mismatched_sizes=True)
    assert model.text_projection.weight.shape == (8, 32)
    reference = EclipModel.from_pretrained(saved_folder)
    # the towers still carry the saved weights
    torch.testing.assert_close(model.text_model.embeddings.word_embeddings.weight,
                               reference.text_model.embeddings.word_embeddings.weight)
    assert model(**make_inputs()).text_embeds.shape == (2, 8)


def test_from_vision_text_pretrained_loads_real_towers(tmp_path):
    from transformers import AutoModel as HFAutoModel
    from transformers import CLIPVisionConfig, CLIPVisionModel

    vision_dir = tmp_path / "clip-vision"
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=4, image_size=32, patch_size=8)).save_pretrained(vision_dir)
    model = EclipModel.from_vision_text_pretrained(str(vision_dir), minilm_dir(), num_instance_queries=3,
                                                   projection_dim=24)
    assert model.config.text_config.hidden_size == 384 and model.config.num_instance_queries == 3
    assert _objectives(model.config) == RECIPE  # the recommended recipe, as EclipConfig() gives it
    minilm = HFAutoModel.from_pretrained(minilm_dir())
    torch.testing.assert_close(model.text_model.embeddings.word_embeddings.weight,
                               minilm.embeddings.word_embeddings.weight)
    reference_vision = CLIPVisionModel.from_pretrained(vision_dir)
    torch.testing.assert_close(model.vision_model.post_layernorm.weight,
                               reference_vision.post_layernorm.weight)
    # the pretrained text tower gives meaningful similarities before any ECLIP training
    tokenizer = tiny_processor().tokenizer
    texts = ["red cotton t-shirt for men", "men's red cotton tee", "stainless steel kitchen knife"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = minilm(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    model.eval()
    with torch.no_grad():
        projected = model.get_text_features(**batch).pooler_output
    torch.testing.assert_close(projected, model.text_projection(pooled), atol=1e-5, rtol=1e-5)
    # round trip of the composed model
    model.save_pretrained(tmp_path / "composed")
    again = EclipModel.from_pretrained(tmp_path / "composed")
    torch.testing.assert_close(again.text_model.embeddings.word_embeddings.weight,
                               minilm.embeddings.word_embeddings.weight)


# ------------------------------------------------------------------------------------------- remote code & pipelines
REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class HideEclip(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_eclip", "training"):
                raise ImportError(name + " is hidden: this process must load the copied code")

    sys.meta_path.insert(0, HideEclip())
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, pipeline

    folder = sys.argv[1]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    image = Image.new("RGB", (40, 50), (200, 10, 10))
    inputs = processor(images=[image], text=["red shirt", "blue jeans"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
        pair = processor(images=[image, image], text=["red shirt", "blue jeans"], return_tensors="pt")
        loss = model(**pair, return_loss=True, product_ids=torch.tensor([0, 1])).loss
    classifier = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
    print(json.dumps({
        "module": type(model).__module__,
        "processor": type(processor).__name__,
        "eclip_imported": "modeling_eclip" in sys.modules,
        "logits": logits.tolist(),
        "loss": float(loss),
        "labels": [r["label"] for r in classifier(image, candidate_labels=["shirt", "jeans"])],
    }))
    """
)


@pytest.mark.slow
def test_trust_remote_code_load_without_the_package(saved_folder, tmp_path):
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, str(script), saved_folder], capture_output=True, text=True, env=env,
                            timeout=300, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules.")
    assert report["processor"] == "EclipProcessor" and not report["eclip_imported"]
    # same numbers as the installed package gives
    model = AutoModel.from_pretrained(saved_folder).eval()
    processor = AutoProcessor.from_pretrained(saved_folder)
    inputs = processor(images=[Image.new("RGB", (40, 50), (200, 10, 10))], text=["red shirt", "blue jeans"],
                       return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits_per_image
    torch.testing.assert_close(torch.tensor(report["logits"]), expected, atol=1e-5, rtol=1e-5)
    assert sorted(report["labels"]) == ["jeans", "shirt"]
    assert report["loss"] > 0  # the objectives travel with the copied code (losses.py)


def test_zero_shot_pipeline(saved_folder):
    classifier = pipeline("zero-shot-image-classification", model=saved_folder)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    results = classifier(image, candidate_labels=["shirt", "jeans", "watch"])
    assert [r["label"] for r in results] != [] and {r["label"] for r in results} == {"shirt", "jeans", "watch"}
    assert abs(sum(r["score"] for r in results) - 1.0) < 1e-5
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    # the pipeline agrees with a direct call to the model
    model = AutoModel.from_pretrained(saved_folder).eval()
    processor = AutoProcessor.from_pretrained(saved_folder)
    inputs = processor(images=image, text=[f"This is a photo of {x}." for x in ["shirt", "jeans", "watch"]],
                       return_tensors="pt")
    with torch.no_grad():
        probs = model(**inputs).logits_per_image.softmax(-1)[0]
    by_label = {r["label"]: r["score"] for r in results}
    torch.testing.assert_close(torch.tensor([by_label[x] for x in ["shirt", "jeans", "watch"]]), probs,
                               atol=1e-5, rtol=1e-4)


def test_image_feature_extraction_pipeline(saved_folder):
    extractor = pipeline("image-feature-extraction", model=saved_folder)
    image = Image.new("RGB", (64, 40), (10, 120, 30))
    features = extractor(image, return_tensors=True)
    assert features.shape == (1, 16)
    model = AutoModel.from_pretrained(saved_folder).eval()
    processor = AutoProcessor.from_pretrained(saved_folder)
    with torch.no_grad():
        expected = model(pixel_values=processor(images=image, return_tensors="pt")["pixel_values"]).image_embeds
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)


def test_deepcopy_and_config_sharing():
    model = EclipModel(tiny_config())
    assert model.vision_model.config is model.config.vision_config
    clone = copy.deepcopy(model)
    assert clone.config.num_instance_queries == 4


def test_torch_compile_does_not_change_outputs():
    # aot_eager runs dynamo's graph capture and AOT autograd without C++ codegen (inductor gives the same numbers,
    # measured in benchmarks, but compiles for minutes on a 2-core CI machine).
    torch.manual_seed(0)
    model = EclipModel(tiny_config()).eval()
    inputs = make_inputs()
    with torch.no_grad():
        expected = model(**inputs)
        compiled = torch.compile(model, backend="aot_eager")(**inputs)
    for name in ("logits_per_image", "image_embeds", "instance_embeds", "selection_logits"):
        torch.testing.assert_close(getattr(compiled, name), getattr(expected, name), atol=1e-6, rtol=1e-5)
