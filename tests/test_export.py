from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import export.onnx_export as onnx_export
from service.errors import ModelPackageError
from service.model_package import load_package, sha256_file
from service.registry import ModelRegistry


def test_round_trip_parity_and_manifest(tiny_models_dir: Path) -> None:
    package_dir = tiny_models_dir / "tiny"
    manifest = json.loads((package_dir / "manifest.json").read_text())
    assert manifest["files"]["decoder.onnx"]["sha256"] == sha256_file(package_dir / "decoder.onnx")
    assert manifest["parity"]["max_error"] <= 1 and manifest["parity"]["latents"] >= 1024
    assert manifest["latent_dim"] == 8
    assert manifest["image"] == {"height": 32, "width": 32, "channels": 3}
    assert manifest["prior"] == {"kind": "gaussian", "std": 1.0}
    assert manifest["training"]["steps"] == 4

    model = ModelRegistry.from_directory(tiny_models_dir, "tiny").get("tiny@1")
    images = model.decode(np.zeros((3, 8), dtype=np.float32))
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8


def test_onnx_matches_torch_on_fresh_latents(tiny_checkpoint: Path, tiny_models_dir: Path) -> None:
    import torch

    from aae.model import load_checkpoint

    aae, _ = load_checkpoint(str(tiny_checkpoint))
    head = onnx_export.DecoderImageHead(aae).eval()
    z = np.random.default_rng(5).standard_normal((50, 8)).astype(np.float32) * 2
    with torch.no_grad():
        want = head(torch.from_numpy(z)).numpy()
    got = ModelRegistry.from_directory(tiny_models_dir, "tiny").default.decode(z)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_export_refuses_a_package_that_fails_parity(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_export, "PARITY_BOUND_GREY_LEVELS", -1)  # nothing can pass
    with pytest.raises(onnx_export.ExportError, match="package refused"):
        onnx_export.export_package(tiny_checkpoint, tmp_path / "refused")
    assert list(tmp_path.iterdir()) == []  # no package, no staging folder left behind


@pytest.fixture
def package_copy(tiny_models_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "models" / "tiny"
    shutil.copytree(tiny_models_dir / "tiny", target)
    return target


def test_tampered_decoder_is_refused(package_copy: Path) -> None:
    data = bytearray((package_copy / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (package_copy / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match=r"decoder.onnx: sha256 .* does not match"):
        load_package(package_copy)


def test_truncated_decoder_is_refused(package_copy: Path) -> None:
    path = package_copy / "decoder.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelPackageError, match=r"decoder.onnx: 1000 bytes, manifest says \d+ \(truncated\?\)"):
        load_package(package_copy)


def test_missing_files_are_refused(package_copy: Path) -> None:
    (package_copy / "decoder.onnx").unlink()
    with pytest.raises(ModelPackageError, match=r"decoder\.onnx: missing"):
        load_package(package_copy)
    (package_copy / "manifest.json").unlink()
    with pytest.raises(ModelPackageError, match=r"manifest\.json: missing"):
        load_package(package_copy)


def test_manifest_with_wrong_shape_is_refused(package_copy: Path) -> None:
    manifest = json.loads((package_copy / "manifest.json").read_text())
    manifest["latent_dim"] = 9
    (package_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelPackageError, match=r"expected input z \[batch, 9\]"):
        ModelRegistry.from_directory(package_copy.parent, "tiny")


def test_unknown_default_model_is_refused(tiny_models_dir: Path) -> None:
    with pytest.raises(ModelPackageError, match="default model 'nope' not found"):
        ModelRegistry.from_directory(tiny_models_dir, "nope")
