"""`python -m benchmarks.gpu_check` where there is no CUDA: exit status 3, one line, nothing written. Its pytest plugin
reports each `gpu` test (skipped here, run on a GPU machine) and a killed run keeps what finished."""

import json
import subprocess
import sys

import pytest
import torch

from benchmarks import gpu_check
from conftest import REPO_ROOT

GPU_TESTS = 10  # tests/test_gpu.py: bf16 step, trainer, 3 decoder backends x 2 dtypes, SDPA towers, NCCL torchrun


def test_without_cuda_it_exits_3_and_writes_nothing(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the command would run the whole check")
    output = tmp_path / "gpu_check.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--output", str(output)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == gpu_check.NO_CUDA_EXIT == 3, result.stderr[-2000:]
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m benchmarks.gpu_check: no CUDA device"), result.stderr
    assert "nothing run, nothing written (exit status 3)" in lines[0]
    assert not output.exists()


def test_bad_budget_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--budget", "5"])
    assert exit_info.value.code == 2
    assert "--budget must exceed" in capsys.readouterr().err


def test_collect_report_merges_the_phases_of_each_test(tmp_path):
    path = tmp_path / "report.jsonl"
    phases = [
        ("a", "setup", "passed", 0.5, None), ("a", "call", "passed", 2.0, None), ("a", "teardown", "passed", 0.1, None),
        ("b", "setup", "passed", 0.1, None), ("b", "call", "failed", 1.0, "AssertionError: 0.9 > 0.95"),
        ("b", "teardown", "passed", 0.0, None),
        ("c", "setup", "skipped", 0.0, "needs a CUDA device"),
        ("d", "setup", "failed", 0.2, "RuntimeError: CUDA out of memory"),
    ]
    path.write_text("".join(json.dumps({"test": t, "when": w, "outcome": o, "seconds": s,
                                        **({"message": m} if m else {})}) + "\n" for t, w, o, s, m in phases))
    results = gpu_check.collect_report(str(path))
    assert results == [
        {"test": "a", "outcome": "passed", "seconds": 2.6},
        {"test": "b", "outcome": "failed", "seconds": 1.1, "message": "AssertionError: 0.9 > 0.95"},
        {"test": "c", "outcome": "skipped", "seconds": 0.0, "message": "needs a CUDA device"},
        {"test": "d", "outcome": "error", "seconds": 0.2, "message": "RuntimeError: CUDA out of memory"},
    ]
    assert gpu_check.collect_report(str(tmp_path / "never-written.jsonl")) == []


def test_a_test_killed_during_its_call_is_incomplete_not_passed(tmp_path, monkeypatch):
    """A step killed mid-test leaves that test's setup report and no call report: its result is unknown."""
    path = tmp_path / "report.jsonl"
    phases = [
        ("a", "setup", "passed", 0.5), ("a", "call", "passed", 2.0), ("a", "teardown", "passed", 0.1),
        ("b", "setup", "passed", 0.3),  # killed here, during b's call
    ]
    path.write_text("".join(json.dumps({"test": t, "when": w, "outcome": o, "seconds": s}) + "\n"
                            for t, w, o, s in phases))
    results = gpu_check.collect_report(str(path))
    assert [r["outcome"] for r in results] == ["passed", "incomplete"]
    assert results[1]["seconds"] == 0.3 and "no call report" in results[1]["message"]

    # run_tests' verdict: an incomplete test makes the step not ok, even when pytest itself exited 0.
    def fake_step(command, timeout, env=None):
        with open(env[gpu_check.REPORT_ENV], "w", encoding="utf-8") as handle:
            handle.write(path.read_text())
        return {"command": " ".join(command), "returncode": 0, "timed_out": False, "wall_s": 1.0, "output_tail": ""}

    monkeypatch.setattr(gpu_check, "run_step", fake_step)
    step = gpu_check.run_tests(timeout=10)
    assert step["summary"] == {"passed": 1, "incomplete": 1} and not step["ok"]


@pytest.mark.slow
def test_the_plugin_reports_each_gpu_test():
    """The tests step as the GPU machine runs it; here every `gpu` test is reported skipped, with the reason."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the tests would run, not skip")
    step = gpu_check.run_tests(timeout=300)
    assert step["returncode"] == 0 and not step["timed_out"] and step["ok"], step["output_tail"]
    assert step["summary"] == {"skipped": GPU_TESTS}
    assert all(r["test"].startswith("tests/test_gpu.py::") and r["message"] == "needs a CUDA device"
               for r in step["results"])
    assert any("flash_attention_2-bfloat16" in r["test"] for r in step["results"])


def test_a_killed_step_is_reported_as_timed_out():
    step = gpu_check.run_step([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                              timeout=3)
    assert step["timed_out"] and step["returncode"] is None and step["wall_s"] < 30
    assert "started" in step["output_tail"]
