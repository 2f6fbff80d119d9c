"""Export round trips and every refusal, on real (tiny) trained models and real corrupted packages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

import export.package as package_module  # noqa: E402
from aae.model import AAE, AAEConfig, load_checkpoint  # noqa: E402
from export.graphs import DecoderImageHead, ExportError  # noqa: E402
from export.package import export_package, verify_package  # noqa: E402
from service.engine.registry import ModelRegistry  # noqa: E402
from service.engine.sessions import decoder_for  # noqa: E402
from synthgen.core.errors import ModelPackageError  # noqa: E402
from synthgen.core.package import load_package, manifest_schema, sha256_file  # noqa: E402


def test_round_trip_parity_manifest_and_metadata(tiny_models_dir: Path) -> None:
    package_dir = tiny_models_dir / "tiny"
    manifest = json.loads((package_dir / "manifest.json").read_text())
    jsonschema.validate(manifest, manifest_schema())
    assert set(manifest["files"]) == {"decoder.onnx", "decoder.fp16.onnx", "encoder.onnx", "samples.png"}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(package_dir / name)
        assert entry["bytes"] == (package_dir / name).stat().st_size
    assert manifest["parity"]["decoder"]["max_error"] <= 1 and manifest["parity"]["decoder"]["latents"] >= 1024
    assert manifest["parity"]["decoder"]["batch_sizes"] == [1, 7, 64, 256]
    assert manifest["parity"]["decoder_fp16"]["max_error"] <= manifest["parity"]["decoder_fp16"]["bound"]
    assert manifest["latent_dim"] == 8 and manifest["image"] == {"height": 32, "width": 32, "channels": 3}
    assert manifest["prior"] == {"kind": "gaussian", "std": 1.0} and manifest["value_range"] == [0, 255]
    assert manifest["training"]["steps"] == 4
    assert manifest["uniqueness"]["threshold"] > 0 and manifest["graph"]["opset"] >= 18

    graph = onnx.load(str(package_dir / "decoder.onnx"))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["synthgen.name"] == "tiny" and meta["synthgen.version"] == "1" and meta["synthgen.latent_dim"] == "8"
    assert meta["synthgen.checkpoint_sha256"] == manifest["checkpoint_sha256"]
    assert [i.name for i in graph.graph.input] == ["z"] and [o.name for o in graph.graph.output] == ["images"]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch axis

    model = ModelRegistry.from_directory(tiny_models_dir, "tiny").get("tiny@1")
    images = model.decode(np.zeros((3, 8), dtype=np.float32))
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8


def test_fp16_is_chosen_on_cuda_only(tiny_models_dir: Path) -> None:
    package = load_package(tiny_models_dir / "tiny")
    assert decoder_for(package, ["CPUExecutionProvider"]).name == "decoder.onnx"
    assert decoder_for(package, ["CUDAExecutionProvider", "CPUExecutionProvider"]).name == "decoder.fp16.onnx"


def test_fp16_and_encoder_graphs_run_on_cpu(tiny_checkpoint: Path, tiny_models_dir: Path) -> None:
    import onnxruntime as ort

    aae, _ = load_checkpoint(str(tiny_checkpoint))
    z = np.random.default_rng(5).standard_normal((50, 8)).astype(np.float32) * 2
    with torch.no_grad():
        want = DecoderImageHead(aae).eval()(torch.from_numpy(z)).numpy()
    fp16 = ort.InferenceSession(str(tiny_models_dir / "tiny" / "decoder.fp16.onnx"), providers=["CPUExecutionProvider"])
    got16 = fp16.run(None, {"z": z})[0]
    assert got16.dtype == np.uint8 and np.abs(got16.astype(int) - want.astype(int)).max() <= 8
    encoder = ort.InferenceSession(str(tiny_models_dir / "tiny" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    codes = encoder.run(None, {"images": want})[0]
    with torch.no_grad():
        expected = aae.encoder(torch.from_numpy(want).permute(0, 3, 1, 2).float() / 255).numpy()
    assert codes.shape == (50, 8) and np.abs(codes - expected).max() < 1e-3


@pytest.mark.parametrize("size", [32, 64, 128])
def test_round_trip_at_each_image_size(size: int, tmp_path: Path) -> None:
    config = AAEConfig(image_size=size, latent_dim=4, base_width=4, disc_hidden=8)
    model = AAE(config).eval()
    checkpoint = tmp_path / "ckpt.pt"
    torch.save({"config": config.to_dict(), "model": model.state_dict(), "summary": {}}, checkpoint)
    result = export_package(checkpoint, tmp_path / "models" / f"m{size}", with_encoder=False)
    assert all(r.ok for r in result.parity.values())
    loaded = ModelRegistry.from_directory(tmp_path / "models", f"m{size}").default
    assert loaded.generate(1, np.arange(2)).shape == (2, size, size, 3)
    assert loaded.package.encoder_path is None


def test_export_refuses_a_package_that_fails_parity(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(package_module, "DECODER_BOUND", -1.0)  # nothing can pass
    with pytest.raises(ExportError, match="exceeds its bound; package refused"):
        export_package(tiny_checkpoint, tmp_path / "refused")
    assert list(tmp_path.iterdir()) == []  # no package, no staging folder left behind


def test_verify_accepts_a_good_package(tiny_checkpoint: Path, tiny_models_dir: Path) -> None:
    lines = verify_package(tiny_models_dir / "tiny", tiny_checkpoint)
    assert any("decoder vs torch" in line for line in lines) and any("fp16 vs fp32" in line for line in lines)


@pytest.fixture
def package_copy(tiny_models_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "models" / "tiny"
    shutil.copytree(tiny_models_dir / "tiny", target)
    return target


def _edit_manifest(package: Path, **changes: object) -> None:
    manifest = json.loads((package / "manifest.json").read_text())
    manifest.update(changes)
    (package / "manifest.json").write_text(json.dumps(manifest))


def test_tampered_decoder_is_refused(package_copy: Path) -> None:
    data = bytearray((package_copy / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (package_copy / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match=r"decoder\.onnx: sha256 .* does not match"):
        ModelRegistry.from_directory(package_copy.parent, "tiny")
    with pytest.raises(ModelPackageError, match=r"decoder\.onnx: sha256"):
        verify_package(package_copy)


def test_truncated_files_are_refused(package_copy: Path) -> None:
    path = package_copy / "decoder.fp16.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelPackageError, match=r"decoder\.fp16\.onnx: 1000 bytes, manifest says \d+ \(truncated\?\)"):
        load_package(package_copy)


def test_missing_files_are_refused(package_copy: Path) -> None:
    (package_copy / "encoder.onnx").unlink()
    with pytest.raises(ModelPackageError, match=r"encoder\.onnx: missing"):
        load_package(package_copy)
    (package_copy / "manifest.json").unlink()
    with pytest.raises(ModelPackageError, match=r"manifest\.json: missing"):
        load_package(package_copy)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"latent_dim": "eight"}, "at latent_dim: 'eight' is not of type 'integer'"),
        ({"name": "../etc"}, "at name: '../etc' does not match"),
        ({"format": "other/2"}, "at format"),
        ({"image": {"height": 32, "width": 32}}, "at image: 'channels' is a required property"),
        ({"files": {"decoder.onnx": {"sha256": "xyz", "bytes": 1}}}, "at files/decoder.onnx/sha256"),
    ],
)
def test_manifests_that_break_the_schema_are_refused(package_copy: Path, changes: dict[str, object], fragment: str) -> None:
    _edit_manifest(package_copy, **changes)
    with pytest.raises(ModelPackageError, match="does not match the manifest schema") as info:
        load_package(package_copy)
    assert fragment in str(info.value)


def test_not_json_is_refused(package_copy: Path) -> None:
    (package_copy / "manifest.json").write_text("{nope")
    with pytest.raises(ModelPackageError, match="not valid JSON"):
        load_package(package_copy)


def test_manifest_with_wrong_shape_is_refused(package_copy: Path) -> None:
    _edit_manifest(package_copy, latent_dim=9)
    with pytest.raises(ModelPackageError, match=r"expected input z \[batch, 9\]"):
        ModelRegistry.from_directory(package_copy.parent, "tiny")


def test_mismatched_package_is_refused(package_copy: Path) -> None:
    """A manifest renamed to another model: the graphs' own metadata gives it away."""
    _edit_manifest(package_copy, name="other")
    with pytest.raises(ModelPackageError, match="does not match manifest other@1"):
        ModelRegistry.from_directory(package_copy.parent, "other")


