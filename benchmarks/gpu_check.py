# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
The GPU check, one command on a machine with CUDA (from the repository root):

    python -m benchmarks.gpu_check --output benchmarks/results/gpu_check.json

1. the `gpu`-marked tests (`pytest -m gpu tests/test_gpu.py`: bf16 training of the fashion architecture, attention
   backends against eager, a one-GPU torchrun step on NCCL), each test's outcome, time and failure line;
2. the speed benchmark at ViT-B/16, `python -m benchmarks.speed --preset vit-b16 --sections inference --repeats 3`.
   benchmarks/speed.py has no device option: it builds its models on the CPU, so these figures are the GPU machine's
   CPU (its `device` field names the GPU whenever CUDA is present; `speed.device_note` says so).

Each step runs in its own process group under its share of `--budget` (default 450 s, so the whole check stays under
8 minutes); a step that runs out of time is killed and recorded as `timed_out`, with the tests that finished before.
The output JSON holds the device name, the torch / CUDA / cuDNN / NCCL versions, each test's outcome and seconds, the
speed figures and the wall times.

Exit status: 0 when both steps ran to the end and no test failed (skipped tests are listed, e.g. flash attention
without flash-attn); 1 when a test failed, errored or was cut off mid-test (`incomplete`), or a step failed
or timed out; 2 for bad arguments; 3
(`NO_CUDA_EXIT`) without CUDA: one line on stderr, nothing run and nothing written, so a CPU machine cannot overwrite
a GPU result.

This module is also the pytest plugin (`-p benchmarks.gpu_check`) that writes each test's report, one JSON line per
phase, to the file named by `$ECLIP_GPU_CHECK_REPORT`: results survive a step killed mid-run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_CUDA_EXIT = 3
REPORT_ENV = "ECLIP_GPU_CHECK_REPORT"
DEFAULT_BUDGET_S = 450
DEFAULT_TESTS_TIMEOUT_S = 300
RESERVE_S = 15  # writing the report, and the process start-ups around the two steps
TEST_FILES = ("tests/test_gpu.py",)
SPEED_ARGS = ("--preset", "vit-b16", "--sections", "inference", "--repeats", "3")
SPEED_DEVICE_NOTE = ("benchmarks/speed.py has no device option and builds its models on the CPU: these figures are "
                     "the GPU machine's CPU (speed.py's own `device` field names the GPU whenever CUDA is present)")


# --------------------------------------------------------------------------------------------- the pytest plugin
def pytest_runtest_logreport(report) -> None:
    """pytest hook: append one phase's report (`setup` / `call` / `teardown`) of one test to
    `$ECLIP_GPU_CHECK_REPORT`."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    entry = {"test": report.nodeid, "when": report.when, "outcome": report.outcome,
             "seconds": round(report.duration, 3)}
    if report.skipped and isinstance(report.longrepr, tuple):  # (file, line, "Skipped: reason")
        entry["message"] = str(report.longrepr[2]).removeprefix("Skipped: ")
    elif report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        entry["message"] = (crash.message if crash is not None else str(report.longrepr)).strip().splitlines()[0][:500]
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def collect_report(path: str) -> list[dict]:
    """
    The per-test results of a report file the plugin wrote: `[{"test", "outcome", "seconds", "message"?}]` in run
    order, `outcome` one of `passed`, `failed` (the test body), `error` (its setup or teardown), `skipped` and
    `incomplete` (its setup ran, neither failed nor skipped, but no `call` report followed: the step was killed
    during the test, whose result is unknown); `seconds` sums the phases.
    """
    tests: dict[str, dict] = {}
    phases: dict[str, set[str]] = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                entry = json.loads(line)
                test = tests.setdefault(entry["test"], {"test": entry["test"], "outcome": "passed", "seconds": 0.0})
                phases.setdefault(entry["test"], set()).add(entry["when"])
                test["seconds"] = round(test["seconds"] + entry["seconds"], 3)
                if entry["outcome"] == "failed":
                    test["outcome"] = "failed" if entry["when"] == "call" else "error"
                elif entry["outcome"] == "skipped" and test["outcome"] == "passed":
                    test["outcome"] = "skipped"
                if "message" in entry and "message" not in test:
                    test["message"] = entry["message"]
    for name, test in tests.items():
        # A setup that failed or skipped has no call phase; any other test without one never finished its body.
        if "call" not in phases[name] and test["outcome"] == "passed":
            test["outcome"] = "incomplete"
            test.setdefault("message", "no call report: the step ended (killed or timed out) during the test")
    return list(tests.values())


# ------------------------------------------------------------------------------------------------------ the steps
def run_step(command: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run `command` from the repository root in its own process group, killed whole after `timeout` seconds (so
    a torchrun child goes with it). Returns its return code, whether it timed out, its wall time and output tail."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=max(timeout, 1))
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        timed_out = True
    return {"command": " ".join(command), "returncode": None if timed_out else process.returncode,
            "timed_out": timed_out, "wall_s": round(time.perf_counter() - start, 1),
            "output_tail": (output or "")[-3000:]}


def run_tests(test_files=TEST_FILES, timeout: float = DEFAULT_TESTS_TIMEOUT_S, marker: str = "gpu") -> dict:
    """Step 1: `pytest -m MARKER TEST_FILES` with this module as plugin; the step's outcome, a count per outcome
    and each test's result (`collect_report`)."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        report = os.path.join(folder, "report.jsonl")
        command = [sys.executable, "-m", "pytest", "-m", marker, *test_files, "-q", "-p", "benchmarks.gpu_check",
                   "-p", "no:cacheprovider"]
        step = run_step(command, timeout, env={**os.environ, REPORT_ENV: report})
        step["results"] = collect_report(report)
    counts: dict[str, int] = {}
    for test in step["results"]:
        counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
    step["summary"] = counts
    # pytest exits 5 when no test is collected (all deselected): the step ran nothing it was asked to.
    step["ok"] = (not step["timed_out"] and step["returncode"] == 0 and not counts.get("failed")
                  and not counts.get("error") and not counts.get("incomplete"))
    return step


