"""ONNX export (`python -m eclip.training.export`) and `EclipOnnxModel`: a tiny ECLIP, exported, must give PyTorch's
embeddings on real photos and titles, at several batch sizes and text lengths (the dynamic axes)."""

import csv
import json
import os

import pytest
import torch

from conftest import tiny_config, tiny_processor

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ATOL = 1e-4
PHOTOS = ("10000.jpg", "10001.jpg", "10002.jpg")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A seeded tiny ECLIP (with the instance decoder) saved as a user would, and its export through the CLI."""
    from eclip.training.export import main
    from modeling_eclip import EclipModel

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    folder, out = root / "eclip-tiny", root / "eclip-onnx"
    EclipModel(tiny_config()).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    assert main([str(folder), str(out)]) == 0
    yield str(folder), str(out)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def real_batch(data_dir):
    """Three real product photos and their real titles."""
    from modeling_eclip import open_image

    root = os.path.join(data_dir, "fashion-products")
    with open(os.path.join(root, "metadata.csv"), newline="") as f:
        titles = {row["file_name"]: row["productDisplayName"] for row in csv.DictReader(f)}
    names = [f"images/{name}" for name in PHOTOS]
    return [open_image(os.path.join(root, name)) for name in names], [titles[name] for name in names]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("eclip-export: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def _models(exported):
    from eclip.training.export import EclipOnnxModel
    from modeling_eclip import EclipModel

    folder, out = exported
    return EclipModel.from_pretrained(folder).eval(), EclipOnnxModel.from_pretrained(out)


def test_export_layout(exported):
    from transformers import AutoProcessor

    from eclip.training.export import TEXT_FILE, VISION_FILE

    _, out = exported
    names = set(os.listdir(out))
    assert {VISION_FILE, TEXT_FILE, "config.json", "onnx_export.json"} <= names
    assert not {"model.safetensors"} & names
    info = json.load(open(os.path.join(out, "onnx_export.json")))
    assert info["vision_model"]["outputs"] == ["image_embeds", "instance_embeds", "selection_logits"]
    assert info["text_model"]["max_position_embeddings"] == 128
    # The folder is self-contained: its processor loads from it.
    assert AutoProcessor.from_pretrained(out).tokenizer is not None


@pytest.mark.parametrize("batch_size", [1, 3])
def test_image_features_match_pytorch(exported, real_batch, batch_size):
    model, onnx_model = _models(exported)
    processor = tiny_processor()
    images, _ = real_batch
    pixel_values = processor(images=images[:batch_size], return_tensors="pt")["pixel_values"]
    assert pixel_values.shape[0] == batch_size
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=pixel_values).pooler_output
        instances = model.get_instance_features(pixel_values=pixel_values)
    got = onnx_model.get_image_features(pixel_values)
    assert got.pooler_output.shape == expected.shape == (batch_size, 16)
    torch.testing.assert_close(got.pooler_output, expected, atol=ATOL, rtol=0)
    got_instances = onnx_model.get_instance_features(pixel_values)
    for name in ("image_embeds", "instance_embeds", "selection_logits"):
        torch.testing.assert_close(getattr(got_instances, name), getattr(instances, name), atol=ATOL, rtol=0)


@pytest.mark.parametrize(("batch_size", "padding"), [(3, "longest"), (1, "max_length")])
def test_text_features_match_pytorch(exported, real_batch, batch_size, padding):
    model, onnx_model = _models(exported)
    processor = tiny_processor()
    _, titles = real_batch
    # Real titles, padded to the longest (3 rows of uneven length: real padding) or to 40 tokens.
    encoded = processor(text=titles[:batch_size], return_tensors="pt", padding=padding, max_length=40)
    length = encoded["input_ids"].shape[1]
    assert length == 40 if padding == "max_length" else length < 40
    with torch.no_grad():
        expected = model.get_text_features(**encoded).pooler_output
    # The processor's output as is, token_type_ids included (all zeros), as the README passes it.
    got = onnx_model.get_text_features(**encoded).pooler_output
    assert got.shape == expected.shape == (batch_size, 16)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_without_instance_decoder(tmp_path, real_batch):
    from eclip.training.export import EclipOnnxModel, export_onnx
    from modeling_eclip import EclipModel

    torch.manual_seed(0)
    model = EclipModel(tiny_config(use_instance_decoder=False)).eval()
    processor = tiny_processor()
    export_onnx(model, processor, tmp_path / "onnx")
    onnx_model = EclipOnnxModel.from_pretrained(tmp_path / "onnx")
    pixel_values = processor(images=real_batch[0][:2], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=pixel_values).pooler_output
    torch.testing.assert_close(onnx_model.get_image_features(pixel_values).pooler_output, expected, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="instance decoder"):
        onnx_model.get_instance_features(pixel_values)
    # The export leaves the model's own input checks on.
    with pytest.raises(ValueError, match="pixel_values"):
        model.get_image_features(pixel_values=torch.full((1, 3, 32, 32), float("nan")))


def test_folder_without_weights(tmp_path, capsys):
    from eclip.training.export import main

    folder = tmp_path / "no-weights"
    tiny_config().save_pretrained(folder)
    assert main([str(folder), str(tmp_path / "out")]) == 2
    err = one_line_error(capsys)
    assert "has no weights" in err and str(folder) in err
    assert not (tmp_path / "out").exists()

    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "no such folder" in one_line_error(capsys)


def test_refuses_non_empty_out_and_same_folder(exported, tmp_path, capsys):
    from eclip.training.export import main

    folder, _ = exported
    assert main([folder, folder]) == 2
    assert "OUT must differ from FOLDER" in one_line_error(capsys)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me\n")
    assert main([folder, str(tmp_path / "busy")]) == 2
    assert "--overwrite" in one_line_error(capsys)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me\n"


def test_unsupported_tower_is_one_line(exported, tmp_path, monkeypatch, capsys):
    from eclip.training.export import main

    def fails(*args, **kwargs):
        raise RuntimeError("Unsupported: ONNX export of operator foo\nlong traceback text")

    monkeypatch.setattr(torch.onnx, "export", fails)
    assert main([exported[0], str(tmp_path / "out")]) == 2
    err = one_line_error(capsys)
    assert "clip_vision_model vision tower cannot be exported to ONNX" in err
    assert not (tmp_path / "out").exists()


def test_onnx_input_checks(exported):
    import numpy as np

    _, onnx_model = _models(exported)
    good_pixels = torch.zeros(2, 3, 32, 32)
    bad_pixels = [
        (torch.zeros(3, 32, 32), "pixel_values must be a .batch, channels, height, width"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "pixel_values must be a floating-point"),
        (torch.zeros(0, 3, 32, 32), "pixel_values has batch size 0"),
        (torch.zeros(1, 3, 64, 64), "pixel_values has .channels, height, width"),
        (torch.full((1, 3, 32, 32), float("nan")), "pixel_values contains NaN"),
        ([[0.0]], "pixel_values must be a torch tensor or numpy array"),
        (None, "pixel_values is required"),
    ]
    for value, message in bad_pixels:
        with pytest.raises(ValueError, match=message):
            onnx_model.get_image_features(value)
        with pytest.raises(ValueError, match=message):
            onnx_model.get_instance_features(value)
    with pytest.raises(ValueError, match="does not take output_hidden_states"):
        onnx_model.get_image_features(good_pixels, output_hidden_states=True)
    assert onnx_model.get_image_features(good_pixels.numpy()).pooler_output.shape == (2, 16)

    ids = torch.tensor([[101, 2417, 102]])
    bad_text = [
        (dict(input_ids=ids[0]), "input_ids must be a .batch, sequence"),
        (dict(input_ids=ids.float()), "input_ids must hold integer token ids"),
        (dict(input_ids=ids[:0]), "input_ids has batch size 0"),
        (dict(input_ids=torch.ones(1, 129, dtype=torch.long)), "input_ids has sequence length 129, longer .* 128"),
        (dict(input_ids=torch.tensor([[101, 30522]])), "input_ids holds the token id 30522"),
        (dict(input_ids=ids, attention_mask=torch.ones(1, 4, dtype=torch.long)), "attention_mask shape"),
        (dict(input_ids=ids, attention_mask=torch.ones(1, 3)), "attention_mask must be an integer"),
        (dict(input_ids=ids, token_type_ids=torch.ones_like(ids)), "token_type_ids holds a non-zero segment id"),
        (dict(input_ids=ids, token_type_ids=torch.zeros(1, 2, dtype=torch.long)), "token_type_ids shape"),
        (dict(input_ids=ids, position_ids=torch.arange(3)[None]), "does not take position_ids"),
    ]
    for kwargs, message in bad_text:
        with pytest.raises(ValueError, match=message):
            onnx_model.get_text_features(**kwargs)
    # Without a mask every token attends, as in PyTorch; numpy and bool masks are accepted.
    no_mask = onnx_model.get_text_features(ids).pooler_output
    torch.testing.assert_close(no_mask, onnx_model.get_text_features(ids.numpy(), np.ones((1, 3), bool)).pooler_output)
    # The full position table is allowed.
    assert onnx_model.get_text_features(torch.ones(1, 128, dtype=torch.long)).pooler_output.shape == (1, 16)


def test_from_pretrained_needs_an_export(exported):
    from eclip.training.export import EclipOnnxModel

    with pytest.raises(ValueError, match="not an ECLIP ONNX export: it lacks vision_model.onnx"):
        EclipOnnxModel.from_pretrained(exported[0])


# --------------------------------------------------------------------------------------------------------- int8
INT8_MIN_COSINE = 0.98


@pytest.fixture(scope="module")
def exported_int8(exported, tmp_path_factory):
    """The tiny ECLIP of `exported`, exported with `--quantize int8` through the CLI."""
    from eclip.training.export import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("export-int8") / "eclip-onnx"
    assert main([exported[0], str(out), "--quantize", "int8"]) == 0
    torch.set_num_threads(threads)
    return str(out)


def _min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).min().item()


def test_int8_export_layout(exported_int8):
    from eclip.training.quantization import INT8_FILES

    names = set(os.listdir(exported_int8))
    assert {"vision_model.onnx", "text_model.onnx", *INT8_FILES.values(), "onnx_export.json"} <= names
    info = json.load(open(os.path.join(exported_int8, "onnx_export.json")))
    assert info["precisions"]["float32"] == {"vision_model": "vision_model.onnx", "text_model": "text_model.onnx"}
    int8 = info["precisions"]["int8"]
    assert {int8["vision_model"], int8["text_model"]} == {"vision_model_int8.onnx", "text_model_int8.onnx"}
    assert int8["quantization"]["weight_type"] == "QInt8" and int8["quantization"]["method"] == "dynamic"
    assert int8["quantization"]["op_types"] == ["MatMul", "Gather"]
    assert not [name for name in names if ".partial-" in name or ".old-" in name]


def test_int8_graphs_agree_with_float32(exported_int8, real_batch):
    """Same outputs, shapes and dtypes as the float32 graphs, and embeddings within a cosine of 0.98 on real data."""
    from eclip.training.export import EclipOnnxModel

    float32 = EclipOnnxModel.from_pretrained(exported_int8)
    int8 = EclipOnnxModel.from_pretrained(exported_int8, precision="int8")
    assert (float32.precision, int8.precision) == ("float32", "int8")
    assert int8.runtime_info()["graphs"] == {"vision_model": "vision_model_int8.onnx",
                                             "text_model": "text_model_int8.onnx"}
    processor = tiny_processor()
    images, titles = real_batch
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    expected, got = float32.get_instance_features(pixel_values), int8.get_instance_features(pixel_values)
    for name in ("image_embeds", "instance_embeds", "selection_logits"):
        reference, quantized = getattr(expected, name), getattr(got, name)
        assert quantized.shape == reference.shape and quantized.dtype == reference.dtype == torch.float32, name
    assert _min_cosine(got.image_embeds, expected.image_embeds) > INT8_MIN_COSINE
    assert _min_cosine(got.instance_embeds, expected.instance_embeds) > INT8_MIN_COSINE
    torch.testing.assert_close(got.selection_logits, expected.selection_logits, atol=0.05, rtol=0)
    torch.testing.assert_close(int8.get_image_features(pixel_values).pooler_output, got.image_embeds)
    encoded = processor(text=titles, return_tensors="pt", padding=True)
    reference, quantized = (model.get_text_features(**encoded).pooler_output for model in (float32, int8))
    assert quantized.shape == reference.shape == (3, 16) and quantized.dtype == torch.float32
    assert _min_cosine(quantized, reference) > INT8_MIN_COSINE
    # The int8 graphs keep the model's input checks.
    with pytest.raises(ValueError, match="pixel_values has .channels, height, width"):
        int8.get_image_features(torch.zeros(1, 3, 64, 64))


def test_int8_graphs_hold_int8_weights_and_are_smaller(exported_int8):
    """Every MatMul with a constant weight runs as MatMulInteger on int8 weights, no Gather reads a float table
    (the text tower's embeddings), and both files shrink: the text graph, mostly its embedding table, to under half."""
    import onnx

    for tower in ("vision_model", "text_model"):
        float_path, int8_path = (os.path.join(exported_int8, f"{tower}{suffix}.onnx") for suffix in ("", "_int8"))
        float_graph, int8_graph = onnx.load(float_path).graph, onnx.load(int8_path).graph
        constants = {init.name for init in float_graph.initializer}
        weighted = [node for node in float_graph.node if node.op_type == "MatMul" and node.input[1] in constants]
        assert weighted, tower
        int8_types = {init.name: init.data_type for init in int8_graph.initializer}
        integer = [node for node in int8_graph.node if node.op_type == "MatMulInteger"]
        assert len(integer) == len(weighted), tower
        assert all(int8_types.get(node.input[1]) == onnx.TensorProto.INT8 for node in integer), tower
        assert not [node.name for node in int8_graph.node
                    if node.op_type in ("MatMul", "Gather") and node.input[0 if node.op_type == "Gather" else 1]
                    in int8_types and int8_types[node.input[0 if node.op_type == "Gather" else 1]]
                    == onnx.TensorProto.FLOAT], tower
        ratio = os.path.getsize(int8_path) / os.path.getsize(float_path)
        assert ratio < (0.5 if tower == "text_model" else 0.95), (tower, ratio)


def test_int8_needs_a_quantized_export(exported):
    from eclip.training.export import EclipOnnxModel

    with pytest.raises(ValueError, match=r"has no int8 graphs: export with `eclip-export FOLDER OUT --quantize int8`"):
        EclipOnnxModel.from_pretrained(exported[1], precision="int8")
    with pytest.raises(ValueError, match="precision must be one of float32, int8, got 'fp16'"):
        EclipOnnxModel.from_pretrained(exported[1], precision="fp16")


def test_from_pretrained_keeps_its_positional_arguments(exported):
    """`from_pretrained(folder, providers, session_options)` works as before `precision` existed, which is
    keyword-only."""
    import onnxruntime

    from eclip.training.export import EclipOnnxModel

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    model = EclipOnnxModel.from_pretrained(exported[1], ["CPUExecutionProvider"], options)
    assert model.precision == "float32" and model.vision_session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(TypeError):
        EclipOnnxModel.from_pretrained(exported[1], ["CPUExecutionProvider"], options, "int8")


def test_quantize_onnx_adds_int8_to_an_export_atomically(exported, tmp_path, monkeypatch):
    """`quantize_onnx` on an existing export: a failure leaves the folder as it was; success adds the int8 graphs."""
    import shutil

    import onnxruntime.quantization

    from eclip.training.cli import UsageError
    from eclip.training.export import EclipOnnxModel
    from eclip.training.quantization import quantize_onnx

    out = tmp_path / "eclip-onnx"
    shutil.copytree(exported[1], out)
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    real = onnxruntime.quantization.quantize_dynamic

    def fails_on_text(source, target, **kwargs):
        if "text_model" in str(source):
            raise RuntimeError("unsupported op Foo\ndetails")
        return real(source, target, **kwargs)

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", fails_on_text)
    message = "the text_model graph cannot be quantized to int8: RuntimeError: unsupported op Foo$"
    with pytest.raises(UsageError, match=message):
        quantize_onnx(out)
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == ["eclip-onnx"]  # no staging folder left behind

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", real)
    info = quantize_onnx(out)
    assert info["precisions"]["int8"]["vision_model"] == "vision_model_int8.onnx"
    assert json.load(open(out / "onnx_export.json")) == info
    assert (out / "vision_model.onnx").read_bytes() == before["vision_model.onnx"]
    model = EclipOnnxModel.from_pretrained(out, precision="int8")
    assert model.get_text_features(torch.tensor([[101, 2417, 102]])).pooler_output.shape == (1, 16)
