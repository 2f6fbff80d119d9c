"""The sliced Wasserstein term of the AAE's regularization phase: near zero on prior samples, large on codes of the
wrong spread or shape, a gradient that moves codes toward the prior, and its place in training and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from aae.model import AAEConfig  # noqa: E402
from aae.prior_matching import directions, sliced_wasserstein_to_prior  # noqa: E402
from aae.priors import GaussianPrior, build_prior  # noqa: E402
from aae.train import TrainOptions, read_checkpoint, train  # noqa: E402


def test_the_directions_are_the_axes_then_random_unit_vectors() -> None:
    theta = directions(5, 7, torch.device("cpu"))
    assert theta.shape == (12, 5)
    assert torch.equal(theta[:5], torch.eye(5))
    assert torch.allclose(theta.norm(dim=1), torch.ones(12))


def test_prior_samples_are_near_and_codes_of_another_spread_or_shape_are_far() -> None:
    torch.manual_seed(0)
    prior = GaussianPrior(8)
    matched = sliced_wasserstein_to_prior(prior.sample(1024), prior, random_directions=8).item()
    squeezed = torch.tensor([0.2] * 4 + [1.0] * 4)
    squeezed = sliced_wasserstein_to_prior(prior.sample(1024) * squeezed, prior, random_directions=8).item()
    # one coordinate two-valued (+-1): unit variance and zero mean as the prior, only its shape differs
    signs = prior.sample(1024)
    signs[:, 0] = torch.sign(signs[:, 0])
    bimodal = sliced_wasserstein_to_prior(signs, prior, random_directions=8).item()
    assert matched < 0.01
    assert squeezed > 10 * matched and bimodal > 4 * matched


def test_the_gradient_moves_codes_onto_the_prior() -> None:
    torch.manual_seed(1)
    prior = build_prior({"kind": "gaussian", "std": 1.0}, 4)
    codes = (torch.randn(512, 4) * torch.tensor([3.0, 0.3, 1.0, 1.0]) + 2.0).requires_grad_(True)
    optimizer = torch.optim.Adam([codes], lr=0.05)
    start = sliced_wasserstein_to_prior(codes, prior).item()
    for _ in range(300):
        loss = sliced_wasserstein_to_prior(codes, prior)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert sliced_wasserstein_to_prior(codes, prior).item() < start / 50
    assert torch.allclose(codes.detach().std(0), torch.ones(4), atol=0.1)
    assert torch.allclose(codes.detach().mean(0), torch.zeros(4), atol=0.1)


def _config() -> AAEConfig:
    return AAEConfig(image_size=32, latent_dim=6, base_width=8, disc_hidden=16)


def test_training_logs_the_term_and_the_options_refuse_what_it_cannot_do(tmp_path: Path) -> None:
    options = TrainOptions(
        count=32, epochs=1, batch_size=16, max_steps=2, out_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "c"),
        prior_sliced_weight=1.0, log_every=1, config=_config(),
    )  # fmt: skip
    checkpoint = train(options)
    lines = (tmp_path / "run" / "losses.jsonl").read_text().splitlines()
    assert lines and all('"prior_sliced"' in line for line in lines)
    assert read_checkpoint(checkpoint)["options"]["prior_sliced_weight"] == 1.0
    shared = TrainOptions(**{**options.__dict__, "shared_encoder": True, "out_dir": str(tmp_path / "shared")})
    train(shared)
    assert '"prior_sliced"' in (tmp_path / "shared" / "losses.jsonl").read_text()
    with pytest.raises(ValueError, match=">= 0"):
        TrainOptions(prior_sliced_weight=-1.0, config=_config())
    with pytest.raises(ValueError, match="kind 'aae'"):
        TrainOptions(prior_sliced_weight=1.0, config=AAEConfig(kind="ae"))


def test_the_flag_defaults_to_the_recipe_and_refuses_a_negative_weight(capsys: pytest.CaptureFixture[str]) -> None:
    from synthgen.cli import _train_options, build_parser

    parser = build_parser()
    assert _train_options(parser.parse_args(["train", "--recipe", "v7"])).prior_sliced_weight == 0.0
    given = parser.parse_args(["train", "--recipe", "v7", "--prior-sliced-weight", "2.5"])
    assert _train_options(given).prior_sliced_weight == 2.5
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--prior-sliced-weight", "-1"])
    assert "expected a finite number >= 0" in capsys.readouterr().err