def test_unknown_default_model_is_refused(tiny_models_dir: Path) -> None:
    with pytest.raises(ModelPackageError, match="default model 'nope' not found"):
        ModelRegistry.from_directory(tiny_models_dir, "nope")


def test_several_versions_are_served_at_once(package_copy: Path) -> None:
    second = package_copy.parent / "tiny-v2"
    shutil.copytree(package_copy, second)
    _edit_manifest(second, version="2")
    # the version is also in each graph's metadata: re-export the metadata for the copy
    from export.graphs import read_metadata, write_metadata
    from export.manifest import write_manifest

    manifest = json.loads((second / "manifest.json").read_text())
    for graph in ("decoder.onnx", "decoder.fp16.onnx", "encoder.onnx"):
        meta = read_metadata(second / graph)
        meta["synthgen.version"] = "2"
        write_metadata(second / graph, meta)
    write_manifest(second / "manifest.json", manifest, [*sorted(second.glob("*.onnx")), second / "samples.png"])
    registry = ModelRegistry.from_directory(package_copy.parent, "tiny@1")
    assert registry.get("tiny").package.version == "2"  # a bare name is the latest version
    assert registry.get("tiny@1").package.version == "1"
    assert registry.default.package.ref == "tiny@1"


def test_export_ships_a_privacy_index(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from export.package import TrainingData

    data = TrainingData("avatars", 64, 0, str(tiny_checkpoint.parent / "cache"))
    export_package(tiny_checkpoint, tmp_path / "models" / "tiny", name="tiny", with_encoder=False, training_data=data)
    package = load_package(tmp_path / "models" / "tiny")
    privacy = package.manifest["privacy"]
    assert privacy["images"] == 64 and privacy["metric"] == "rms-thumbnail-8x8-rgb" and privacy["threshold"] >= 0
    assert "train_index.npz" in package.manifest["files"]
    index = ModelRegistry.from_directory(tmp_path / "models", "tiny").default.training_index()
    assert index is not None and index.thumbs.shape == (64, 8 * 8 * 3)


def test_a_mixture_prior_model_exports_and_serves_its_prior(tmp_path: Path) -> None:
    from aae.train import TrainOptions, train

    prior = {"kind": "mixture", "components": 3, "radius": 4.0, "std": 0.3}
    config = AAEConfig(image_size=32, latent_dim=4, base_width=8, disc_hidden=16, prior=prior)
    options = TrainOptions(
        count=32,
        epochs=1,
        batch_size=16,
        max_steps=2,
        out_dir=str(tmp_path / "run"),
        cache_dir=str(tmp_path / "c"),
        config=config,
    )
    export_package(train(options), tmp_path / "models" / "mix", with_encoder=False)
    model = ModelRegistry.from_directory(tmp_path / "models", "mix").default
    means = np.asarray(model.package.manifest["prior"]["means"])
    assert means.shape == (3, 4)
    z = model.latents(7, np.arange(300))
    assert np.linalg.norm(z[:, None] - means[None], axis=2).min(axis=1).max() < 0.3 * 5  # every z near a mean
    assert model.generate(7, np.arange(4)).shape == (4, 32, 32, 3)
    manifest_path = tmp_path / "models" / "mix" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["prior"]["means"]  # a mixture the service could not sample
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelPackageError, match="prior"):
        load_package(tmp_path / "models" / "mix")


