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

MODEL_KINDS = ("aae", "ae", "vae")


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
        # the VAE's encoder also predicts log sigma^2 of q(z|x): twice the outputs
        self.to_latent = nn.Linear(in_ch * 4 * 4, config.latent_dim * (2 if config.kind == "vae" else 1))
        # the VAE's KL term already sets the moments of its codes: no normalization there
        self.normalize = config.normalize_codes and not self.variational
        if self.normalize:
            mean, std = marginal_moments(config.prior, config.latent_dim)
            self.code_norm = nn.BatchNorm1d(config.latent_dim, affine=False)
            self.register_buffer("code_mean", torch.from_numpy(mean))
            self.register_buffer("code_std", torch.from_numpy(std))

    def distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(code, log-variance): the log-variance is None except for the VAE."""
        h = self.to_latent(self.features(x * 2 - 1).flatten(1))  # the input is centred on 0
        if self.variational:
            return h[:, : self.latent_dim], h[:, self.latent_dim :]
        if self.normalize:
            h = self.code_norm(h) * self.code_std + self.code_mean
        return h, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic code: z for the AAE and the AE, the posterior mean for the VAE."""
        return self.distribution(x)[0]


class Decoder(nn.Module):
    """Latent z [B, latent_dim] -> image [B, C, H, W] in [0, 1]."""

    def __init__(self, config: AAEConfig) -> None:
        super().__init__()
        widths = list(reversed(_widths(config)))
        self.first_width = widths[0]
        self.from_latent = nn.Sequential(
            nn.Linear(config.latent_dim, widths[0] * 4 * 4, bias=False),
            nn.BatchNorm1d(widths[0] * 4 * 4),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for in_ch, out_ch in pairwise(widths):
            layers += [
                nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.ConvTranspose2d(widths[-1], config.channels, 4, stride=2, padding=1))
        self.features = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(z.shape[0], self.first_width, 4, 4)
        return torch.sigmoid(self.features(h))


class LatentDiscriminator(nn.Module):
    """MLP on z: the logit that z was drawn from the prior rather than produced by the encoder."""

    def __init__(self, config: AAEConfig) -> None:
        super().__init__()
        hidden = config.disc_hidden
        self.net = nn.Sequential(
            nn.Linear(config.latent_dim, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(1)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def load_checkpoint(path: str, map_location: str = "cpu") -> tuple[AAE, dict[str, Any]]:
    """Rebuild an AAE from a checkpoint written by ``aae.train``; returns (model, checkpoint)."""
    # TorchVersion is allowed so that checkpoints recording torch.__version__ load safely too.
    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    model = AAE(AAEConfig.from_dict(checkpoint["config"]))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, checkpoint
