"""A fine-tune from a model package: the decoder rebuilt from its folded graph, a frozen start, the CLI's --init."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from aae.model import AAEConfig, load_checkpoint  # noqa: E402
from aae.package_start import PackageStartError, package_checkpoint  # noqa: E402
from aae.train import TrainOptions, build_trainer, read_checkpoint, train  # noqa: E402


def test_the_rebuilt_decoder_is_the_packaged_one_without_normalization(tiny_models_dir: Path, tiny_checkpoint: Path) -> None:
    start = package_checkpoint(tiny_models_dir / "tiny")  # raises unless it matches the graph within a grey level
    config = AAEConfig.from_dict(start["config"])
    original, _ = load_checkpoint(str(tiny_checkpoint))
    assert original.config.decoder_norm == "batch" and config.decoder_norm == "none"
    assert {k: v for k, v in config.to_dict().items() if k != "decoder_norm"} == {
        k: v for k, v in original.config.to_dict().items() if k != "decoder_norm"
    }
    rebuilt = build_trainer(config, TrainOptions(config=config), torch.device("cpu")).model
    rebuilt.load_state_dict(start["model"])
    z = torch.randn(16, config.latent_dim, generator=torch.Generator().manual_seed(3))
    rebuilt.train()  # no batch statistics left: training mode decodes as inference does
    with torch.no_grad():
        assert torch.allclose(rebuilt.decoder(z), original.decoder(z), atol=1e-5)
    assert start["started_from_package"] == {"name": "tiny", "version": "1", "graph": "decoder.onnx"}


def test_a_package_the_decoder_cannot_be_rebuilt_from_is_refused(tiny_models_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_models_dir / "tiny", copy)
    manifest = json.loads((copy / "manifest.json").read_text())

    def with_config(**changes: object) -> None:
        (copy / "manifest.json").write_text(json.dumps({**manifest, "config": {**manifest["config"], **changes}}))

    with_config(latent_dim=manifest["config"]["latent_dim"] + 1)  # the graph's first layer has other inputs
    with pytest.raises(PackageStartError, match="has shape"):
        package_checkpoint(copy)
    with_config(res_blocks=1)  # normalizations between the convolutions: nothing folds them back
    with pytest.raises(PackageStartError, match="residual blocks"):
        package_checkpoint(copy)
    with_config(decoder_norm="group")
    with pytest.raises(PackageStartError, match="group normalization"):
        package_checkpoint(copy)


def test_a_fine_tune_from_a_package_keeps_the_decoder_frozen_then_trains_it(tiny_models_dir: Path, tmp_path: Path) -> None:
    package = tiny_models_dir / "tiny"
    start = package_checkpoint(package)
    config = AAEConfig.from_dict(start["config"])
    options = TrainOptions(
        count=32, epochs=1, batch_size=8, out_dir=str(tmp_path / "frozen"), cache_dir=str(tmp_path / "cache"),
        init=str(package), decoder_frozen_steps=3, max_steps=3, config=config,
    )  # fmt: skip
    frozen = read_checkpoint(train(options))
    decoder = {k: v for k, v in start["model"].items() if k.startswith("decoder.")}
    encoder = {k: v for k, v in start["model"].items() if k.startswith("encoder.") and v.is_floating_point()}
    assert all(torch.equal(frozen["model"][k], v) for k, v in decoder.items())
    assert any(not torch.equal(frozen["model"][k], v) for k, v in encoder.items())
    moved = read_checkpoint(train(replace(options, out_dir=str(tmp_path / "moved"), max_steps=4)))
    assert any(not torch.equal(moved["model"][k], v) for k, v in decoder.items())


def test_the_cli_fine_tunes_a_package(tiny_models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from synthgen.cli import main

    out = tmp_path / "run"
    code = main([
        "train", "--init", str(tiny_models_dir / "tiny"), "--decoder-frozen-steps", "2", "--count", "16",
        "--batch-size", "8", "--epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    checkpoint = read_checkpoint(out / "checkpoint.pt")
    assert checkpoint["config"]["decoder_norm"] == "none" and checkpoint["options"]["decoder_frozen_steps"] == 2
    assert main(["train", "--init", str(tiny_models_dir / "tiny"), "--latent-dim", "4", "--out", str(tmp_path / "x")]) == 2
    said = capsys.readouterr()
    assert "a fine-tune keeps the checkpoint's architecture" in said.out + said.err
