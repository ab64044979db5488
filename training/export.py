# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
ONNX export of an ECLIP model and an onnxruntime inference path.

    python -m eclip.training.export FOLDER OUT

writes, in transformers.js' split-CLIP layout (one graph per tower, as `Xenova/clip-*` ships them):

- `OUT/vision_model.onnx`: `pixel_values (batch, channels, height, width)` -> `image_embeds (batch, projection_dim)`,
  the text-free image embedding `EclipModel.get_image_features` returns in `pooler_output` (selection-weighted
  instances, unit norm, with the instance decoder; the projected global embedding `g`, not normalised, without it),
  plus, with the instance decoder, `instance_embeds (batch, K, projection_dim)` and `selection_logits (batch, K)` as
  `get_instance_features` returns them;
- `OUT/text_model.onnx`: `input_ids, attention_mask (batch, sequence)` -> `text_embeds (batch, projection_dim)`, the
  projected (not normalised) text embedding `get_text_features` returns in `pooler_output`;
- the processor files and `config.json`, so that OUT is self-contained;
- with `--quantize int8`, `OUT/vision_model_int8.onnx` and `OUT/text_model_int8.onnx`: the same graphs with int8
  weights (dynamic quantization, `eclip.training.quantization`), about a quarter of the size.

`OUT/onnx_export.json` records the graphs' inputs and outputs and, under `precisions`, the files of each precision
(`float32`, and `int8` with its quantization settings).

The batch axis is dynamic in both graphs and the sequence axis in the text graph; the image size is the one the
vision tower was built for (fixed in the graph). Exported with torch's TorchScript exporter (`dynamo=False`): torch's
default (dynamo) exporter needs `onnxscript`, which ECLIP does not depend on.

[`EclipOnnxModel`] runs the two graphs of one precision with onnxruntime (CPU) and answers like `EclipModel`:
`get_image_features` / `get_text_features` return a `BaseModelOutputWithPooling` whose `pooler_output` is the
embedding, `get_instance_features` an `EclipInstanceOutput`. `EclipOnnxModel.from_pretrained(OUT, precision="int8")`
runs the int8 graphs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import warnings

VISION_FILE = "vision_model.onnx"
TEXT_FILE = "text_model.onnx"
EXPORT_INFO_FILE = "onnx_export.json"
DEFAULT_OPSET = 17
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
PROG = "eclip-export"
# What `EclipOnnxModel.from_pretrained(precision=...)` loads; `export_onnx(quantize=...)` writes the ones after float32.
PRECISIONS = ("float32", "int8")
QUANTIZE_CHOICES = PRECISIONS[1:]


