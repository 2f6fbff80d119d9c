from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.engine.registry import ModelRegistry, build_registry
from service.engine.sessions import IoBindingRunner, make_runner
from service.settings import Settings


def test_io_binding_gives_the_same_bytes_as_run(tiny_models_dir: Path) -> None:
    model = ModelRegistry.from_directory(tiny_models_dir, "tiny").default
    runner = IoBindingRunner(model, "cpu")
    rng = np.random.default_rng(0)
    for n in (1, 7, 64, 7):  # a batch size seen before reuses its buffers
        z = rng.standard_normal((n, 8)).astype(np.float32)
        out = runner(z)
        assert out.shape == (n, 32, 32, 3) and np.array_equal(out, model.decode(z))
    first = runner(np.zeros((7, 8), np.float32))
    runner(np.ones((7, 8), np.float32))
    assert not np.array_equal(first, runner(np.ones((7, 8), np.float32)))  # results are copies, not views


def test_runner_choice_follows_the_provider(tiny_models_dir: Path) -> None:
    model = ModelRegistry.from_directory(tiny_models_dir, "tiny").default
    assert make_runner(model, "auto") == model.decode  # CPU: plain run
    assert isinstance(make_runner(model, "on"), IoBindingRunner)
    assert make_runner(model, "off") == model.decode


@pytest.mark.parametrize("spinning", [False, True])
def test_the_spinning_setting_reaches_the_session(tiny_models_dir: Path, spinning: bool) -> None:
    settings = Settings(models_dir=tiny_models_dir, default_model="tiny", ort_spinning=spinning, ort_threads=1)
    session = build_registry(settings).default.session
    options = session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")
    assert options.intra_op_num_threads == 1
