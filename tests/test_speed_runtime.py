"""
The runtime section of `python -m benchmarks.speed` (PyTorch eager, onnxruntime float32 and int8, for ECLIP and
CLIPModel), run as a user runs it in its `--smoke` form (toy towers, 2 repeats): its JSON must hold every runtime x
model x batch with a positive throughput, ratios that are the quotients of those throughputs, and the inputs of the
FLOP/s and memory figures.
"""

import json
import math
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

MODELS = ("eclip", "clip")
RUNTIMES = ("eager", "onnx_fp32", "onnx_int8")
REQUIRED_RATIOS = ("eclip.onnx_int8/eclip.eager", "eclip.onnx_int8/clip.onnx_int8", "eclip.onnx_fp32/eclip.eager",
                   "eclip.onnx_fp32/clip.onnx_fp32")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The report of one smoke run (one thread: tiny models on two threads mostly measure OpenMP's spin-waits)."""
    output = tmp_path_factory.mktemp("speed") / "speed_runtime.json"
    command = [sys.executable, "-m", "benchmarks.speed", "--smoke", "--threads", "1", "--output", str(output)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(output, encoding="utf-8") as handle:
        report = json.load(handle)
    assert set(report) >= {"command", "runtime"} and "inference" not in report  # --smoke: the runtime section alone
    return report["runtime"]


def _throughput(runtime_report, modality, batch, pair):
    model, runtime = pair.split(".")
    return runtime_report["throughput"][modality][f"batch{batch}"][model][runtime]


@pytest.mark.slow
def test_every_runtime_model_and_batch_has_a_positive_throughput(smoke):
    assert smoke["smoke"] is True and smoke["towers"]["weights"].startswith("random init")
    assert smoke["batches"] == [1, 64] and smoke["repeats"] == 2 and smoke["text_length"] == 32
    assert smoke["throughput_unit"] == {"image": "images/s", "text": "texts/s"}
    for modality in ("image", "text"):
        assert set(smoke["throughput"][modality]) == {"batch1", "batch64"}
        for batch in (1, 64):
            table = smoke["throughput"][modality][f"batch{batch}"]
            assert set(table) == set(MODELS)
            for model in MODELS:
                assert set(table[model]) == set(RUNTIMES)
                for runtime in RUNTIMES:
                    value = table[model][runtime]
                    assert math.isfinite(value) and value > 0, (modality, batch, model, runtime)


@pytest.mark.slow
def test_ratios_are_the_quotients_of_the_throughputs(smoke):
    for modality in ("image", "text"):
        for batch in (1, 64):
            ratios = smoke["ratios"][modality][f"batch{batch}"]
            assert set(REQUIRED_RATIOS) <= set(ratios)
            for name, value in ratios.items():
                numerator, denominator = name.split("/")
                expected = (_throughput(smoke, modality, batch, numerator)
                            / _throughput(smoke, modality, batch, denominator))
                assert value == pytest.approx(expected, rel=1e-12), (modality, batch, name)


@pytest.mark.slow
def test_achieved_flops_follow_from_the_counted_flops_and_the_stated_peak(smoke):
    peak = smoke["cpu_peak"]
    assert peak["flops_per_cycle_per_core"] == peak["fp32_simd_lanes"] * 2 * peak["fma_units_per_core"]
    assert peak["peak_flop_per_s"] == pytest.approx(
        peak["cores"] * peak["clock_mhz"] * 1e6 * peak["flops_per_cycle_per_core"])
    assert peak["cores"] == 1 and "formula" in peak and peak["clock_source"]
    flops = smoke["flops_per_sample"]
    for modality in ("image", "text"):
        for batch in (1, 64):
            for model in MODELS:
                assert flops[modality][model] > 0
                for runtime in RUNTIMES:
                    achieved = smoke["achieved"][modality][f"batch{batch}"][model][runtime]
                    rate = flops[modality][model] * smoke["throughput"][modality][f"batch{batch}"][model][runtime]
                    assert achieved["flop_per_s"] == pytest.approx(rate, rel=1e-12)
                    assert achieved["fraction_of_fp32_peak"] == pytest.approx(rate / peak["peak_flop_per_s"])


@pytest.mark.slow
def test_memory_threads_and_quantization_are_recorded(smoke):
    assert smoke["threads"] == {"torch.set_num_threads": 1, "ort.intra_op_num_threads": 1,
                                "ort.inter_op_num_threads": 1}
    quantization = smoke["quantization"]  # the exporter's settings (or the benchmark's fallback), and which
    assert quantization["weight_type"] == "QInt8" and "MatMul" in quantization["op_types"] and quantization["source"]
    assert "memory_method" in smoke
    for model in MODELS:
        for runtime in RUNTIMES:
            memory = smoke["memory"][model][runtime]
            assert memory["peak_rss_mb"] >= memory["rss_after_load_mb"] >= memory["rss_after_imports_mb"] > 0
            assert memory["growth_mb"] == pytest.approx(memory["peak_rss_mb"] - memory["rss_after_imports_mb"])
        # int8 weights are a quarter of float32's: the quantized vision graph is the smaller file
        sizes = smoke["graph_size_mb"][model]
        assert sizes["onnx_int8"]["vision_model.onnx"] < sizes["onnx_fp32"]["vision_model.onnx"]
