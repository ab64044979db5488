"""
transformers' own common model tests (`ModelTesterMixin` of tests/test_modeling_common.py, from the installed
transformers version) run on `CLIPModel` and on `EclipModel` with the same tiny CLIP towers, set up as transformers'
tests/models/clip/test_modeling_clip.py sets up `CLIPModel`, and on `EclipModel` with its default text tower (BERT).
A check that `EclipModel` fails and `CLIPModel` passes is a conformance bug of ours; a check transformers skips for
`CLIPModel` is skipped for `EclipModel` with the same reason.

transformers' wheel carries no tests, its sdist does: `.ci/run` downloads the sdist of the installed version and
points `ECLIP_TRANSFORMERS_TESTS` at its tests/ folder (default: `~/.cache/eclip/transformers-<version>-tests`, where
the same step leaves it). Without that folder these tests are skipped, saying how to get it. The sdist lacks
tests/exporters and tests/generation, from which test_modeling_common imports the mixins of two other test families
(`torch.export` and `generate()`); empty classes stand in for them, so those families do not run here.
"""

import importlib
import os
import sys
import types
import unittest
import warnings

import numpy as np
import pytest
import torch
import transformers
from transformers import BertConfig, CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from modeling_eclip import EclipConfig, EclipModel

torch.set_num_threads(1)

DEFAULT_TESTS_DIR = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
    "eclip", f"transformers-{transformers.__version__}-tests",
)
FETCH_HINT = (
    f"run the transformers-tests step of .ci/run (pip download transformers=={transformers.__version__} "
    f"--no-deps --no-binary :all:, its tests/ extracted to {DEFAULT_TESTS_DIR}; pip install parameterized)"
)


def load_transformers_model_tests():
    """transformers' test_modeling_common module, imported as `transformers_tests.test_modeling_common`, or a reason
    why it cannot be (no tests folder, or `parameterized` missing). A folder named by ECLIP_TRANSFORMERS_TESTS that
    holds no tests is an error, not a skip: CI asked for them."""
    folder = os.environ.get("ECLIP_TRANSFORMERS_TESTS")
    if folder and not os.path.isfile(os.path.join(folder, "test_modeling_common.py")):
        raise FileNotFoundError(f"ECLIP_TRANSFORMERS_TESTS={folder} holds no test_modeling_common.py: {FETCH_HINT}.")
    folder = folder or DEFAULT_TESTS_DIR
    if not os.path.isfile(os.path.join(folder, "test_modeling_common.py")):
        return None, f"transformers' tests are not in {folder}: {FETCH_HINT}"
    try:
        import parameterized  # noqa: F401  (test_modeling_common's only dependency beyond transformers and pytest)
    except ImportError:
        return None, f"test_modeling_common needs the parameterized package: {FETCH_HINT}"
    package = types.ModuleType("transformers_tests")
    package.__path__ = [folder]
    sys.modules["transformers_tests"] = package
    stand_ins = (("exporters.test_export", "ExportTesterMixin"), ("generation.test_utils", "GenerationTesterMixin"))
    for name, mixin in stand_ins:
        parent, child = f"transformers_tests.{name.split('.')[0]}", types.ModuleType(f"transformers_tests.{name}")
        sys.modules.setdefault(parent, types.ModuleType(parent)).__path__ = []
        setattr(child, mixin, type(mixin, (), {}))  # not in the sdist; see the module docstring
        sys.modules[child.__name__] = child
    with warnings.catch_warnings():  # transformers registers its marks (flash_attn_test...) in its own conftest
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        return importlib.import_module("transformers_tests.test_modeling_common"), None


common, UNAVAILABLE = load_transformers_model_tests()


# ------------------------------------------------------------------------------------ model testers, as CLIP's
class VisionTester:
    """CLIPVisionModelTester's settings."""

    batch_size, image_size, patch_size, num_channels = 12, 30, 2, 3
    hidden_size, num_hidden_layers, num_attention_heads, intermediate_size = 32, 2, 4, 37
    seq_length = (image_size // patch_size) ** 2 + 1

    def get_config(self) -> CLIPVisionConfig:
        return CLIPVisionConfig(
            image_size=self.image_size, patch_size=self.patch_size, num_channels=self.num_channels,
            hidden_size=self.hidden_size, projection_dim=32, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size, dropout=0.1,
            attention_dropout=0.1, initializer_range=0.02,
        )

    def prepare_config_and_inputs_for_common(self):
        pixel_values = common.floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), {"pixel_values": pixel_values}