def run_speed(timeout: float) -> dict:
    """Step 2: benchmarks/speed.py at ViT-B/16 (see the module docstring for the device it runs on); its JSON under
    `results`."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-speed-") as folder:
        output = os.path.join(folder, "speed.json")
        step = run_step([sys.executable, "-m", "benchmarks.speed", *SPEED_ARGS, "--output", output], timeout)
        step["results"] = None
        if os.path.isfile(output):
            with open(output, encoding="utf-8") as handle:
                step["results"] = json.load(handle)
    step["device_note"] = SPEED_DEVICE_NOTE
    step["ok"] = not step["timed_out"] and step["returncode"] == 0 and step["results"] is not None
    return step


def environment() -> dict:
    """The GPU and the versions the check ran with."""
    import importlib.metadata as metadata
    import platform

    import torch

    properties = torch.cuda.get_device_properties(0)
    versions = {}
    for package in ("transformers", "accelerate", "flash-attn", "triton"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "device": torch.cuda.get_device_name(0),
        "device_count": torch.cuda.device_count(),
        "compute_capability": f"{properties.major}.{properties.minor}",
        "memory_gib": round(properties.total_memory / 2**30, 1),
        "bf16_supported": torch.cuda.is_bf16_supported(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else None,
        "python": platform.python_version(),
        **versions,
    }


# ----------------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0].strip(),
        epilog="Exit status: 0 all ran and no test failed; 1 a test failed or a step failed or timed out; "
               f"{NO_CUDA_EXIT} no CUDA device (nothing run, nothing written).",
    )
    parser.add_argument("--output", default=os.path.join(REPO, "benchmarks", "results", "gpu_check.json"),
                        help="the JSON to write (default benchmarks/results/gpu_check.json)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                        help=f"seconds for the whole check (default {DEFAULT_BUDGET_S})")
    parser.add_argument("--tests-timeout", type=float, default=DEFAULT_TESTS_TIMEOUT_S,
                        help=f"seconds for the tests, within --budget (default {DEFAULT_TESTS_TIMEOUT_S}); the speed "
                             "run gets what is left")
    parser.add_argument("--skip-speed", action="store_true", help="run the tests only")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.budget <= RESERVE_S or args.tests_timeout <= 0:
        parser.error(f"--budget must exceed {RESERVE_S} s and --tests-timeout be positive")
    import torch

    if not torch.cuda.is_available():
        print(f"{parser.prog}: no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False): "
              f"nothing run, nothing written (exit status {NO_CUDA_EXIT}).", file=sys.stderr)
        return NO_CUDA_EXIT
    from benchmarks.records import command, write_json

    start = time.perf_counter()
    report = {"command": command("benchmarks.gpu_check", sys.argv[1:] if argv is None else argv),
              **environment(), "budget_s": args.budget}
    report["tests"] = run_tests(timeout=min(args.tests_timeout, args.budget - RESERVE_S))
    left = args.budget - RESERVE_S - (time.perf_counter() - start)
    if args.skip_speed:
        report["speed"] = {"skipped": "--skip-speed", "ok": True}
    elif left < 30:
        report["speed"] = {"skipped": f"{left:.0f} s left of --budget {args.budget:.0f}", "ok": False}
    else:
        report["speed"] = run_speed(timeout=left)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    report["ok"] = bool(report["tests"]["ok"] and report["speed"]["ok"])
    write_json(args.output, report)
    tests = report["tests"]
    print(f"{parser.prog}: {report['device']}: tests {tests['summary'] or 'none ran'}"
          f"{' (timed out)' if tests['timed_out'] else ''}; speed "
          f"{'ok' if report['speed']['ok'] else report['speed'].get('skipped') or 'failed'}; "
          f"{report['wall_s']:.0f} s; wrote {args.output}", flush=True)
    for test in tests["results"]:
        if test["outcome"] in ("failed", "error", "incomplete"):
            print(f"  {test['outcome']}: {test['test']}: {test.get('message', '')}", flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