def read_export_info(folder: str | os.PathLike, precision: str = "float32") -> tuple[dict, dict[str, str]]:
    """
    `folder/onnx_export.json` and the graph files of `precision` in it, `{"vision_model": ..., "text_model": ...}`,
    checked to exist. Reads JSON only (no onnxruntime, no torch), so a command can check an export before loading
    anything. Raises `ValueError` saying what is missing and how to write it.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    folder = os.fspath(folder)
    missing = [name for name in (VISION_FILE, TEXT_FILE, EXPORT_INFO_FILE)
               if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise ValueError(f"{folder} is not an ECLIP ONNX export: it lacks {', '.join(missing)} "
                         "(write one with `eclip-export FOLDER OUT`).")
    with open(os.path.join(folder, EXPORT_INFO_FILE)) as f:
        info = json.load(f)
    # An export written before int8 existed has no `precisions`: its float32 graphs are its only ones.
    precisions = info.get("precisions") or {"float32": {"vision_model": VISION_FILE, "text_model": TEXT_FILE}}
    if precision not in precisions:
        raise ValueError(f"{folder} has no {precision} graphs: export with `eclip-export FOLDER OUT --quantize "
                         f"{precision}`, or add them to this export with "
                         f"`eclip.training.quantization.quantize_onnx({folder!r})`.")
    files = {tower: precisions[precision][tower] for tower in ("vision_model", "text_model")}
    lost = [name for name in files.values() if not os.path.isfile(os.path.join(folder, name))]
    if lost:
        raise ValueError(f"{folder}'s onnx_export.json lists {precision} graphs it does not hold: "
                         f"{', '.join(lost)}; export it again.")
    return info, files


# ------------------------------------------------------------------------------------------------------ export
@contextlib.contextmanager
def _unchecked(model):
    """The model's input checks switched off while it is traced: they are data-dependent reductions (`isfinite`,
    token range) a trace would freeze into constants. [`EclipOnnxModel`] checks its inputs itself."""
    model._check_pixel_values = lambda *args, **kwargs: None
    model._check_input_ids = lambda *args, **kwargs: None
    try:
        yield model
    finally:
        del model._check_pixel_values, model._check_input_ids


def _wrappers(model):
    """`nn.Module`s that call `model.get_image_features` / `get_instance_features` / `get_text_features` and return
    plain tensors, for the tracer."""
    import torch
    from torch import nn

    class Vision(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor):
            if self.model.instance_decoder is None:
                return self.model.get_image_features(pixel_values=pixel_values).pooler_output
            out = self.model.get_instance_features(pixel_values=pixel_values)
            return out.image_embeds, out.instance_embeds, out.selection_logits

    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
            return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    return Vision().eval(), Text().eval()


def _image_size(processor, vision_config) -> tuple[int, int]:
    """The (height, width) the graph takes: that of the processor's output (a DINOv2 tower's config says 518 but
    its processor crops 224, and the tower interpolates its positions to what it gets), else the tower's
    `image_size`."""
    from eclip.training.cli import UsageError

    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None:
        from PIL import Image

        pixel_values = image_processor(images=Image.new("RGB", (64, 64)), return_tensors="pt")["pixel_values"]
        return tuple(int(side) for side in pixel_values.shape[-2:])
    image_size = getattr(vision_config, "image_size", None)
    if isinstance(image_size, (list, tuple)):
        return int(image_size[0]), int(image_size[1])
    if isinstance(image_size, int):
        return image_size, image_size
    raise UsageError(f"the {vision_config.model_type} vision tower has no image_size in its config and the processor "
                     "no image processor: unsupported tower for the ONNX export.")


def _check_folder(folder: str):
    from eclip.training.cli import UsageError, check_path

    folder = check_path(folder, "FOLDER")
    names = set(os.listdir(folder))
    if "config.json" not in names:
        raise UsageError(f"FOLDER {folder!r} has no config.json: it is not a saved ECLIP model.")
    if not names & set(WEIGHT_FILES):
        raise UsageError(
            f"FOLDER {folder!r} has no weights ({' or '.join(WEIGHT_FILES[:2])}): it is not a saved ECLIP model."
        )
    with open(os.path.join(folder, "config.json")) as f:
        model_type = json.load(f).get("model_type")
    if model_type != "eclip" and "adapter_config.json" not in names:
        raise UsageError(f"FOLDER {folder!r} holds a {model_type!r} model, not an ECLIP model.")
    return folder


def export_onnx(model, processor, out: str, opset: int = DEFAULT_OPSET, batch_size: int = 2,
                quantize: str | None = None) -> dict:
    """
    Export `model` (an [`EclipModel`], cast to float32 in place) and save `processor` and its config beside it in
    `out` (written atomically: a failed export leaves `out` as it was; an existing `out` is replaced). With
    `quantize="int8"` the int8 graphs are written too (`eclip.training.quantization`). Returns what is written to
    `OUT/onnx_export.json`. Raises `eclip.training.cli.UsageError` (a `ValueError`) naming the tower when a tower
    cannot be exported or quantized, or for an unknown `quantize`.
    """
    import torch

    from eclip.training.cli import UsageError
    from modeling_eclip import atomic_directory

    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise UsageError(f"quantize must be None or one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}.")
    config = model.config
    vision_config, text_config = config.vision_config, config.text_config
    model = model.float().eval()
    vision, text = _wrappers(model)

    channels = getattr(vision_config, "num_channels", 3)
    height, width = _image_size(processor, vision_config)
    max_positions = getattr(text_config, "max_position_embeddings", None)
    vocab_size = getattr(text_config, "vocab_size", None)
    if not isinstance(max_positions, int) or not isinstance(vocab_size, int):
        raise UsageError(f"the {text_config.model_type} text tower has no max_position_embeddings / vocab_size in its "
                         "config: unsupported tower for the ONNX export.")

    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch_size, channels, height, width, generator=generator)
    sequence = min(7, max_positions)
    input_ids = torch.randint(1, vocab_size, (batch_size, sequence), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, sequence // 2:] = 0  # a padded row, so the mask is a real input of the graph

    vision_outputs = ["image_embeds"]
    if model.instance_decoder is not None:
        vision_outputs += ["instance_embeds", "selection_logits"]
    info = {
        "format": "eclip-onnx",
        "opset": opset,
        "exporter": f"torch.onnx.export(dynamo=False), torch {torch.__version__}",
        "vision_model": {"file": VISION_FILE, "inputs": ["pixel_values"], "outputs": vision_outputs,
                         "image_size": [height, width], "num_channels": channels,
                         "model_type": vision_config.model_type},
        "text_model": {"file": TEXT_FILE, "inputs": ["input_ids", "attention_mask"], "outputs": ["text_embeds"],
                       "max_position_embeddings": max_positions, "vocab_size": vocab_size,
                       "model_type": text_config.model_type},
        "use_instance_decoder": model.instance_decoder is not None,
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "precisions": {"float32": {"vision_model": VISION_FILE, "text_model": TEXT_FILE}},
    }
    with atomic_directory(out, keep_existing=False) as staging, warnings.catch_warnings(), _unchecked(model):
        # The TorchScript exporter warns that it is legacy, and the tracer about Python-side shape arithmetic.
        warnings.simplefilter("ignore")
        for tower, module, args, names, axes in (
            ("vision", vision, (pixel_values,), (["pixel_values"], vision_outputs),
             {"pixel_values": {0: "batch_size"}, **{name: {0: "batch_size"} for name in vision_outputs}}),
            ("text", text, (input_ids, attention_mask), (["input_ids", "attention_mask"], ["text_embeds"]),
             {"input_ids": {0: "batch_size", 1: "sequence_length"},
              "attention_mask": {0: "batch_size", 1: "sequence_length"}, "text_embeds": {0: "batch_size"}}),
        ):
            tower_type = getattr(config, f"{tower}_config").model_type
            path = os.path.join(staging, VISION_FILE if tower == "vision" else TEXT_FILE)
            try:
                with torch.no_grad():
                    torch.onnx.export(
                        module, args, path, input_names=names[0], output_names=names[1], dynamic_axes=axes,
                        opset_version=opset, dynamo=False, do_constant_folding=True,
                    )
            except Exception as error:  # noqa: BLE001 - any tracer/exporter failure is "this tower does not export"
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise UsageError(
                    f"the {tower_type} {tower} tower cannot be exported to ONNX (unsupported tower): "
                    f"{type(error).__name__}: {first}"
                ) from error
        if quantize is not None:
            from eclip.training.quantization import quantize_graphs

            info["precisions"][quantize] = quantize_graphs(staging, staging, info["precisions"]["float32"])
        processor.save_pretrained(staging)
        config.save_pretrained(staging)
        with open(os.path.join(staging, EXPORT_INFO_FILE), "w") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
    return info


def main(argv=None) -> int:
    """`python -m eclip.training.export FOLDER OUT`: export a saved ECLIP model to ONNX; one-line errors."""
    from eclip.training.cli import ArgumentParser, UsageError, fail

    parser = ArgumentParser(
        prog=PROG,
        description="Export a saved ECLIP model to ONNX: OUT/vision_model.onnx (pixel_values -> image_embeds[, "
        "instance_embeds, selection_logits]) and OUT/text_model.onnx (input_ids, attention_mask -> text_embeds), "
        "with the processor and config.json beside them. Load OUT with eclip.training.export.EclipOnnxModel.",
    )
    parser.add_argument("folder", metavar="FOLDER", help="a saved ECLIP model (save_pretrained folder)")
    parser.add_argument("out", metavar="OUT", help="the folder to write the ONNX export to")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it already holds other files")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None,
                        help="also write int8 graphs (OUT/vision_model_int8.onnx, OUT/text_model_int8.onnx: "
                        "dynamic quantization of the weights; load with EclipOnnxModel.from_pretrained(OUT, "
                        "precision='int8'))")
    args = parser.parse_args(argv)
    try:
        folder = _check_folder(args.folder)
        out = os.path.abspath(os.path.expanduser(args.out))
        if os.path.abspath(folder) == out:
            raise UsageError("OUT must differ from FOLDER: the export would replace the model's weights.")
        if os.path.isfile(out):
            raise UsageError(f"OUT {args.out!r} is a file, not a folder.")
        if os.path.isdir(out) and os.listdir(out) and not args.overwrite:
            if not os.path.isfile(os.path.join(out, EXPORT_INFO_FILE)) or set(os.listdir(out)) & set(WEIGHT_FILES):
                raise UsageError(f"OUT {args.out!r} is not empty: pass --overwrite to replace it.")
        if args.opset < 14:
            raise UsageError(f"--opset {args.opset}: ECLIP's attention needs opset 14 or newer.")
        if args.quantize and importlib.util.find_spec("onnxruntime") is None:
            raise UsageError(f"--quantize {args.quantize} needs onnxruntime's quantizer: pip install \"eclip[onnx]\".")

        from eclip.training.progress import disable_progress_bars_off_terminal

        disable_progress_bars_off_terminal()  # a log file gets plain lines, no carriage-return redraws
        from transformers import AutoProcessor

        from modeling_eclip import EclipModel

        try:
            model = EclipModel.from_pretrained(folder)
            processor = AutoProcessor.from_pretrained(folder)
        except (OSError, ValueError, KeyError) as error:
            raise UsageError(f"cannot load FOLDER {args.folder!r}: {error}") from error
        info = export_onnx(model, processor, out, opset=args.opset, quantize=args.quantize)
    except UsageError as error:
        return fail(PROG, error)
    graphs = [name for files in info["precisions"].values() for name in (files["vision_model"], files["text_model"])]
    print(f"{PROG}: wrote {', '.join(graphs)} (opset {info['opset']}) and the processor to {out}")
    return 0


# ------------------------------------------------------------------------------------------------- inference
def _no_extra_inputs(method: str, kwargs: dict):
    """The PyTorch model's other arguments (`position_ids`, `output_hidden_states`, `image_hidden_states`...) have
    no counterpart in the graphs: refuse them by name rather than ignore them. `None` / `False` / `return_dict=True`
    change nothing and are accepted."""
    unsupported = sorted(name for name, value in kwargs.items()
                         if value is not None and value is not False and not (name == "return_dict" and value))
    if unsupported:
        raise ValueError(f"EclipOnnxModel.{method} does not take {', '.join(unsupported)}: the ONNX export computes "
                         "the embeddings only.")


class EclipOnnxModel:
    """
    The two graphs of one precision of an ECLIP ONNX export (see [`export_onnx`]), run with onnxruntime, with
    `EclipModel`'s feature API. Inputs are checked here (rank, dtype, batch, sequence length, token range, channels
    and image size) and a mistake is a `ValueError` naming the input, not an onnxruntime error.

    ```python
    >>> model = EclipOnnxModel.from_pretrained("eclip-onnx")  # precision="int8" for the quantized graphs
    >>> processor = AutoProcessor.from_pretrained("eclip-onnx")
    >>> image_embeds = model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output
    ```

    Beside the feature methods it answers what `eclip-evaluate` asks of a model: `config`, `name_or_path`, `device`
    and `dtype` (where and in what its inputs go and its outputs come back: CPU float32 tensors), `num_parameters()`.
    It computes no hidden states or attention maps (`can_output_attentions` is `False`).
    """

    can_output_attentions = False

    def __init__(self, vision_session, text_session, info: dict, config=None, precision: str = "float32",
                 name_or_path: str | None = None, files: dict[str, str] | None = None):
        self.vision_session = vision_session
        self.text_session = text_session
        self.info = info
        self.config = config
        self.precision = precision
        self.name_or_path = name_or_path
        self.files = dict(files or {})  # {"vision_model": file name, "text_model": file name}
        self._vision_outputs = [output.name for output in vision_session.get_outputs()]
        self._text_input_names = [i.name for i in text_session.get_inputs()]

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, providers=None, session_options=None, *,
                        precision: str = "float32") -> "EclipOnnxModel":
        """
        Load the export in `folder`: its `float32` graphs, or with `precision="int8"` the int8 graphs that
        `eclip-export --quantize int8` writes. `providers` / `session_options` go to each `onnxruntime.InferenceSession`
        (default: the CPU provider). Raises `ValueError` when `folder` is not an export or lacks that precision.
        `precision` is keyword-only, so that `from_pretrained(folder, providers, session_options)` keeps its meaning.
        """
        import onnxruntime as ort

        folder = os.fspath(folder)
        info, files = read_export_info(folder, precision)
        config = None
        if os.path.isfile(os.path.join(folder, "config.json")):
            from modeling_eclip import EclipConfig

            config = EclipConfig.from_pretrained(folder)
        providers = providers or ["CPUExecutionProvider"]
        sessions = [ort.InferenceSession(os.path.join(folder, files[tower]), sess_options=session_options,
                                         providers=providers) for tower in ("vision_model", "text_model")]
        return cls(*sessions, info=info, config=config, precision=precision, name_or_path=folder, files=files)

    # --------------------------------------------------------------------------------- what a caller may ask
    @property
    def device(self):
        """`cpu`: onnxruntime takes and returns host arrays, so inputs may live anywhere and outputs are CPU tensors."""
        import torch

        return torch.device("cpu")

    @property
    def dtype(self):
        """`torch.float32`: the dtype the graphs take `pixel_values` in and return embeddings in (int8 graphs too,
        whose weights only are quantized)."""
        import torch

        return torch.float32

    @property
    def use_instance_decoder(self) -> bool:
        """Whether the vision graph computes the instance decoder's outputs (`get_instance_features`)."""
        return bool(self.info.get("use_instance_decoder"))

    def num_parameters(self) -> int | None:
        """The exported PyTorch model's parameter count (`None` for an export that did not record it)."""
        return self.info.get("num_parameters")

    def runtime_info(self) -> dict:
        """How this model runs: backend, precision, graph files and onnxruntime providers (for a results file)."""
        import onnxruntime

        precisions = self.info.get("precisions") or {}
        return {
            "backend": "onnxruntime",
            "onnxruntime": onnxruntime.__version__,
            "precision": self.precision,
            "graphs": dict(self.files),
            "providers": self.vision_session.get_providers(),
            "quantization": (precisions.get(self.precision) or {}).get("quantization"),
        }

    # ------------------------------------------------------------------------------------------- input checks
    @staticmethod
    def _as_array(value, name: str, rank: int, dims: str):
        import numpy as np
        import torch

        if value is None:
            raise ValueError(f"{name} is required.")
        if torch.is_tensor(value):
            value = value.detach().cpu().numpy()
        elif not isinstance(value, np.ndarray):
            raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(value).__name__}.")
        if value.ndim != rank:
            raise ValueError(f"{name} must be a {dims} tensor, got shape {tuple(value.shape)}.")
        if value.shape[0] == 0:
            raise ValueError(f"{name} has batch size 0: pass at least one {'image' if rank == 4 else 'text'}.")
        return value

    def _pixel_values(self, pixel_values):
        import numpy as np

        array = self._as_array(pixel_values, "pixel_values", 4, "(batch, channels, height, width)")
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"pixel_values must be a floating-point tensor, got {array.dtype}.")
        vision = self.info["vision_model"]
        expected = (vision["num_channels"], *vision["image_size"])
        if tuple(array.shape[1:]) != tuple(expected):
            raise ValueError(
                f"pixel_values has (channels, height, width) {tuple(array.shape[1:])}; the exported vision tower "
                f"takes {tuple(expected)}: preprocess with the export's processor."
            )
        if not np.isfinite(array).all():
            raise ValueError("pixel_values contains NaN or infinite values.")
        return np.ascontiguousarray(array, dtype=np.float32)

    def _text_inputs(self, input_ids, attention_mask):
        import numpy as np

        ids = self._as_array(input_ids, "input_ids", 2, "(batch, sequence)")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"input_ids must hold integer token ids, got a {ids.dtype} tensor.")
        text = self.info["text_model"]
        if ids.shape[1] == 0:
            raise ValueError("input_ids has sequence length 0.")
        if ids.shape[1] > text["max_position_embeddings"]:
            raise ValueError(
                f"input_ids has sequence length {ids.shape[1]}, longer than the text tower's "
                f"{text['max_position_embeddings']} positions: tokenize with truncation=True."
            )
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= text["vocab_size"]:
            raise ValueError(f"input_ids holds the token id {low if low < 0 else high}, outside the text tower's "
                             f"vocabulary [0, {text['vocab_size']}): tokenize with this export's processor.")
        if attention_mask is None:
            mask = np.ones_like(ids, dtype=np.int64)
        else:
            mask = self._as_array(attention_mask, "attention_mask", 2, "(batch, sequence)")
            if mask.shape != ids.shape:
                raise ValueError(f"attention_mask shape {tuple(mask.shape)} differs from input_ids shape "
                                 f"{tuple(ids.shape)}.")
            if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
                raise ValueError(f"attention_mask must be an integer or boolean tensor, got {mask.dtype}.")
        return np.ascontiguousarray(ids, dtype=np.int64), np.ascontiguousarray(mask, dtype=np.int64)

    # ------------------------------------------------------------------------------------------- public API
    def _run_vision(self, pixel_values) -> dict:
        import torch

        arrays = self.vision_session.run(None, {"pixel_values": self._pixel_values(pixel_values)})
        return {name: torch.from_numpy(array) for name, array in zip(self._vision_outputs, arrays)}

    def get_image_features(self, pixel_values=None, **kwargs):
        """`BaseModelOutputWithPooling` whose `pooler_output` is the text-free image embedding `(batch_size,
        projection_dim)`, as `EclipModel.get_image_features` returns it (no tower hidden states)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        _no_extra_inputs("get_image_features", kwargs)
        return BaseModelOutputWithPooling(pooler_output=self._run_vision(pixel_values)["image_embeds"])

    def get_instance_features(self, pixel_values=None, **kwargs):
        """`EclipInstanceOutput` with `instance_embeds`, `image_embeds` and `selection_logits`, as
        `EclipModel.get_instance_features` returns them (no decoder states or attention maps)."""
        from modeling_eclip import EclipInstanceOutput

        if not self.info.get("use_instance_decoder"):
            raise ValueError("get_instance_features needs the instance decoder (config.use_instance_decoder=False).")
        _no_extra_inputs("get_instance_features", kwargs)
        outputs = self._run_vision(pixel_values)
        return EclipInstanceOutput(instance_embeds=outputs["instance_embeds"], image_embeds=outputs["image_embeds"],
                                   selection_logits=outputs["selection_logits"])

    def get_text_features(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        """`BaseModelOutputWithPooling` whose `pooler_output` is the projected (not normalised) text embedding
        `(batch_size, projection_dim)`, as `EclipModel.get_text_features` returns it. Takes the processor's output
        as is (`**processor(text=...)`): its `token_type_ids` must be all zeros (single-segment texts), which is
        what the text tower assumes without them."""
        import numpy as np
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        _no_extra_inputs("get_text_features", kwargs)
        ids, mask = self._text_inputs(input_ids, attention_mask)
        if token_type_ids is not None:
            types = self._as_array(token_type_ids, "token_type_ids", 2, "(batch, sequence)")
            if types.shape != ids.shape:
                raise ValueError(f"token_type_ids shape {tuple(types.shape)} differs from input_ids shape "
                                 f"{tuple(ids.shape)}.")
            if np.any(types != 0):
                raise ValueError("token_type_ids holds a non-zero segment id: the ONNX text graph embeds "
                                 "single-segment texts only (token_type_ids all zeros).")
        feeds = {"input_ids": ids, "attention_mask": mask}
        (embeds,) = self.text_session.run(None, {name: feeds[name] for name in self._text_input_names})
        return BaseModelOutputWithPooling(pooler_output=torch.from_numpy(embeds))


__all__ = ["PRECISIONS", "EclipOnnxModel", "export_onnx", "main", "read_export_info"]

if __name__ == "__main__":
    sys.exit(main())
