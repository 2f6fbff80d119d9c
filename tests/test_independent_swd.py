"""bench/independent_swd.py, the Karras et al. SWD check that shares no code with the card's metric: known
answers on synthetic sets, and its command on the shipped package (run in a process of its own: tests do
not import bench/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

KNOWN_ANSWERS = """
import numpy as np
from bench.independent_swd import pyramid, swd

rng = np.random.default_rng(0)
flat = np.zeros((64, 64, 64, 3), dtype=np.uint8)
flat[:, 16:48, 16:48] = rng.integers(0, 256, size=(64, 1, 1, 3), dtype=np.uint8)  # one coloured square each
levels = pyramid(flat[:2].transpose(0, 3, 1, 2))
assert [lv.shape[-1] for lv in levels] == [64, 32, 16], [lv.shape for lv in levels]
# the pyramid is exact: collapsing it gives the images back
from bench.independent_swd import _pyr_up
back = levels[-1]
for band in reversed(levels[:-1]):
    back = band + _pyr_up(back)
assert np.abs(back - flat[:2].transpose(0, 3, 1, 2)).max() < 1e-3

same = swd(flat, flat.copy())  # not 0: each set gets its own random neighbourhoods, as in the protocol
assert len(same) == 4
noisy = np.clip(flat.astype(np.int16) + rng.integers(-40, 41, size=flat.shape), 0, 255).astype(np.uint8)
noisier = np.clip(flat.astype(np.int16) + rng.integers(-90, 91, size=flat.shape), 0, 255).astype(np.uint8)
a, b = swd(noisy, flat), swd(noisier, flat)
assert a[0] > 3 * same[0] and b[0] > a[0], (same, a, b)  # fine noise shows at the finest level, more noise more so
assert b[0] > b[2], b  # and at the finest level more than at the coarsest
try:
    swd(flat, flat[:10])
except ValueError as exc:
    assert "one shape" in str(exc)
else:
    raise AssertionError("sets of different sizes must be refused")
print("ok")
"""


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_independent_swd_gives_its_known_answers(tmp_path: Path) -> None:
    proc = _run(["-c", KNOWN_ANSWERS], tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_the_independent_check_scores_the_shipped_package_against_unused_renders(tmp_path: Path) -> None:
    out = tmp_path / "independent.json"
    args = ["-m", "bench.independent_swd", "models/avatars-64", "--count", "48", "--cache-dir", str(tmp_path)]
    proc = _run([*args, "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["real"]["seed"] != 0 and result["floor"]["seed"] not in (0, result["real"]["seed"])
    assert list(result["ratio"]) == ["64px", "32px", "16px", "average"]
    for level, ratio in result["ratio"].items():
        assert result["samples"][level] > 0 and result["floor_swd"][level] > 0
        assert abs(ratio - result["samples"][level] / result["floor_swd"][level]) < 0.02
    assert "average" in proc.stdout and "x" in proc.stdout.splitlines()[-1]
