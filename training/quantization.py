# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
Dynamic int8 quantization of an ECLIP ONNX export (`eclip-export FOLDER OUT --quantize int8`, or
[`quantize_onnx`] on an export already written).

Each float32 graph gets an int8 twin beside it, `vision_model_int8.onnx` and `text_model_int8.onnx`, made with
onnxruntime's `quantize_dynamic`: the weights of every `MatMul` (the towers' and the decoder's linear layers, the
projections) and every `Gather` on a constant table (the text tower's token and position embeddings) are stored as
int8; activations stay float32 between ops and are quantized to uint8 per call inside each quantized `MatMul`, so
no calibration data is needed. `Conv` (the patch embedding) stays float32: onnxruntime's CPU provider has no
`ConvInteger` kernel for int8 weights (microsoft/onnxruntime#3130, #15888), so a quantized one would not load.

The settings are recorded under `precisions.int8.quantization` in `onnx_export.json`, and
`EclipOnnxModel.from_pretrained(OUT, precision="int8")` loads the int8 graphs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

INT8 = "int8"
INT8_FILES = {"vision_model": "vision_model_int8.onnx", "text_model": "text_model_int8.onnx"}
INT8_OP_TYPES = ("MatMul", "Gather")
# Per-channel scales keep a weight column with large values from flattening the others (the MiniLM text tower's
# outlier features). `reduce_range` stores 7-bit weights: on a CPU without VNNI, onnxruntime's uint8 x int8 kernels add
# pairs of products in int16, which full-range per-channel weights saturate (see `quantize_dynamic`'s docstring).
# Measured on the fashion recipe's pretrained towers (DINOv2-S at 168 px + MiniLM-L6, MatMul and Gather quantized) on
# an AVX2 CPU without VNNI, the minimum cosine to the float32 embedding over 8 real photos / their titles: per-tensor
# 0.996 / 0.961, per-channel 0.987 / 0.990, per-channel + reduce_range 0.994 / 0.990.
PER_CHANNEL = True
REDUCE_RANGE = True


class _DropPreprocessHint(logging.Filter):
    """`quantize_dynamic` advises `quant_pre_process` on every graph through the root logger. Its symbolic shape
    inference fails on the text graph (`Min(128, sequence_length)`), and skipping that part changed neither the
    quantized weights' accuracy nor which ops are quantized, so the export does without it and the hint is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "consider to run pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _without_preprocess_hint():
    root = logging.getLogger()
    hint = _DropPreprocessHint()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def quantization_info() -> dict:
    """What `onnx_export.json` records of the int8 graphs' quantization."""
    import onnxruntime

    return {
        "method": "dynamic",
        "tool": f"onnxruntime.quantization.quantize_dynamic, onnxruntime {onnxruntime.__version__}",
        "weight_type": "QInt8",
        "activation_type": "QUInt8, quantized per call at run time",
        "op_types": list(INT8_OP_TYPES),
        "per_channel": PER_CHANNEL,
        "reduce_range": REDUCE_RANGE,
        "float32_ops": "every other op: Conv (no int8-weight ConvInteger kernel in onnxruntime's CPU provider), "
                       "normalisation, softmax, activations",
    }


def quantize_graph(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """The int8 graph of the float32 ONNX graph `source` (any model's), written to `target` with the settings of
    ECLIP's int8 export (`quantization_info()`). onnxruntime's errors pass through."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _without_preprocess_hint():
        quantize_dynamic(os.fspath(source), os.fspath(target), op_types_to_quantize=list(INT8_OP_TYPES),
                         per_channel=PER_CHANNEL, reduce_range=REDUCE_RANGE, weight_type=QuantType.QInt8)


def quantize_graphs(source_dir: str, target_dir: str, float_files: dict[str, str]) -> dict:
    """
    Write the int8 twin of each float32 graph `source_dir/float_files[tower]` to `target_dir/INT8_FILES[tower]`
    (`tower` in `vision_model`, `text_model`). Returns the `precisions.int8` entry of `onnx_export.json`. Raises
    `eclip.training.cli.UsageError` (a `ValueError`) naming the graph that cannot be quantized.
    """
    from eclip.training.cli import UsageError

    for tower, name in INT8_FILES.items():
        try:
            quantize_graph(os.path.join(source_dir, float_files[tower]), os.path.join(target_dir, name))
        except Exception as error:  # noqa: BLE001 - any quantizer failure is "this graph does not quantize"
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UsageError(
                f"the {tower} graph cannot be quantized to int8: {type(error).__name__}: {first}"
            ) from error
    return {**INT8_FILES, "quantization": quantization_info()}


def quantize_onnx(out: str | os.PathLike) -> dict:
    """
    Add the int8 graphs to the ECLIP ONNX export `out` (written by `export_onnx` / `eclip-export`), replacing any
    already there, and record them in `out/onnx_export.json`. Written atomically: a failure leaves `out` as it was.
    Returns the updated export info. Raises `ValueError` when `out` is not an export, `UsageError` (a `ValueError`)
    when a graph cannot be quantized.
    """
    from eclip.training.export import EXPORT_INFO_FILE, read_export_info
    from modeling_eclip import atomic_directory

    out = os.fspath(out)
    info, float_files = read_export_info(out, "float32")
    with atomic_directory(out, keep_existing=True) as staging:  # the float graphs and processor are carried over
        info.setdefault("precisions", {"float32": dict(float_files)})
        info["precisions"][INT8] = quantize_graphs(out, staging, float_files)
        with open(os.path.join(staging, EXPORT_INFO_FILE), "w") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
    return info


__all__ = ["INT8_FILES", "INT8_OP_TYPES", "quantization_info", "quantize_graph", "quantize_graphs", "quantize_onnx"]
