"""The sliced Wasserstein term of the AAE's regularization phase: near zero on prior samples, large on codes of the
wrong spread or shape, a gradient that moves codes toward the prior, and its place in training and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from aae.model import AAEConfig  # noqa: E402
from aae.prior_matching import PriorSlicer, random_directions, sliced_distance  # noqa: E402
from aae.priors import GaussianPrior, build_prior  # noqa: E402
from aae.train import TrainOptions, read_checkpoint, train  # noqa: E402


def _slicer(prior: object, dim: int, **options: object) -> PriorSlicer:
    return PriorSlicer(prior, dim, torch.device("cpu"), **options)  # type: ignore[arg-type]


def test_the_directions_are_the_axes_the_covariance_s_eigenvectors_and_random_unit_vectors() -> None:
    torch.manual_seed(0)
    slicer = _slicer(GaussianPrior(5), 5, random=7, momentum=1.0)
    codes = torch.randn(4000, 5) * torch.tensor([1.0, 1.0, 1.0, 1.0, 3.0])
    codes[:, :2] = codes[:, :2] @ torch.tensor([[1.0, 0.9], [0.0, 0.44]])  # correlated first two coordinates
    axes, eigenvectors, drawn = slicer.directions(codes)
    assert torch.equal(axes, torch.eye(5)) and drawn.shape == (7, 5)
    assert torch.allclose(drawn.norm(dim=1), torch.ones(7)) and torch.allclose(
        random_directions(3, 5, torch.device("cpu")).norm(dim=1), torch.ones(3)
    )
    assert torch.allclose(eigenvectors @ eigenvectors.T, torch.eye(5), atol=1e-5)
    assert abs(float(eigenvectors[-1, 4])) > 0.99  # the widest direction: the fifth coordinate
    diagonal = torch.tensor([1.0, 1.0]) / 2**0.5  # the two correlated coordinates' shared direction
    assert max(abs(float(v[:2] @ diagonal)) for v in eigenvectors) > 0.95


def test_the_running_covariance_is_a_resumable_average() -> None:
    slicer = _slicer(GaussianPrior(3), 3, momentum=0.5)
    codes = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    slicer.directions(codes)
    assert torch.allclose(slicer.covariance, torch.diag(torch.tensor([1.5, 0.5, 0.5])))
    other = _slicer(GaussianPrior(3), 3)
    other.load_state_dict(slicer.state_dict())
    assert torch.equal(other.covariance, slicer.covariance)


def test_prior_samples_are_near_and_codes_of_another_spread_shape_or_covariance_are_far() -> None:
    torch.manual_seed(0)
    prior = GaussianPrior(8)

    def term(codes: torch.Tensor) -> float:
        slicer = _slicer(prior, 8, random=8, momentum=1.0)
        return slicer(codes).item()

    matched = term(prior.sample(1024))
    squeezed = term(prior.sample(1024) * torch.tensor([0.2] * 4 + [1.0] * 4))
    # one coordinate two-valued (+-1): unit variance and zero mean as the prior, only its shape differs
    signs = prior.sample(1024)
    signs[:, 0] = torch.sign(signs[:, 0])
    assert matched < 0.01
    assert squeezed > 10 * matched and term(signs) > 3 * matched


def test_the_eigenvectors_find_a_covariance_that_random_directions_miss() -> None:
    """32 dimensions, half of the variance along 16 hidden directions and a tenth as much along the others: the
    mean variance, and so a random direction's, is about 1."""
    torch.manual_seed(2)
    dim = 32
    rotation = torch.linalg.qr(torch.randn(dim, dim)).Q
    spread = torch.tensor([1.8] * 16 + [0.2] * 16).sqrt()
    codes = (torch.randn(4096, dim) * spread) @ rotation.T
    prior = GaussianPrior(dim)
    slicer = _slicer(prior, dim, momentum=1.0)
    _axes, eigenvectors, drawn = slicer.directions(codes)
    along = {name: sliced_distance(codes, g, prior).mean().item() for name, g in (("eigen", eigenvectors), ("random", drawn))}
    assert along["eigen"] > 5 * along["random"]


def test_the_gradient_moves_codes_onto_the_prior() -> None:
    torch.manual_seed(1)
    prior = build_prior({"kind": "gaussian", "std": 1.0}, 4)
    slicer = _slicer(prior, 4)
    codes = (torch.randn(512, 4) * torch.tensor([3.0, 0.3, 1.0, 1.0]) + 2.0).requires_grad_(True)
    optimizer = torch.optim.Adam([codes], lr=0.05)
    start = slicer(codes).item()
    for _ in range(300):
        loss = slicer(codes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert slicer(codes).item() < start / 50
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
    saved = read_checkpoint(checkpoint)
    assert saved["options"]["prior_sliced_weight"] == 1.0
    assert saved["training_state"]["trainer"]["prior_slicer"]["covariance"].shape == (6, 6)  # resumes with the run
    # the package's training summary keeps the weight, and its card says what pulled the codes onto the prior
    from aae.card import _prior_matching_text
    from aae.generators import PackageGenerator
    from export.package import export_package

    export_package(checkpoint, tmp_path / "models" / "s", name="s", version="1")
    described = PackageGenerator(tmp_path / "models" / "s").describe()
    assert described["prior_sliced_weight"] == 1.0
    assert "a sliced Wasserstein term (weight 1)" in _prior_matching_text(described)
    assert _prior_matching_text({"name": "plain"}) == ""
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
    v8 = _train_options(parser.parse_args(["train", "--recipe", "v8", "--conditional", "--posterior", "gaussian"]))
    assert v8.prior_sliced_weight > 0 and v8.lr_encoder_reconstruction == 3e-4
    assert (v8.lr_discriminator, v8.lr_generator, v8.disc_steps) == (4e-4, 1e-4, 2)  # v7's game
    mine = parser.parse_args(["train", "--recipe", "v8", "--prior-sliced-weight", "0", "--lr-encoder-reconstruction", "1e-3"])
    assert (_train_options(mine).prior_sliced_weight, _train_options(mine).lr_encoder_reconstruction) == (0.0, 1e-3)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--prior-sliced-weight", "-1"])
    assert "expected a finite number >= 0" in capsys.readouterr().err
