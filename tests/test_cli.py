from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from synthgen.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_serving_modules_never_import_torch() -> None:
    code = (
        "import sys; import synthgen.cli, service.api.app, service.serve, service.engine.rendering, service.worker.worker; "
        "sys.exit('torch imported' if 'torch' in sys.modules else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_generate_writes_images_and_manifest(tiny_models_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "faces"
    args = ["generate", "--count", "10", "--seed", "4", "--out", str(out), "--models-dir", str(tiny_models_dir)]
    assert main([*args, "--model", "tiny", "--batch-size", "3"]) == 0
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == [f"{i:08d}.png" for i in range(10)]
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in lines] == list(range(10)) and lines[3]["file"] == "00000003.png"
    assert lines[0]["seed"] == 4 and lines[0]["model"] == "tiny@1" and len(lines[0]["latent"]) == 8
    image = np.asarray(Image.open(out / "00000007.png"))
    assert image.shape == (32, 32, 3)

    again = tmp_path / "again"
    assert main([*args[:5], "--out", str(again), "--models-dir", str(tiny_models_dir), "--model", "tiny@1"]) == 0
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)


def test_generate_errors_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--count", "1", "--out", str(tmp_path / "x"), "--models-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "models directory does not exist" in err
    with pytest.raises(SystemExit):
        main(["generate", "--count", "0", "--out", str(tmp_path)])
    assert "expected an integer >= 1, got 0" in capsys.readouterr().err


def test_worker_role_needs_a_shared_redis(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from service.settings import get_settings

    monkeypatch.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()
    try:
        assert main(["serve", "--role", "worker"]) == 2
    finally:
        get_settings.cache_clear()
    assert "set REDIS_URL" in capsys.readouterr().err


def test_shipped_model_generates_faces(tmp_path: Path) -> None:
    if not (REPO / "models" / "avatars-64" / "manifest.json").is_file():
        pytest.skip("no shipped model package under models/")
    assert main(["generate", "--count", "4", "--out", str(tmp_path)]) == 0
    image = np.asarray(Image.open(tmp_path / "00000000.png"))
    assert image.shape == (64, 64, 3) and image.std() > 10


def test_export_verify_and_refusal(tiny_models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    assert main(["export", "--verify", str(tiny_models_dir / "tiny")]) == 0
    assert "package verified" in capsys.readouterr().out
    import shutil

    bad = tmp_path / "tiny"
    shutil.copytree(tiny_models_dir / "tiny", bad)
    (bad / "samples.png").write_bytes(b"not the picture")
    assert main(["export", "--verify", str(bad)]) == 2
    assert "samples.png: 15 bytes" in capsys.readouterr().err


def test_serve_refuses_a_tampered_package_with_one_line(tiny_models_dir: Path, tmp_path: Path) -> None:
    import os
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir / "tiny", models / "tiny")
    data = bytearray((models / "tiny" / "decoder.onnx").read_bytes())
    data[100] ^= 0x01
    (models / "tiny" / "decoder.onnx").write_bytes(bytes(data))
    env = {**os.environ, "SYNTHGEN_MODELS_DIR": str(models), "SYNTHGEN_DEFAULT_MODEL": "tiny", "REDIS_URL": ""}
    done = subprocess.run(
        [sys.executable, "-m", "synthgen.cli", "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "decoder.onnx: sha256" in lines[0] and "does not match manifest" in lines[0], done.stderr


def test_interpolate_writes_a_strip_in_process_and_matches_the_api(
    tiny_models_dir: Path, tmp_path: Path, app_factory: Any
) -> None:
    import os

    out = tmp_path / "strip.png"
    os.environ["SYNTHGEN_MODELS_DIR"] = str(tiny_models_dir)
    os.environ["SYNTHGEN_DEFAULT_MODEL"] = "tiny"
    from service.settings import get_settings

    get_settings.cache_clear()
    try:
        code = main(["interpolate", "--from-seed", "3", "--to-seed", "4", "--steps", "5", "--method", "lerp", "--out", str(out)])
    finally:
        del os.environ["SYNTHGEN_MODELS_DIR"], os.environ["SYNTHGEN_DEFAULT_MODEL"]
        get_settings.cache_clear()
    strip = np.asarray(Image.open(io.BytesIO(out.read_bytes())))
    assert code == 0 and strip.shape == (32, 5 * 32, 3)
    client = app_factory(with_worker=False)
    served = client.post("/v1/interpolate?layout=strip", json={"from_seed": 3, "to_seed": 4, "steps": 5, "method": "lerp"})
    assert np.array_equal(strip, np.asarray(Image.open(io.BytesIO(served.content))))
