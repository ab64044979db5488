"""`eclip-evaluate --onnx`: the benchmarks run through an ONNX export (`EclipOnnxModel`, onnxruntime) give the PyTorch
model's figures (float32) on a small slice of the real data, run the int8 graphs, and refuse what an export cannot do
in one line, before torch loads."""

import json
import os

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from eclip.training.evaluation import main  # noqa: E402
from eclip.training.evaluation.report import flatten_metrics  # noqa: E402
from test_evaluation import folders  # noqa: E402, F401  (the tiny ECLIP and CLIP folders, saved once per module)

LIMIT = 24
TASKS = "zero_shot,retrieval"
FLOAT32_ATOL = 1e-3

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def onnx_folder(folders, tmp_path_factory):  # noqa: F811
    """The tiny ECLIP of `folders` exported with its int8 graphs."""
    from eclip.training.export import main as export

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("onnx") / "eclip-onnx"
    assert export([folders["eclip"], str(out), "--quantize", "int8"]) == 0
    torch.set_num_threads(threads)
    return str(out)


def evaluate(model, output, data_dir, *extra) -> dict:
    argv = ["--model", model, "--data", data_dir, "--tasks", TASKS, "--limit", str(LIMIT), "--output", str(output),
            "--no-progress", "--num-threads", "1", "--device", "cpu", *extra]
    assert main(argv) == 0, argv
    with open(os.path.join(output, "results.json")) as f:
        return json.load(f)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("eclip-evaluate: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def test_onnx_float32_figures_are_the_pytorch_models(folders, onnx_folder, data_dir, tmp_path, capsys):  # noqa: F811
    pytorch = evaluate(folders["eclip"], tmp_path / "pytorch", data_dir)
    onnx = evaluate(onnx_folder, tmp_path / "onnx", data_dir, "--onnx")
    assert "on " + onnx_folder + " (ONNX export, float32 graphs, onnxruntime)" in capsys.readouterr().out
    assert onnx["tasks_run"] == pytorch["tasks_run"] == ["zero_shot", "retrieval"]
    expected, got = flatten_metrics(pytorch["tasks"]), flatten_metrics(onnx["tasks"])
    assert set(got) == set(expected) and "zero_shot/accuracy" in got and "retrieval/text_to_image/recall@1" in got
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=FLOAT32_ATOL), name
    # The same rows and predictions, not only the same averages.
    details = [results["tasks"]["zero_shot"]["details"] for results in (onnx, pytorch)]
    assert details[0]["most_predicted"] == details[1]["most_predicted"]
    assert onnx["embedded"] == pytorch["embedded"] and onnx["data"] == pytorch["data"]
    # results.json says what ran: the model's config as the PyTorch run reports it, plus the runtime.
    runtime = onnx["config"].pop("runtime")
    assert onnx["config"] == pytorch["config"]
    assert runtime["backend"] == "onnxruntime" and runtime["precision"] == "float32"
    assert runtime["graphs"] == {"vision_model": "vision_model.onnx", "text_model": "text_model.onnx"}
    assert "runtime" not in pytorch["config"]


def test_onnx_int8_runs_the_quantized_graphs(onnx_folder, data_dir, tmp_path):
    results = evaluate(onnx_folder, tmp_path / "int8", data_dir, "--onnx", "--onnx-precision", "int8")
    runtime = results["config"]["runtime"]
    assert runtime["precision"] == "int8" and runtime["quantization"]["weight_type"] == "QInt8"
    assert runtime["graphs"] == {"vision_model": "vision_model_int8.onnx", "text_model": "text_model_int8.onnx"}
    metrics = flatten_metrics(results["tasks"])
    assert "zero_shot/accuracy" in metrics
    assert all(0.0 <= value <= 1.0 for value in metrics.values() if value is not None)


def test_onnx_mistakes_are_one_line_before_torch_loads(folders, onnx_folder, data_dir, tmp_path, capsys):  # noqa: F811
    from eclip.training.export import main as export

    float_only = tmp_path / "float-only"
    assert export([folders["eclip"], str(float_only)]) == 0
    capsys.readouterr()
    out = tmp_path / "eval"
    cases = [
        (["--model", folders["eclip"], "--onnx"], "is not an ECLIP ONNX export: it lacks vision_model.onnx"),
        (["--model", onnx_folder, "--onnx-precision", "int8"], "--onnx-precision int8 needs --onnx"),
        (["--model", str(float_only), "--onnx", "--onnx-precision", "int8"],
         "has no int8 graphs: export with `eclip-export FOLDER OUT --quantize int8`"),
        (["--model", onnx_folder, "--onnx", "--tasks", "zero_shot,instance_retrieval"],
         "--onnx: instance_retrieval reads the instance decoder's cross-attention maps, which the ONNX export does "
         "not compute; pass --tasks zero_shot,"),
        (["--model", onnx_folder, "--onnx", "--update-card"], "--onnx evaluates an export, which has no model card"),
        (["--model", onnx_folder + "x", "--onnx"], "no such folder (did you mean"),
        (["--model", "org/eclip-onnx", "--onnx"], "must be a local ONNX export folder"),
    ]
    for argv, message in cases:
        assert main([*argv, "--data", data_dir, "--output", str(out)]) == 2, argv
        line = one_line_error(capsys)
        assert message in line, (argv, line)
    assert not out.exists()