def test_the_sharper_decoder_exports_through_the_cli_with_its_ema_weights(tmp_path: Path) -> None:
    """Resize-conv, GroupNorm and residual blocks, trained a few steps with the image adversary and an EMA:
    `synthgen export` ships the EMA decoder (the checkpoint says so), within the parity bounds."""
    from aae.image_adversary import AdversaryOptions
    from aae.train import TrainOptions, train
    from synthgen.cli import main

    config = AAEConfig(
        image_size=32, latent_dim=8, base_width=8, disc_hidden=16, upsample="bilinear", decoder_norm="group", res_blocks=1
    )
    options = TrainOptions(
        count=32, epochs=1, batch_size=8, out_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), bf16=True,
        channels_last=True, recon_loss="l1", adversary=AdversaryOptions(start=1, width=8), ema_kimg=0.05, config=config,
    )  # fmt: skip
    checkpoint = train(options)
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "models" / "sharp")]) == 0
    manifest = json.loads((tmp_path / "models" / "sharp" / "manifest.json").read_text())
    assert manifest["training"]["decoder_exported"] == "ema" and manifest["config"]["upsample"] == "bilinear"
    assert manifest["parity"]["decoder"]["max_error"] <= 1
    ema, _ = load_checkpoint(str(checkpoint))
    live, _ = load_checkpoint(str(checkpoint), decoder="live")
    z = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    served = ModelRegistry.from_directory(tmp_path / "models", "sharp").default.decode(z)
    with torch.no_grad():
        want = DecoderImageHead(ema).eval()(torch.from_numpy(z)).numpy()
    assert np.abs(served.astype(int) - want.astype(int)).max() <= 1
    # the EMA decoder, not the live one (early in training the ramp keeps the two close, not equal)
    assert not torch.equal(ema.decoder.last_layer.weight, live.decoder.last_layer.weight)
    assert any("decoder vs torch" in line for line in verify_package(tmp_path / "models" / "sharp", checkpoint))