class TextTester:
    """CLIPTextModelTester's settings (`bert=True`: the same sizes in a BERT tower, ECLIP's default text tower)."""

    batch_size, seq_length, vocab_size = 12, 7, 99
    hidden_size, num_hidden_layers, num_attention_heads, intermediate_size = 32, 2, 4, 37

    def __init__(self, bert: bool = False):
        self.bert = bert

    def get_config(self):
        sizes = dict(vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
                     num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
                     max_position_embeddings=512, initializer_range=0.02)
        if self.bert:
            return BertConfig(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, **sizes)
        return CLIPTextConfig(projection_dim=32, dropout=0.1, attention_dropout=0.1, **sizes)

    def prepare_config_and_inputs_for_common(self):
        input_ids = common.ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = common.random_attention_mask([self.batch_size, self.seq_length])
        for row, start in enumerate(np.random.randint(1, self.seq_length - 1, size=(self.batch_size,))):
            attention_mask[row, :start] = 1  # right padding, as CLIP's tester makes it
            attention_mask[row, start:] = 0
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


class ModelTester:
    """CLIPModelTester: a text and a vision tester, one config, and paired inputs with `return_loss=True`."""

    def __init__(self, parent, kind: str):
        self.parent, self.kind = parent, kind
        self.text_model_tester = TextTester(bert=kind == "eclip-bert")
        self.vision_model_tester = VisionTester()
        self.batch_size = self.text_model_tester.batch_size
        self.is_training = True

    def get_config(self):
        text, vision = self.text_model_tester.get_config().to_dict(), self.vision_model_tester.get_config().to_dict()
        if self.kind == "clip":
            return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)
        pooling = {"text_pooling": "pooler"} if self.kind == "eclip" else {}  # CLIP's own pooling of its text tower
        return EclipConfig(text_config=text, vision_config=vision, projection_dim=64, num_instance_queries=4,
                           decoder_layers=2, decoder_attention_heads=4, decoder_hidden_size=32, **pooling)

    def prepare_config_and_inputs_for_common(self):
        _, text_inputs = self.text_model_tester.prepare_config_and_inputs_for_common()
        _, vision_inputs = self.vision_model_tester.prepare_config_and_inputs_for_common()
        return self.get_config(), {**text_inputs, **vision_inputs, "return_loss": True}


# ----------------------------------------------------------------------------------- transformers' mixin itself
if common is None:

    def test_transformers_model_tests():
        pytest.skip(UNAVAILABLE)

else:

    class CompositeModelTests(common.ModelTesterMixin):
        """CLIPModelTest's settings and skips, for CLIPModel and EclipModel alike."""

        kind: str
        additional_model_inputs = ["pixel_values"]
        test_resize_embeddings = False
        test_attention_outputs = False
        _is_composite = True

        def setUp(self):
            self.model_tester = ModelTester(self, self.kind)

        @unittest.skip(reason="Hidden_states is tested in individual model tests")
        def test_hidden_states_output(self):
            pass

        @unittest.skip(reason="Inputs_embeds is tested in individual model tests")
        def test_inputs_embeds(self):
            pass

        @unittest.skip(reason="Retain_grad is tested in individual model tests")
        def test_retain_grad_hidden_states_attentions(self):
            pass

        @unittest.skip(reason="CLIPModel does not have input/output embeddings")
        def test_model_get_set_embeddings(self):
            pass

        def test_sdpa_can_dispatch_on_flash(self):
            self.skipTest(reason="CLIP text tower has two attention masks: `causal_attention_mask` and `attention_mask`")

        def test_sdpa_can_compile_dynamic(self):
            self.skipTest(reason="CLIP model can't be compiled dynamic, error in clip_loss`")

    class CLIPModelTest(CompositeModelTests, unittest.TestCase):
        all_model_classes = (CLIPModel,)
        kind = "clip"

    class EclipModelTest(CompositeModelTests, unittest.TestCase):
        all_model_classes = (EclipModel,)
        kind = "eclip"

    class EclipModelBertTest(CompositeModelTests, unittest.TestCase):
        """ECLIP's default towers: a CLIP ViT and a BERT text encoder (whose outputs include `cross_attentions`)."""

        all_model_classes = (EclipModel,)
        kind = "eclip-bert"


# ------------------------------------------------------------------------------------------- beyond the mixin
def make_model(kind: str):
    torch.manual_seed(0)
    config = ModelTester(None, kind).get_config()
    return (CLIPModel if kind == "clip" else EclipModel)(config).eval()


def make_inputs(batch: int = 3) -> dict:
    generator = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(3, TextTester.vocab_size, (batch, TextTester.seq_length), generator=generator),
            "pixel_values": torch.randn(batch, 3, VisionTester.image_size, VisionTester.image_size, generator=generator)}


@pytest.mark.parametrize("kind", ["clip", "eclip"])
def test_config_return_dict_false_gives_tuples_of_features(kind):
    model, inputs = make_model(kind), make_inputs()
    model.config.return_dict = False
    with torch.no_grad():
        assert type(model.get_image_features(inputs["pixel_values"])) is tuple
        assert type(model.get_text_features(inputs["input_ids"])) is tuple


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
