"""Reconstruction losses that need no pretrained network, and the image adversary's losses.

Every function takes float32 tensors (the trainer casts the decoder's output before calling them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RECON_LOSSES = ("mse", "l1", "laplacian")
PYRAMID_LEVELS = 4


def _gaussian_kernel(channels: int, device: torch.device) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device)
    k2 = torch.outer(k, k) / 256.0
    return k2.expand(channels, 1, 5, 5).contiguous()


def laplacian_pyramid(x: torch.Tensor, levels: int = PYRAMID_LEVELS) -> list[torch.Tensor]:
    """Band-pass images, finest first, then the low-pass residual (Burt & Adelson, 5-tap binomial filter)."""
    kernel = _gaussian_kernel(x.shape[1], x.device)
    bands: list[torch.Tensor] = []
    current = x
    for _ in range(levels - 1):
        blurred = F.conv2d(F.pad(current, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])
        down = blurred[:, :, ::2, ::2]
        up = F.interpolate(down, size=current.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(current - up)
        current = down
    bands.append(current)
    return bands


def laplacian_l1(x_hat: torch.Tensor, x: torch.Tensor, levels: int = PYRAMID_LEVELS) -> torch.Tensor:
    """Lap1 of GLO (Bojanowski et al. 2018), sum over levels j of 2^(2j) |L_j(x_hat) - L_j(x)|_1, up to a constant.

    Level j has 4^-j as many pixels as the finest, so the 2^(2j) factor is a plain mean per level: every
    band, the finest detail included, weighs as much as the coarse structure.
    """
    pyramid_hat, pyramid = laplacian_pyramid(x_hat, levels), laplacian_pyramid(x, levels)
    total = x.new_zeros(())
    for a, b in zip(pyramid_hat, pyramid, strict=True):
        total = total + F.l1_loss(a, b)
    return total


def frequency_l1(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the 2D spectra (orthonormal FFT): weighs fine detail like coarse structure."""
    return (torch.fft.rfft2(x_hat, norm="ortho") - torch.fft.rfft2(x, norm="ortho")).abs().mean()


def reconstruction_loss(name: str, x_hat: torch.Tensor, x: torch.Tensor, frequency_weight: float = 0.0) -> torch.Tensor:
    """``name`` is one of ``RECON_LOSSES``; ``frequency_weight`` adds ``frequency_l1``."""
    if name == "mse":
        loss = F.mse_loss(x_hat, x)
    elif name == "l1":
        loss = F.l1_loss(x_hat, x)
    elif name == "laplacian":
        loss = laplacian_l1(x_hat, x)
    else:
        raise ValueError(f"recon loss must be one of {', '.join(RECON_LOSSES)}, got {name!r}")
    if frequency_weight > 0:
        loss = loss + frequency_weight * frequency_l1(x_hat, x)
    return loss


def hinge_discriminator(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean()


def hinge_generator(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def r1_penalty(logits_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over images of the squared norm of d logit / d real (Mescheder et al. 2018); ``real`` requires grad.

    ``real`` as the discriminator sees it (the image adversary's: pixels in [-1, 1], StyleGAN2's scale).

    A patch discriminator's logit of an image is the mean of its patch logits: the gradient of their sum
    would be (patches) times larger, and the penalty (patches)^2 times, which keeps the discriminator flat.
    """
    per_image = logits_real.reshape(logits_real.shape[0], -1).mean(1)
    (grad,) = torch.autograd.grad(per_image.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
