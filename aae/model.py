"""The adversarial autoencoder (Makhzani et al., 2015): encoder, decoder and a discriminator on z.

The whole model is in this file, with its two baselines built from the same encoder and decoder:
``kind="ae"``, a plain autoencoder (no regularization of z), and ``kind="vae"``, a variational
autoencoder (the encoder also predicts a log-variance, and a KL term replaces the discriminator). ``AAEConfig`` holds every constructor argument and is saved in
each checkpoint, so any tool (the exporter in particular) can rebuild the model from the file alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from aae.priors import complete_spec, marginal_moments
from synthgen.core.attributes import AttributeSpace

MODEL_KINDS = ("aae", "ae", "vae")
POSTERIORS = ("deterministic", "gaussian")
UPSAMPLINGS = ("convtranspose", "nearest", "bilinear")
DECODER_NORMS = ("batch", "group", "none")


@dataclass
class AAEConfig:
    image_size: int = 64  # square images, a power of two from 32 to 128
    channels: int = 3
    latent_dim: int = 32
    base_width: int = 48  # channels of the first encoder conv; doubled at each down-sampling
    disc_hidden: int = 512
    prior: dict[str, Any] = field(default_factory=lambda: {"kind": "gaussian", "std": 1.0})
    kind: str = "aae"  # "aae", or a baseline: "ae" (no regularization) or "vae"
    # The encoder ends in a batch normalization without learned scale, fixed to the prior's per-dimension
    # mean and std: the first two moments of q(z) match p(z) by construction and the discriminator shapes
    # the rest. Without it the adversarial game oscillates on this architecture (see README, "Training").
    normalize_codes: bool = True
    # The AAE's q(z|x) (Makhzani et al. 2015, section 2): "deterministic", z = f(x); or "gaussian", z = mu(x) +
    # sigma(x) * eps, drawn in training before the code normalization above. With a Gaussian posterior the aggregate
    # q(z) can fill the prior even where the images leave z little to say (a conditional model, whose labels carry
    # most of the face): a deterministic encoder can only spread its codes over a thin manifold of the prior there.
    posterior: str = "deterministic"
    # A latent calibration (aae/latent_calibration.py): after training, an affine map that whitens the codes of the
    # training images ends the encoder, and its inverse starts the decoder (buffers of both). Reconstructions
    # are unchanged; prior samples then decode from the Gaussian that fits the codes.
    latent_calibrated: bool = False
    # The decoder. The defaults are the original DCGAN-style one (ConvTranspose 4x4 stride 2, BatchNorm), which
    # checkpoints written before these options rebuild. "nearest"/"bilinear": resize then a 3x3 convolution
    # (no checkerboard artifacts, Odena et al. 2016); "group": GroupNorm, the same in training and inference.
    upsample: str = "convtranspose"
    decoder_norm: str = "batch"
    res_blocks: int = 0  # residual blocks after each up-sampling stage
    # A conditional model (the supervised AAE, Makhzani et al. 2015, section 5): the decoder takes the one-hot
    # codes of these attributes beside z, so z keeps only the style the labels do not say. The manifest form of
    # synthgen.core.attributes.AttributeSpace (values, identity, marginals); None: unconditional.
    attributes: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.image_size not in (32, 64, 128):
            raise ValueError(f"image_size must be 32, 64 or 128, got {self.image_size}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {self.latent_dim}")
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)}, got {self.kind!r}")
        self.prior = complete_spec(self.prior, self.latent_dim)
        if self.kind == "vae" and self.prior["kind"] != "gaussian":
            raise ValueError("the VAE baseline needs the gaussian prior (its KL term is the closed form for it)")
        if self.posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {', '.join(POSTERIORS)}, got {self.posterior!r}")
        if self.posterior == "gaussian" and self.kind != "aae":
            raise ValueError(f"a gaussian posterior is the AAE's option (the VAE has its own), not for kind {self.kind!r}")
        self._check_decoder()

    def _check_decoder(self) -> None:
        if self.latent_calibrated and self.kind == "vae":
            raise ValueError("a latent calibration is for the AAE and the AE (the VAE's KL term sets its codes' moments)")
        if self.upsample not in UPSAMPLINGS:
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLINGS)}, got {self.upsample!r}")
        if self.decoder_norm not in DECODER_NORMS:
            raise ValueError(f"decoder_norm must be one of {', '.join(DECODER_NORMS)}, got {self.decoder_norm!r}")
        if self.res_blocks < 0:
            raise ValueError(f"res_blocks must be >= 0, got {self.res_blocks}")

    @property
    def attribute_space(self) -> AttributeSpace:
        return AttributeSpace.from_manifest(self.attributes)

    @property
    def condition_dim(self) -> int:
        """Columns of the decoder's one-hot condition (0: unconditional)."""
        return self.attribute_space.dim

    @property
    def levels(self) -> int:
        """Number of stride-2 stages between the image and the 4x4 feature map."""
        return (self.image_size // 4).bit_length() - 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AAEConfig:
        return cls(**{"normalize_codes": False, **data})  # checkpoints from before the option had none


def _widths(config: AAEConfig) -> list[int]:
    # e.g. 64px: [32, 64, 128, 256] for the 32x32, 16x16, 8x8 and 4x4 feature maps
    return [min(config.base_width * 2**i, 512) for i in range(config.levels)]


class Encoder(nn.Module):
    """Image [B, C, H, W] in [0, 1] -> latent code z [B, latent_dim]."""

    code_mean: torch.Tensor  # buffers of the code normalization: the prior's per-dimension moments
    code_std: torch.Tensor
    calibration_matrix: torch.Tensor  # buffers of a latent calibration: z -> M (z - c)
    calibration_offset: torch.Tensor

    def __init__(self, config: AAEConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = config.channels
        for i, width in enumerate(_widths(config)):
            layers.append(nn.Conv2d(in_ch, width, 4, stride=2, padding=1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.latent_dim = config.latent_dim
        self.variational = config.kind == "vae"
        self.gaussian = config.posterior == "gaussian"
        # whether q(z|x) has a spread: the VAE's, and the AAE's gaussian posterior
        self.stochastic = self.variational or self.gaussian
        # the VAE's encoder and a gaussian posterior also predict log sigma^2 of q(z|x): twice the outputs
        self.to_latent = nn.Linear(in_ch * 4 * 4, config.latent_dim * (2 if self.stochastic else 1))
        # the VAE's KL term already sets the moments of its codes: no normalization there
        self.normalize = config.normalize_codes and not self.variational
        if self.normalize:
            mean, std = marginal_moments(config.prior, config.latent_dim)
            self.code_norm = nn.BatchNorm1d(config.latent_dim, affine=False)
            self.register_buffer("code_mean", torch.from_numpy(mean))
            self.register_buffer("code_std", torch.from_numpy(std))
        self.calibrated = config.latent_calibrated
        if self.calibrated:  # set by aae/latent_calibration.py; the identity until then
            self.register_buffer("calibration_matrix", torch.eye(config.latent_dim))
            self.register_buffer("calibration_offset", torch.zeros(config.latent_dim))

    def _normalized(self, h: torch.Tensor) -> torch.Tensor:
        return self.code_norm(h) * self.code_std + self.code_mean if self.normalize else h

    def _calibrated(self, z: torch.Tensor) -> torch.Tensor:
        """The latent calibration's whitening, z -> M (z - c); the identity for an encoder without one."""
        if not self.calibrated:
            return z
        return (z - self.calibration_offset.to(z.dtype)) @ self.calibration_matrix.to(z.dtype).T

    def _head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The encoder's raw outputs: (code or mean, log-variance); the log-variance None for a deterministic encoder."""
        h = self.to_latent(self.features(x * 2 - 1).flatten(1))  # the input is centred on 0
        if not self.stochastic:
            return h, None
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean code, log-variance) of q(z|x); the log-variance is None for a deterministic encoder.

        A gaussian posterior's moments are those of its normalized draw at inference, where the normalization is
        the fixed affine map of its running statistics: z = a * (mu + sigma * eps) + b = (a mu + b) + (a sigma) eps.
        """
        if self.calibrated and self.stochastic:
            raise ValueError("a calibrated gaussian posterior has a full covariance: use Encoder.posterior")
        mean, logvar = self._moments(x)
        return self._calibrated(mean), logvar

    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, log-variance) of the normalized code, before any latent calibration."""
        mu, logvar = self._head(x)
        if logvar is None:
            return self._normalized(mu), None
        if self.gaussian and self.normalize:
            norm = self.code_norm
            assert norm.running_mean is not None and norm.running_var is not None
            scale = torch.rsqrt(norm.running_var + norm.eps) * self.code_std
            mu = (mu - norm.running_mean) * scale + self.code_mean
            logvar = logvar + 2 * torch.log(scale)
        return mu, logvar  # the VAE's: never normalized

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean code, scale S) of q(z|x) = N(mean, S S^T) at inference: S [B, D, D] is diagonal, exp(log-variance /
        2), unless a latent calibration rotated it; None for a deterministic encoder."""
        mean, logvar = self._moments(x)
        if logvar is None:
            return self._calibrated(mean), None
        scale = torch.diag_embed(torch.exp(0.5 * logvar))
        if self.calibrated:
            scale = self.calibration_matrix.to(scale.dtype) @ scale
        return self._calibrated(mean), scale

    def sample(self, x: torch.Tensor) -> torch.Tensor:
        """A gaussian posterior's training code: z ~ q(z|x), drawn before the normalization (batch statistics)."""
        mu, logvar = self._head(x)
        assert logvar is not None
        return self._calibrated(self._normalized(mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The code: z for the AAE and the AE, the posterior mean for the VAE; a gaussian posterior's draw in training
        mode (what the AAE's phases train on) and its mean at inference."""
        if self.gaussian and self.training:
            return self.sample(x)
        return self.posterior(x)[0]


def _groups(channels: int) -> int:
    """GroupNorm groups: the largest of 32, 16, ... that divides ``channels``."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


def _norm(kind: str, channels: int, flat: int | None = None) -> nn.Module:
    """A normalization of ``channels`` feature maps, or of a flat vector of ``flat`` features grouped per channel."""
    if kind == "batch":
        return nn.BatchNorm1d(flat) if flat else nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(_groups(channels), flat or channels)
    return nn.Identity()


class ResidualBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))): two 3x3 convolutions, pre-activation (He et al. 2016)."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(norm, channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            _norm(norm, channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.body(x)
        return out


def _up_stage(config: AAEConfig, in_ch: int, out_ch: int) -> list[nn.Module]:
    """One 2x up-sampling stage: ConvTranspose 4x4, or a resize then a 3x3 conv; norm, ReLU, residual blocks."""
    norm = config.decoder_norm
    if config.upsample == "convtranspose":
        layers: list[nn.Module] = [nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=norm == "none")]
    else:
        layers = [nn.Upsample(scale_factor=2, mode=config.upsample), nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=norm == "none")]
    layers += [_norm(norm, out_ch), nn.ReLU(inplace=True)]
    layers += [ResidualBlock(out_ch, norm) for _ in range(config.res_blocks)]
    return layers


def _to_image(config: AAEConfig, in_ch: int) -> list[nn.Module]:
    """The last stage, up to the full resolution: the conv that outputs the image's channels."""
    if config.upsample == "convtranspose":
        return [nn.ConvTranspose2d(in_ch, config.channels, 4, stride=2, padding=1)]
    return [nn.Upsample(scale_factor=2, mode=config.upsample), nn.Conv2d(in_ch, config.channels, 3, padding=1)]


class Decoder(nn.Module):
    """Latent z [B, latent_dim] (and, conditional, the one-hot y [B, condition_dim]) -> image [B, C, H, W] in [0, 1].

    The last conv and the sigmoid run in float32 even under autocast, so the image keeps its precision.
    """

    calibration_inverse: torch.Tensor  # buffers of a latent calibration: z -> M^-1 z + c
    calibration_offset: torch.Tensor

    def __init__(self, config: AAEConfig) -> None:
        super().__init__()
        widths = list(reversed(_widths(config)))
        self.first_width = widths[0]
        self.condition_dim = config.condition_dim
        self.calibrated = config.latent_calibrated
        if self.calibrated:  # the inverse of the encoder's calibration: z -> M^-1 z + c (aae/latent_calibration.py)
            self.register_buffer("calibration_inverse", torch.eye(config.latent_dim))
            self.register_buffer("calibration_offset", torch.zeros(config.latent_dim))
        self.from_latent = nn.Sequential(
            nn.Linear(config.latent_dim + self.condition_dim, widths[0] * 4 * 4, bias=config.decoder_norm == "none"),
            _norm(config.decoder_norm, widths[0], flat=widths[0] * 4 * 4),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for in_ch, out_ch in pairwise(widths):
            layers += _up_stage(config, in_ch, out_ch)
        layers += _to_image(config, widths[-1])
        self.features = nn.Sequential(*layers)

    @property
    def last_layer(self) -> nn.Module:
        """The conv that outputs the image (the adaptive adversarial weight compares gradients there)."""
        return self.features[-1]

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.calibrated:
            z = z @ self.calibration_inverse.to(z.dtype).T + self.calibration_offset.to(z.dtype)
        if self.condition_dim:
            if y is None:
                raise ValueError(f"a conditional decoder needs its condition y [B, {self.condition_dim}]")
            z = torch.cat([z, y.to(z.dtype)], dim=1)
        h = self.from_latent(z).view(z.shape[0], self.first_width, 4, 4)
        for i in range(len(self.features) - 1):
            h = self.features[i](h)
        if torch.is_autocast_enabled(h.device.type):
            with torch.autocast(h.device.type, enabled=False):
                return torch.sigmoid(self.last_layer(h.float()))
        return torch.sigmoid(self.last_layer(h))


class LatentDiscriminator(nn.Module):
    """MLP on z: the logit that z was drawn from the prior rather than produced by the encoder.

    A conditional model's discriminator also sees the image's one-hot labels y, with the prior sample paired
    with the same y: the encoder then has to make q(z | y) match p(z) for every y, so z carries no label
    information (as the latent adversary of Fader Networks, Lample et al. 2017) and the decoder must read
    the labels from y. That is what makes a conditioned sample show the values it was asked for.
    """

    def __init__(self, config: AAEConfig) -> None:
        super().__init__()
        hidden = config.disc_hidden
        self.condition_dim = config.condition_dim
        self.net = nn.Sequential(
            nn.Linear(config.latent_dim + config.condition_dim, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.condition_dim:
            if y is None:
                raise ValueError(f"a conditional model's discriminator needs the labels y [B, {self.condition_dim}]")
            z = torch.cat([z, y.to(z.dtype)], dim=1)
        out: torch.Tensor = self.net(z).squeeze(1)
        return out


def images_uint8(x: torch.Tensor) -> torch.Tensor:
    """Decoder output [B, C, H, W] in [0, 1] -> uint8 images [B, H, W, C], rounded as the exported graph rounds."""
    return torch.clamp(torch.round(x * 255.0), 0.0, 255.0).permute(0, 2, 3, 1).to(torch.uint8)


class AAE(nn.Module):
    """The networks of one config: encoder and decoder, and the discriminator when kind is "aae"."""

    discriminator: LatentDiscriminator

    def __init__(self, config: AAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        if config.kind == "aae":
            self.discriminator = LatentDiscriminator(config)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.encoder(x), y)


DECODER_CHOICES = ("auto", "ema", "live")


def exported_decoder(checkpoint: dict[str, Any], choice: str = "auto") -> str:
    """Which decoder weights a checkpoint's tools use: "ema" (the weight average) or "live".

    "auto" follows the checkpoint's summary (``export_decoder``, set by training's flag), and is "live" for
    checkpoints without an average.
    """
    if choice not in DECODER_CHOICES:
        raise ValueError(f"decoder must be one of {', '.join(DECODER_CHOICES)}, got {choice!r}")
    has_ema = checkpoint.get("decoder_ema") is not None
    if choice == "ema" and not has_ema:
        raise ValueError("the checkpoint has no EMA decoder")
    if choice == "auto":
        return "ema" if has_ema and checkpoint.get("summary", {}).get("export_decoder") == "ema" else "live"
    return choice


def load_checkpoint(path: str, map_location: str = "cpu", decoder: str = "auto") -> tuple[AAE, dict[str, Any]]:
    """Rebuild an AAE from a checkpoint written by ``aae.train``; returns (model, checkpoint).

    ``decoder``: "auto" (what the checkpoint says to ship), "ema" or "live" (see ``exported_decoder``).
    """
    # TorchVersion is allowed so that checkpoints recording torch.__version__ load safely too.
    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    model = AAE(AAEConfig.from_dict(checkpoint["config"]))
    model.load_state_dict(checkpoint["model"])
    if exported_decoder(checkpoint, decoder) == "ema":
        model.decoder.load_state_dict(checkpoint["decoder_ema"])
    model.eval()
    return model, checkpoint
