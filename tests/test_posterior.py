"""The AAE's gaussian posterior: z = mu(x) + sigma(x) * eps drawn in training, its mean and spread at inference, the
encoder graph that carries both, posterior samples for the prior fit, and a fine-tune from a package that takes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aae.generators import PackageGenerator, TorchEncoder  # noqa: E402
from aae.model import AAE, AAEConfig  # noqa: E402
from aae.train import TrainOptions, read_checkpoint, train  # noqa: E402
from export.package import export_package  # noqa: E402


def _config(**changes: object) -> AAEConfig:
    return AAEConfig(
        **{"image_size": 32, "latent_dim": 6, "base_width": 8, "disc_hidden": 16, "posterior": "gaussian", **changes}
    )


def test_training_codes_are_draws_and_inference_codes_their_mean() -> None:
    torch.manual_seed(0)
    model = AAE(_config())
    x = torch.rand(64, 3, 32, 32)
    a, b = model.encoder(x), model.encoder(x)
    assert not torch.allclose(a, b)  # each training forward draws anew
    assert torch.allclose(a.mean(0), torch.zeros(6), atol=1e-4) and torch.allclose(a.std(0), torch.ones(6), atol=1e-2)
    model.eval()
    mean, log_var = model.encoder.distribution(x)
    assert log_var is not None and torch.equal(model.encoder(x), mean)


def test_the_inference_moments_are_those_of_the_normalized_draw() -> None:
    torch.manual_seed(1)
    model = AAE(_config())
    encoder = model.encoder
    x = torch.rand(200, 3, 32, 32)
    for _ in range(5):
        encoder(x)  # running statistics of the draws
    encoder.eval()
    with torch.no_grad():
        raw = encoder.to_latent(encoder.features(x * 2 - 1).flatten(1))
        eps = torch.randn(200, 6)
        draw = raw[:, :6] + eps * torch.exp(0.5 * raw[:, 6:])
        want = encoder.code_norm(draw) * encoder.code_std + encoder.code_mean  # the normalization at inference
        mean, log_var = encoder.distribution(x)
        assert log_var is not None
        assert torch.allclose(mean + eps * torch.exp(0.5 * log_var), want, atol=1e-5)


def test_the_posterior_is_the_aae_s_option_and_old_configs_are_deterministic() -> None:
    with pytest.raises(ValueError, match="posterior must be one of"):
        _config(posterior="laplace")
    with pytest.raises(ValueError, match="the AAE's option"):
        _config(kind="vae")
    old = _config().to_dict()
    del old["posterior"]
    assert AAEConfig.from_dict(old).posterior == "deterministic"


def test_a_gaussian_posterior_trains_exports_and_samples_its_codes(tmp_path: Path) -> None:
    options = TrainOptions(
        count=32, epochs=1, batch_size=16, max_steps=3, out_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "c"),
        config=_config(),
    )  # fmt: skip
    checkpoint = train(options)
    result = export_package(checkpoint, tmp_path / "models" / "g", name="g", version="1")
    assert result.parity["encoder"].ok
    manifest = json.loads((tmp_path / "models" / "g" / "manifest.json").read_text())
    assert manifest["encoder"]["log_var_output"] == "z_log_var"
    generator = PackageGenerator(tmp_path / "models" / "g")
    images = generator.decode(generator.sample_inputs(400, 0))
    means = generator.encode(images)
    draws = generator.encode(images, sample=True, seed=3)
    assert generator.codes_description(sample=True) == "posterior samples z ~ q(z|x)"
    assert np.array_equal(draws, generator.encode(images, sample=True, seed=3))  # seeded
    saved = read_checkpoint(checkpoint)
    torch_encoder = TorchEncoder(AAE(AAEConfig.from_dict(saved["config"])))
    torch_encoder.model.load_state_dict(saved["model"])
    torch_encoder.model.eval()
    assert np.abs(torch_encoder(images) - means).max() < 1e-3  # the graph's mean is torch's
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
        _, log_var = torch_encoder.model.encoder.distribution(x)
    assert log_var is not None
    spread = (draws - means) / np.exp(0.5 * log_var.numpy())  # standard normal noise, if the graph's log-variance is right
    assert abs(spread.mean()) < 0.1 and abs(spread.std() - 1) < 0.1


def test_a_package_fine_tune_may_give_the_new_encoder_a_gaussian_posterior(
    tiny_models_dir: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from synthgen.cli import main

    out = tmp_path / "run"
    common = ["--count", "16", "--batch-size", "8", "--epochs", "1", "--cache-dir", str(tmp_path / "cache")]
    code = main(["train", "--init", str(tiny_models_dir / "tiny"), "--posterior", "gaussian", "--out", str(out), *common])
    assert code == 0
    checkpoint = read_checkpoint(out / "checkpoint.pt")
    assert checkpoint["config"]["posterior"] == "gaussian"
    start = {k: v for k, v in read_checkpoint(tiny_checkpoint)["model"].items() if k.startswith("encoder.to_latent")}
    assert checkpoint["model"]["encoder.to_latent.weight"].shape[0] == 2 * start["encoder.to_latent.weight"].shape[0]
    # a training checkpoint gives its encoder too: its posterior is part of what a fine-tune keeps
    again = ["train", "--init", str(tiny_checkpoint), "--posterior", "gaussian", "--out", str(tmp_path / "x"), *common]
    assert main(again) == 2
    said = capsys.readouterr()
    assert "a fine-tune keeps the checkpoint's architecture" in said.out + said.err


def test_the_v7_recipe_strengthens_the_latent_discriminator_and_flags_win() -> None:
    from synthgen.cli import _train_options, build_parser

    parser = build_parser()
    v7 = _train_options(parser.parse_args(["train", "--recipe", "v7", "--conditional", "--posterior", "gaussian"]))
    assert (v7.lr_discriminator, v7.lr_generator, v7.disc_steps) == (4e-4, 1e-4, 2)
    assert v7.config.posterior == "gaussian" and v7.adversary is not None and v7.teacher is not None
    mine = _train_options(parser.parse_args(["train", "--recipe", "v7", "--disc-steps", "3", "--lr-generator", "2e-4"]))
    assert (mine.disc_steps, mine.lr_generator) == (3, 2e-4)
    assert _train_options(parser.parse_args(["train"])).disc_steps == 1  # the default recipe's


def test_the_comparison_has_an_aae_with_a_gaussian_posterior() -> None:
    from aae.compare import CompareOptions, variant

    assert variant("aae-gaussian") == ("aae", {"posterior": "gaussian"})
    assert variant("ae-raw") == ("ae", {"normalize_codes": False})
    assert CompareOptions().train_options("aae-gaussian").config.posterior == "gaussian"
    with pytest.raises(ValueError, match="aae-gaussian"):
        variant("gan")


def test_the_encoder_may_take_its_own_rate_in_the_reconstruction_phase() -> None:
    from aae.train import build_trainer

    config = _config()
    plain = build_trainer(config, TrainOptions(config=config), torch.device("cpu")).opt_autoencoder
    assert [g["lr"] for g in plain.param_groups] == [1e-3]  # one group, as earlier runs' optimizers
    options = TrainOptions(lr_encoder_reconstruction=1e-4, config=config)
    trainer = build_trainer(config, options, torch.device("cpu"))
    encoder, decoder = trainer.opt_autoencoder.param_groups
    assert (encoder["lr"], decoder["lr"]) == (1e-4, 1e-3)
    assert {id(p) for p in encoder["params"]} == {id(p) for p in trainer.model.encoder.parameters()}
    from synthgen.cli import _train_options, build_parser

    args = build_parser().parse_args(["train", "--lr-encoder-reconstruction", "2e-4"])
    assert _train_options(args).lr_encoder_reconstruction == 2e-4
