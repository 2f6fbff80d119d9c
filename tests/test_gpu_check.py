"""bench/gpu_check.sh, the one-call GPU check, runs here in its CPU fallback, so it cannot rot: every step
(environment, the serving path through Redis and a worker with IO binding, the serving and engine
benchmarks, the training throughput) must run and write its part of the one results folder. Its serving-path
step runs on a conditional model too (tests/test_bench_inputs.py runs the benchmarks' own paths on one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.conditional_model import ConditionalModel

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu_check.sh"


def test_the_script_is_valid_bash_and_executable() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, check=False).returncode == 0
    assert os.access(SCRIPT, os.X_OK)


@pytest.mark.timeout(900)
def test_the_gpu_check_runs_its_cpu_fallback_into_one_folder(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # the training-throughput step needs it
    out = tmp_path / "gpu-check"
    env = {**os.environ, "VENV": str(Path(sys.executable).parent.parent)}
    env.pop("REDIS_URL", None)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--cpu", "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=840
    )
    summary = json.loads((out / "summary.json").read_text())
    logs = {p.name: p.read_text(errors="replace")[-1500:] for p in out.glob("*.txt")}
    assert proc.returncode == 0 and summary["ok"], (summary, logs)
    assert summary["mode"] == "cpu" and summary["provider"] == "cpu"
    assert [s["name"] for s in summary["steps"]] == [
        "environment",
        "serving-path",
        "bench-serving",
        "bench-engine",
        "bench-train",
    ]
    serving = summary["serving"]
    assert serving["ok"] and serving["provider_used"] == "CPUExecutionProvider" and serving["graph"] == "fp32"
    assert serving["max_diff_vs_in_process_same_provider"] == 0 and serving["interactive_equal_to_job"]
    assert "= " in logs["bench-serving.txt"] and "x the in-process batch-1 loop" in logs["bench-serving.txt"]
    assert "images/s" in logs["bench-engine.txt"] and "images/s" in logs["bench-train.txt"]
    assert (out / "summary.md").read_text().startswith("# GPU check: mode cpu")


@pytest.mark.timeout(300)
def test_the_serving_path_step_runs_on_a_conditional_model(tiny_conditional: ConditionalModel, tmp_path: Path) -> None:
    """The CPU fallback's serving-path step on a model of [z | y] decode rows: the in-process decodes take the
    job's rows, so the bytes agree exactly."""
    env = {
        **os.environ,
        "SYNTHGEN_MODELS_DIR": str(tiny_conditional.models_dir),
        "SYNTHGEN_DEFAULT_MODEL": tiny_conditional.name,
        "PYTHONPATH": str(REPO),
    }
    env.pop("REDIS_URL", None)
    command = [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--provider", "cpu", "--count", "64", "--out", str(tmp_path)]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    serving = json.loads((tmp_path / "serving.json").read_text())
    assert serving["model"] == tiny_conditional.ref and serving["conditional"] is True
    assert serving["ok"] and serving["images"] == 64 and serving["graph"] == "fp32"
    assert serving["max_diff_vs_in_process_same_provider"] == 0 and serving["interactive_equal_to_job"]
