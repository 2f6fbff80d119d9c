"""bench/bench_train.py runs (in its own process: no test imports bench/), with every row of its phases table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent


def test_the_training_benchmark_times_every_phase_including_the_conditional_ones() -> None:
    command = [sys.executable, "bench/bench_train.py", "--sizes", "32", "--steps", "1", "--phases", "--threads", "1"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.strip().startswith("32") and "x  " in line]
    variants = [line.split("x  ", 1)[1] for line in rows]
    assert variants[0] == "AAE, fp32 (default)" and variants[-1] == "+ sliced prior term (v8)"
    assert "+ gaussian posterior, 2 discriminator steps" in variants
    assert "+ attribute teacher" in variants and "+ image adversary (prior fakes)" in variants
    assert "conditional (bf16, channels_last, EMA)" in variants and "+ image adversary (recon + prior fakes)" in variants
    assert all(float(line.split()[1]) > 0 for line in rows)
