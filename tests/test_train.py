from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aae.data import avatar_faces  # noqa: E402
from aae.model import AAE, AAEConfig, load_checkpoint  # noqa: E402
from aae.priors import MixturePrior, build_prior, complete_spec  # noqa: E402
from aae.train import AAETrainer, TrainOptions, build_trainer, train  # noqa: E402


def _reconstruction_error(model: AAE, x: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        error = torch.nn.functional.mse_loss(model(x), x).item()
    model.train()
    return error


def test_two_phase_steps_are_finite_and_reconstruction_improves() -> None:
    torch.manual_seed(0)
    config = AAEConfig(image_size=32, latent_dim=8, base_width=8, disc_hidden=32)
    trainer = AAETrainer(config, TrainOptions(lr_reconstruction=2e-3), torch.device("cpu"))
    faces = avatar_faces(32, seed=0, size=32, progress=False)
    x = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255
    before = _reconstruction_error(trainer.model, x)
    disc_params = [p.detach().clone() for p in trainer.model.discriminator.parameters()]
    for _ in range(60):
        losses = trainer.step(x)
        assert all(math.isfinite(v) for v in vars(losses).values() if v is not None), losses
        assert losses.disc_accuracy is not None and 0.0 <= losses.disc_accuracy <= 1.0
    after = _reconstruction_error(trainer.model, x)
    assert after < 0.7 * before, (before, after)
    # the regularization phase really trained the discriminator
    assert any(not torch.equal(a, b) for a, b in zip(disc_params, trainer.model.discriminator.parameters(), strict=True))


def test_train_writes_checkpoint_with_config_grid_and_loss_log(tiny_checkpoint: Path) -> None:
    run = tiny_checkpoint.parent
    model, checkpoint = load_checkpoint(str(tiny_checkpoint))
    assert checkpoint["config"]["latent_dim"] == 8 and checkpoint["config"]["image_size"] == 32
    assert isinstance(model, AAE) and model.config.base_width == 8
    assert checkpoint["summary"]["steps"] == 4
    assert (run / "samples_epoch000.png").is_file()
    records = [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]
    assert records and {"reconstruction", "discriminator", "generator", "disc_accuracy"} <= records[-1].keys()


def test_config_rejects_unsupported_sizes() -> None:
    with pytest.raises(ValueError, match="image_size must be 32, 64 or 128"):
        AAEConfig(image_size=48)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_decoder_output_matches_image_size(size: int) -> None:
    model = AAE(AAEConfig(image_size=size, latent_dim=4, base_width=4, disc_hidden=8)).eval()
    with torch.no_grad():
        images = model.decoder(torch.randn(2, 4))
        codes = model.encoder(images)
    assert images.shape == (2, 3, size, size) and codes.shape == (2, 4)
    assert float(images.min()) >= 0 and float(images.max()) <= 1


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_baselines_share_the_networks_and_learn(kind: str) -> None:
    torch.manual_seed(0)
    config = AAEConfig(image_size=32, latent_dim=8, base_width=8, disc_hidden=32, kind=kind)
    trainer = build_trainer(config, TrainOptions(lr_reconstruction=2e-3), torch.device("cpu"))
    assert not hasattr(trainer.model, "discriminator")  # nothing adversarial in a baseline
    aae = AAE(AAEConfig(image_size=32, latent_dim=8, base_width=8, disc_hidden=32))
    shapes = {k: v.shape for k, v in trainer.model.decoder.state_dict().items()}
    assert shapes == {k: v.shape for k, v in aae.decoder.state_dict().items()}  # the same decoder
    faces = avatar_faces(32, seed=0, size=32, progress=False)
    x = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255
    before = _reconstruction_error(trainer.model, x)
    for _ in range(60):
        losses = trainer.step(x)
        assert math.isfinite(losses.reconstruction) and losses.discriminator is None
        assert (losses.kl is not None and losses.kl >= 0) if kind == "vae" else losses.kl is None
    assert _reconstruction_error(trainer.model, x) < 0.8 * before
    mu, logvar = trainer.model.encoder.distribution(x)
    assert (logvar is not None) == (kind == "vae") and mu.shape == (32, 8)


def test_vae_needs_the_gaussian_prior_and_kinds_are_checked() -> None:
    with pytest.raises(ValueError, match="gaussian prior"):
        AAEConfig(kind="vae", prior={"kind": "mixture"})
    with pytest.raises(ValueError, match="kind must be one of"):
        AAEConfig(kind="gan")
    with pytest.raises(ValueError, match="unknown prior kind"):
        AAEConfig(prior={"kind": "laplace"})


def test_mixture_prior_samples_around_its_means() -> None:
    spec = complete_spec({"kind": "mixture", "components": 4, "radius": 3.0, "std": 0.1}, latent_dim=6)
    assert complete_spec(spec, 6) == spec  # idempotent, so a checkpoint's config reloads unchanged
    prior = build_prior(spec, 6)
    assert isinstance(prior, MixturePrior)
    means = torch.tensor(spec["means"])
    assert torch.allclose(means.norm(dim=1), torch.full((4,), 3.0), atol=1e-4)
    z = prior.sample(4000, generator=torch.Generator().manual_seed(0))
    nearest = torch.cdist(z, means).min(dim=1)
    assert float(nearest.values.max()) < 0.1 * 6  # every sample lies near one mean
    counts = torch.bincount(nearest.indices, minlength=4)
    assert int(counts.min()) > 800  # equal weights: about 1000 each


def test_an_aae_with_a_mixture_prior_trains_and_keeps_its_means(tmp_path: Path) -> None:
    config = AAEConfig(image_size=32, latent_dim=4, base_width=8, disc_hidden=16, prior={"kind": "mixture", "components": 3})
    options = TrainOptions(
        count=32, epochs=1, batch_size=16, max_steps=2, out_dir=str(tmp_path), cache_dir=str(tmp_path / "c"), config=config
    )
    model, checkpoint = load_checkpoint(str(train(options)))
    assert model.config.prior == config.prior and len(checkpoint["config"]["prior"]["means"]) == 3


def test_codes_are_normalized_to_the_prior_moments() -> None:
    torch.manual_seed(0)
    spec = {"kind": "mixture", "components": 4, "radius": 2.0, "std": 0.5}
    config = AAEConfig(image_size=32, latent_dim=6, base_width=8, disc_hidden=16, prior=spec)
    model = AAE(config)
    codes = model.encoder(torch.rand(256, 3, 32, 32))  # train mode: the batch statistics
    prior = build_prior(config.prior, 6).sample(20000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(codes.mean(0), prior.mean(0), atol=0.05)
    assert torch.allclose(codes.std(0), prior.std(0), rtol=0.05)
    # a checkpoint written before the option existed rebuilds without the layer
    old = config.to_dict()
    del old["normalize_codes"]
    assert AAEConfig.from_dict(old).normalize_codes is False
    assert AAEConfig.from_dict(config.to_dict()).normalize_codes is True


@pytest.mark.parametrize("source", ["folder", "lfw"])
def test_cli_trains_on_a_folder_of_photos_and_on_lfw(source: str, tmp_path: Path) -> None:
    from PIL import Image

    from synthgen.cli import main

    data = source
    if source == "folder":  # CelebA-like: 178x218 JPEGs in nested folders, not square
        data = str(tmp_path / "photos")
        rng = np.random.default_rng(0)
        for i, face in enumerate(avatar_faces(20, seed=3, size=64, progress=False)):
            photo = Image.fromarray(face).resize((178, 218)).convert("RGB")
            noisy = np.clip(np.asarray(photo, dtype=np.int16) + rng.integers(-8, 9, (218, 178, 3)), 0, 255).astype(np.uint8)
            (tmp_path / "photos" / f"part{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(noisy).save(tmp_path / "photos" / f"part{i % 2}" / f"{i:06d}.jpg", quality=90)
    out = tmp_path / "run"
    argv = ["train", "--data", data, "--count", "20", "--image-size", "32", "--latent-dim", "4", "--base-width", "8"]
    argv += ["--disc-hidden", "16", "--epochs", "1", "--batch-size", "8", "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    model, checkpoint = load_checkpoint(str(out / "checkpoint.pt"))
    assert checkpoint["summary"]["images"] == 20 and checkpoint["summary"]["steps"] == 2
    assert checkpoint["summary"]["data"] == data and model.config.image_size == 32


def test_recalibrated_batchnorm_makes_inference_match_training_statistics() -> None:
    from aae.train import recalibrate_batchnorm

    torch.manual_seed(0)
    model = AAE(AAEConfig(image_size=32, latent_dim=8, base_width=8, disc_hidden=16))
    data = torch.from_numpy(avatar_faces(128, seed=0, size=32, progress=False)).permute(0, 3, 1, 2).contiguous()
    x = data.float() / 255
    for module in model.modules():  # stale statistics, as a moving target leaves them
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.add_(3.0)
    model.train()
    with torch.no_grad():
        batch_stats = model(x)  # what training sees
    model.eval()
    stale = (model(x) - batch_stats).abs().mean().item()
    recalibrate_batchnorm(model, data, batches=20, batch_size=128)
    assert not model.training
    precise = (model(x) - batch_stats).abs().mean().item()
    assert precise < 0.1 * stale, (stale, precise)
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


def _sharp_options(tmp_path: Path, out: str, **changes: object) -> TrainOptions:
    """A tiny model with every v3 option on: resize-conv, GroupNorm, residual blocks, pyramid L1, bf16,
    channels_last, a shared encoder forward, two latent discriminator steps, the image adversary and an EMA."""
    from dataclasses import replace

    from aae.image_adversary import AdversaryOptions

    config = AAEConfig(
        image_size=32, latent_dim=8, base_width=8, disc_hidden=16, upsample="nearest", decoder_norm="group", res_blocks=1
    )
    options = TrainOptions(
        count=48, epochs=2, batch_size=8, out_dir=str(tmp_path / out), cache_dir=str(tmp_path / "cache"), log_every=2,
        bf16=True, channels_last=True, recon_loss="laplacian", frequency_weight=0.1, shared_encoder=True, disc_steps=2,
        adversary=AdversaryOptions(start=2, r1_every=2, width=8), ema_kimg=0.1, config=config,
    )  # fmt: skip
    return replace(options, **changes)  # type: ignore[arg-type]


def _training_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's live training state: weights, EMA, both discriminators, optimizer moments."""
    from aae.train import read_checkpoint

    state = read_checkpoint(path)["training_state"]["trainer"]
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, torch.Tensor):
            flat[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}/{key}", item)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(f"{prefix}/{i}", item)

    walk("", state)
    return flat


def test_a_resumed_run_equals_an_uninterrupted_one_step_for_step(tmp_path: Path) -> None:
    from dataclasses import replace

    straight = train(_sharp_options(tmp_path, "straight"))
    interrupted = _sharp_options(tmp_path, "resumed")
    train(replace(interrupted, max_steps=4))  # stops mid-epoch 1
    train(replace(interrupted, max_steps=9), resume=interrupted.out_dir)  # across the epoch boundary, mid-epoch 2
    resumed = train(interrupted, resume=tmp_path / "resumed" / "checkpoint.pt")
    a, b = _training_tensors(straight), _training_tensors(resumed)
    assert a.keys() == b.keys() and any("ema" in k for k in a) and any("adversary" in k for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different
    _, checkpoint = load_checkpoint(str(resumed))
    assert checkpoint["summary"]["steps"] == 12 and checkpoint["summary"]["export_decoder"] == "ema"
    records = [json.loads(line) for line in (tmp_path / "straight" / "losses.jsonl").read_text().splitlines()]
    assert records[-1]["image_weight"] > 0 and "disc_accuracy" in records[-1]


def test_old_checkpoints_rebuild_the_original_decoder_and_the_ema_decoder_is_chosen_by_flag(tmp_path: Path) -> None:
    old = AAEConfig(image_size=32, latent_dim=4, base_width=8, disc_hidden=8).to_dict()
    for key in ("upsample", "decoder_norm", "res_blocks"):
        del old[key]
    config = AAEConfig.from_dict(old)
    assert (config.upsample, config.decoder_norm, config.res_blocks) == ("convtranspose", "batch", 0)
    assert isinstance(AAE(config).decoder.last_layer, torch.nn.ConvTranspose2d)
    model = AAE(AAEConfig(image_size=32, latent_dim=4, base_width=8, disc_hidden=8, upsample="bilinear", decoder_norm="group"))
    ema = {k: torch.zeros_like(v) for k, v in model.decoder.state_dict().items()}
    path = tmp_path / "c.pt"
    saved = {"config": model.config.to_dict(), "model": model.state_dict(), "decoder_ema": ema}
    for summary, want_ema in (({"export_decoder": "ema"}, True), ({"export_decoder": "live"}, False)):
        torch.save({**saved, "summary": summary}, path)
        loaded, _ = load_checkpoint(str(path))
        assert all(torch.equal(v, torch.zeros_like(v)) for v in loaded.decoder.state_dict().values()) == want_ema
    live, _ = load_checkpoint(str(path), decoder="live")
    assert torch.equal(live.decoder.last_layer.weight, model.decoder.last_layer.weight)


@pytest.mark.parametrize("name", ["mse", "l1", "laplacian"])
def test_reconstruction_losses_are_zero_at_the_target_and_grow_with_noise(name: str) -> None:
    from aae.losses import reconstruction_loss

    x = torch.rand(2, 3, 32, 32)
    assert float(reconstruction_loss(name, x, x, frequency_weight=0.5)) < 1e-6
    small = reconstruction_loss(name, x + 0.01 * torch.randn_like(x), x, frequency_weight=0.5)
    large = reconstruction_loss(name, x + 0.1 * torch.randn_like(x), x, frequency_weight=0.5)
    assert 0 < float(small) < float(large)


def test_cli_resume_continues_a_run_with_its_own_options(tmp_path: Path) -> None:
    from synthgen.cli import main

    out = tmp_path / "run"
    argv = ["train", "--count", "24", "--image-size", "32", "--latent-dim", "4", "--base-width", "8", "--disc-hidden", "16"]
    argv += ["--batch-size", "8", "--epochs", "2", "--max-steps", "2", "--recon-loss", "l1", "--ema-kimg", "1"]
    argv += ["--out", str(out), "--cache-dir", str(tmp_path / "c"), "--threads", "1"]
    assert main(argv) == 0
    assert main(["train", "--resume", str(out), "--max-steps", "5"]) == 0
    _, checkpoint = load_checkpoint(str(out / "checkpoint.pt"))
    assert checkpoint["summary"]["steps"] == 5 and checkpoint["options"]["recon_loss"] == "l1"
    assert checkpoint["options"]["max_steps"] == 5 and checkpoint["decoder_ema"] is not None
