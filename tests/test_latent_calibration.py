"""The latent calibration: a whitening of the training codes at the encoder's end and its inverse at the decoder's
start. Reconstructions stay as they were, the codes it was fitted on come out white, prior samples decode from the
Gaussian of the old codes, a second calibration composes with the first, and a calibrated gaussian posterior exports
its scale matrix, samples with it and fine-tunes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aae.latent_calibration import CalibrationError, calibrate_checkpoint, fit_whitening  # noqa: E402
from aae.model import AAE, AAEConfig  # noqa: E402
from aae.train import TrainOptions, read_checkpoint, train  # noqa: E402


def test_the_whitening_makes_codes_white_and_its_inverse_undoes_it() -> None:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(5, 5))
    codes = rng.normal(size=(20000, 5)) @ mixing.T + np.arange(5)
    whitening = fit_whitening(codes)
    white = whitening.apply(codes)
    assert np.allclose(white.mean(0), 0, atol=1e-9) and np.allclose(np.cov(white, rowvar=False), np.eye(5), atol=1e-9)
    assert np.allclose(whitening.inverse @ whitening.matrix, np.eye(5), atol=1e-9)
    assert np.allclose(whitening.matrix, whitening.matrix.T)  # ZCA: symmetric, the rotation that moves codes least
    assert np.allclose(np.sort(whitening.eigenvalues), np.sort(np.linalg.eigvalsh(np.cov(codes, rowvar=False))))
    with pytest.raises(CalibrationError, match="cannot fit the covariance"):
        fit_whitening(codes[:5])
    flat = codes.copy()
    flat[:, 4] = flat[:, 3]  # a direction without variance
    with pytest.raises(CalibrationError, match="no variance"):
        fit_whitening(flat)


def _config(**changes: object) -> AAEConfig:
    return AAEConfig(**{"image_size": 32, "latent_dim": 6, "base_width": 8, "disc_hidden": 16, **changes})


def _trained(tmp_path: Path, name: str, **changes: object) -> Path:
    options = TrainOptions(
        count=48, epochs=1, batch_size=16, max_steps=3, out_dir=str(tmp_path / name), cache_dir=str(tmp_path / "c"),
        ema_kimg=1.0, config=_config(**changes),
    )  # fmt: skip
    return train(options)


def _model(checkpoint: dict, decoder: str = "live") -> AAE:
    model = AAE(AAEConfig.from_dict(checkpoint["config"]))
    model.load_state_dict(checkpoint["model"])
    if decoder == "ema":
        model.decoder.load_state_dict(checkpoint["decoder_ema"])
    return model.eval()


@pytest.mark.parametrize("posterior", ["deterministic", "gaussian"])
def test_reconstructions_stay_and_the_fitted_codes_come_out_white(tmp_path: Path, posterior: str) -> None:
    saved = read_checkpoint(_trained(tmp_path, posterior, posterior=posterior))
    before = _model(saved)
    x = torch.rand(400, 3, 32, 32)
    y = None
    with torch.no_grad():
        old_codes = before.encoder(x)  # the mean codes
        # skewed on purpose: codes squeezed and correlated, as a conditional model's are
        skew = torch.eye(6) + 0.8 * torch.ones(6, 6)
        old_draws = (old_codes @ skew.T).numpy()
    calibrated, whitening = calibrate_checkpoint(saved, old_draws)
    assert calibrated["config"]["latent_calibrated"] and "training_state" not in calibrated
    assert calibrated["summary"]["latent_calibration"]["images"] == 400
    after = _model(calibrated)
    with torch.no_grad():
        assert torch.allclose(after.decoder(after.encoder(x), y), before.decoder(before.encoder(x), y), atol=1e-4)
        # the codes it was fitted on, seen through the new encoder's whitening, are white
        white = after.encoder._calibrated(torch.from_numpy(old_draws).float()).double().numpy()
        assert np.allclose(np.cov(white, rowvar=False), np.eye(6), atol=1e-3)
        # a prior sample decodes where the old decoder decodes the fitted Gaussian's point
        z = torch.randn(8, 6)
        old_point = torch.from_numpy(whitening.inverse).float() @ z.T
        want = before.decoder(old_point.T + torch.from_numpy(whitening.offset).float(), y)
        assert torch.allclose(after.decoder(z, y), want, atol=1e-4)
    ema = _model(calibrated, "ema")  # the EMA decoder carries the same inverse map
    assert torch.equal(ema.decoder.calibration_inverse, after.decoder.calibration_inverse)


def test_a_second_calibration_composes_with_the_first(tmp_path: Path) -> None:
    saved = read_checkpoint(_trained(tmp_path, "twice"))
    x = torch.rand(300, 3, 32, 32)
    before = _model(saved)
    with torch.no_grad():
        codes = before.encoder(x).numpy() * np.array([3.0, 1, 1, 1, 1, 0.5])
    once, _ = calibrate_checkpoint(saved, codes)
    with torch.no_grad():
        again_codes = _model(once).encoder._calibrated(torch.from_numpy(codes)).numpy() * 2.0 + 1.0
    twice, _ = calibrate_checkpoint(once, again_codes)
    after = _model(twice)
    with torch.no_grad():
        assert torch.allclose(after.decoder(after.encoder(x)), before.decoder(before.encoder(x)), atol=1e-4)
        white = after.encoder._calibrated(torch.from_numpy(codes).float()).double().numpy()
    assert np.allclose(np.cov(white, rowvar=False), np.eye(6) / 4, atol=1e-3)  # the second map halved the first's


def test_the_vae_is_not_calibrated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="for the AAE and the AE"):
        _config(kind="vae", latent_calibrated=True)


def test_a_calibrated_gaussian_posterior_exports_its_scale_samples_with_it_and_fine_tunes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aae.card import _prior_matching_text
    from aae.generators import PackageGenerator
    from export.package import export_package
    from synthgen.cli import main

    checkpoint = _trained(tmp_path, "g", posterior="gaussian")
    out = tmp_path / "g" / "calibrated.pt"
    assert main(["calibrate", str(checkpoint), "--out", str(out), "--images", "40", "--cache-dir", str(tmp_path / "c")]) == 0
    assert "whitened" in capsys.readouterr().out
    result = export_package(out, tmp_path / "models" / "g", name="g", version="1")
    assert result.parity["encoder"].ok
    manifest = json.loads((tmp_path / "models" / "g" / "manifest.json").read_text())
    assert manifest["encoder"]["scale_output"] == "z_scale" and "log_var_output" not in manifest["encoder"]
    assert manifest["config"]["latent_calibrated"] and manifest["training"]["latent_calibration"]["images"] == 40
    generator = PackageGenerator(tmp_path / "models" / "g")
    images = generator.decode(generator.sample_inputs(300, 0))
    means, draws = generator.encode(images), generator.encode(images, sample=True, seed=3)
    model = _model(read_checkpoint(out))
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
        mean, scale = model.encoder.posterior(x)
    assert scale is not None and np.abs(mean.numpy() - means).max() < 1e-3
    noise = torch.linalg.solve(scale.double(), torch.from_numpy(draws - means).double().unsqueeze(-1)).squeeze(-1)
    assert abs(float(noise.mean())) < 0.1 and abs(float(noise.std()) - 1) < 0.1  # z = mean + S eps, eps ~ N(0, I)
    assert "a latent calibration whitened the codes" in _prior_matching_text(generator.describe())
    # the card of a calibrated package: its prior fit on posterior samples drawn with the scale matrix
    tiny = ["--samples", "32", "--duplicates", "100", "--prior-codes", "40", "--permutations", "20", "--pairs", "16"]
    tiny += ["--train-neighbours", "50", "--patches", "16", "--cache-dir", str(tmp_path / "c")]
    assert main(["evaluate", str(tmp_path / "models" / "g"), *tiny]) == 0
    card = (tmp_path / "models" / "g" / "card.md").read_text()
    assert "a latent calibration whitened the codes" in card and "posterior samples z ~ q(z|x)" in card
    # a fine-tune starts from the calibrated model and keeps its maps
    code = main(["train", "--init", str(out), "--out", str(tmp_path / "ft"), "--count", "16", "--batch-size", "8",
                 "--epochs", "1", "--max-steps", "1", "--cache-dir", str(tmp_path / "c")])  # fmt: skip
    assert code == 0
    tuned = read_checkpoint(tmp_path / "ft" / "checkpoint.pt")
    assert torch.equal(
        tuned["model"]["decoder.calibration_inverse"], read_checkpoint(out)["model"]["decoder.calibration_inverse"]
    )


def test_the_command_refuses_too_few_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from synthgen.cli import main

    checkpoint = _trained(tmp_path, "few")
    args = ["calibrate", str(checkpoint), "--out", str(tmp_path / "x.pt"), "--images", "4", "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 2
    assert "cannot fit the covariance of 6 dimensions" in capsys.readouterr().out
    assert not (tmp_path / "x.pt").exists()