def test_onnx_with_all_tasks_leaves_out_the_attention_tasks_in_one_line(onnx_folder, data_dir, tmp_path, caplog):
    """`--tasks all` (the default) means every task the export can run: instance_retrieval goes, with one log line;
    named outright it is refused (`test_onnx_mistakes_are_one_line_before_torch_loads`)."""
    from eclip.training.evaluation.cli import build_parser, check_args
    from eclip.training.evaluation.task_names import ATTENTION_TASKS, TASKS, parse_tasks

    for tasks in ([], ["--tasks", "all"], ["--tasks", "all,zero_shot"]):
        args = build_parser().parse_args(["--model", onnx_folder, "--onnx", "--data", data_dir,
                                          "--output", str(tmp_path / "eval"), *tasks])
        caplog.clear()
        with caplog.at_level("WARNING", logger="eclip-evaluate"):
            check_args(args)
        assert parse_tasks(args.tasks) == [task for task in TASKS if task not in ATTENTION_TASKS], tasks
        lines = [record.getMessage() for record in caplog.records]
        assert len(lines) == 1 and lines[0].startswith("--onnx: leaving out instance_retrieval"), lines


def test_runner_refuses_attention_tasks_of_an_export(onnx_folder, data_dir, tmp_path):
    """The Python API says the same as the command, before anything is embedded or written."""
    from transformers import AutoProcessor

    from eclip.training.evaluation.runner import evaluate_model
    from eclip.training.export import EclipOnnxModel

    model = EclipOnnxModel.from_pretrained(onnx_folder)
    processor = AutoProcessor.from_pretrained(onnx_folder)
    with pytest.raises(ValueError, match=r"the model \(EclipOnnxModel\) computes no attention maps, and "
                                         r"instance_retrieval reads the instance decoder's cross-attention"):
        evaluate_model(model, processor, data_dir, "zero_shot,instance_retrieval", str(tmp_path / "eval"),
                       limit=LIMIT, show_progress=False)
    assert not (tmp_path / "eval").exists()


def test_the_accuracy_study_reports_each_runtime_against_pytorch(folders, data_dir, tmp_path):  # noqa: F811
    from benchmarks.onnx_accuracy import RUNTIMES, main as study

    output = tmp_path / "onnx_accuracy.json"
    assert study(["--model", folders["eclip"], "--data", data_dir, "--limit", str(LIMIT), "--batch-size", "16",
                  "--work-dir", str(tmp_path / "work"), "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert set(report["metrics"]) == set(RUNTIMES)
    assert os.path.isfile(tmp_path / "work" / "export" / "vision_model_int8.onnx")
    for runtime in RUNTIMES[1:]:
        for name, value in report["metrics"][runtime].items():
            assert report["difference_to_pytorch"][runtime][name] == pytest.approx(
                value - report["metrics"]["pytorch"][name])
    assert all(abs(d) <= FLOAT32_ATOL for d in report["difference_to_pytorch"]["onnx_float32"].values())

    # --reuse keeps the export and evaluations made with the same settings...
    work = tmp_path / "work"
    recorded = json.loads((work / "pytorch.settings.json").read_text())
    assert recorded["limit"] == LIMIT and recorded["tasks"] == "zero_shot,retrieval"
    assert recorded["model"]["model_sha256"] and recorded["data"] == os.path.abspath(data_dir)
    stamp = os.path.getmtime(work / "pytorch" / "results.json")
    again = tmp_path / "again.json"
    argv = ["--model", folders["eclip"], "--data", data_dir, "--limit", str(LIMIT), "--batch-size", "16",
            "--work-dir", str(work), "--reuse"]
    assert study([*argv, "--output", str(again)]) == 0
    assert json.loads(again.read_text())["metrics"] == report["metrics"]
    assert os.path.getmtime(work / "pytorch" / "results.json") == stamp
    # ...and stops, naming what differs, when they were made otherwise: another limit, another model's weights.
    with pytest.raises(SystemExit, match=r"pytorch/results.json was made with other settings \(limit\)"):
        study([*argv[:5], str(LIMIT - 4), *argv[6:], "--output", str(again)])
    settings = work / "export.settings.json"
    changed = json.loads(settings.read_text())
    changed["model"]["model_sha256"] = "0" * 64  # as if the model folder had been trained further
    settings.write_text(json.dumps(changed))
    with pytest.raises(SystemExit, match=r"vision_model_int8.onnx was made with other settings \(model\)"):
        study([*argv, "--output", str(again)])
    settings.unlink()  # a result without its recorded settings cannot be checked
    with pytest.raises(SystemExit, match="has no record of the settings it was made with"):
        study([*argv, "--output", str(again)])
