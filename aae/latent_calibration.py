"""The latent calibration: an affine map, fitted after training, that whitens the codes of the training images.

The AAE's regularization matches the shape of q(z) to the prior, but at the end of a long run the codes of a
conditional model still have a covariance whose eigenvalues run from about 0.1 to 3, while each coordinate has
variance 1 (bench/results/ablation-prior-matching/README.md). The card's two-sample test sees mostly that. The
calibration fits the codes' mean c and covariance C = V diag(w) V^T on training images (posterior samples, for a
gaussian posterior: the aggregate q(z) that the prior fit measures) and makes the model say the same in whitened
coordinates:

- the encoder ends in z -> M (z - c), with M = C^(-1/2) = V diag(w^(-1/2)) V^T (ZCA whitening: the rotation
  that moves the codes least, Kessy et al. 2018);
- the decoder starts with z -> M^-1 z + c, on its z columns (a conditional decoder's attributes pass as they are).

decode(encode(x)) is the same function, so reconstructions do not change. Prior samples z ~ N(0, I) now decode from
M^-1 z + c: from the Gaussian that fits the training codes, the density that Ghosh et al. (2020, "From Variational
to Deterministic Autoencoders") fit ex post, here folded into the model so that the prior stays N(0, I) and the
service, which only decodes prior samples, needs no change. A second calibration composes with the first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aae.model import AAE, AAEConfig

CALIBRATION_IMAGES = 10000  # training images whose codes the map is fitted on
MIN_EIGENVALUE = 1e-6  # covariance eigenvalues below this (a collapsed direction) are refused


class CalibrationError(ValueError):
    """The codes cannot be whitened (too few of them, or a direction without variance)."""


@dataclass(frozen=True)
class Whitening:
    matrix: np.ndarray  # M [D, D]
    inverse: np.ndarray  # M^-1 [D, D]
    offset: np.ndarray  # c [D]
    eigenvalues: np.ndarray  # of the codes' covariance, ascending

    def apply(self, codes: np.ndarray) -> np.ndarray:
        return (codes - self.offset) @ self.matrix.T


def fit_whitening(codes: np.ndarray) -> Whitening:
    """The ZCA whitening of codes [N, D] (N > D)."""
    codes = np.asarray(codes, dtype=np.float64)
    n, dim = codes.shape
    if n <= dim:
        raise CalibrationError(f"{n} codes cannot fit the covariance of {dim} dimensions; give more images")
    offset = codes.mean(0)
    eigenvalues, vectors = np.linalg.eigh(np.cov(codes, rowvar=False))
    if eigenvalues[0] < MIN_EIGENVALUE:
        raise CalibrationError(f"the codes have no variance along a direction (eigenvalue {eigenvalues[0]:.2e})")
    matrix = vectors @ np.diag(eigenvalues**-0.5) @ vectors.T
    inverse = vectors @ np.diag(eigenvalues**0.5) @ vectors.T
    return Whitening(matrix, inverse, offset, eigenvalues)


def _compose(old: Whitening | None, new: Whitening) -> Whitening:
    """new after old: z -> M2 (M1 (z - c1) - c2) = M2 M1 (z - (c1 + M1^-1 c2))."""
    if old is None:
        return new
    return Whitening(new.matrix @ old.matrix, old.inverse @ new.inverse, old.offset + old.inverse @ new.offset, new.eigenvalues)


def current_whitening(model: AAE) -> Whitening | None:
    """The calibration a model already has (None: none)."""
    if not model.config.latent_calibrated:
        return None
    encoder, decoder = model.encoder, model.decoder
    return Whitening(
        encoder.calibration_matrix.double().numpy(),
        decoder.calibration_inverse.double().numpy(),
        encoder.calibration_offset.double().numpy(),
        np.array([]),
    )


def calibrate_checkpoint(checkpoint: dict[str, Any], codes: np.ndarray) -> tuple[dict[str, Any], Whitening]:
    """A checkpoint whose model (and EMA decoder) carry the whitening of ``codes``, which the checkpoint's own
    encoder gave; composed with any calibration it has. It keeps no training state: it is a finished model, which
    tools, export and a fine-tune (``--init``) take, and not a run to resume."""
    config = AAEConfig.from_dict(checkpoint["config"])
    if config.kind == "vae":
        raise CalibrationError("a latent calibration is for the AAE and the AE (the VAE's KL term sets its codes' moments)")
    before = AAE(config)
    before.load_state_dict(checkpoint["model"])
    fitted = fit_whitening(codes)
    whitening = _compose(current_whitening(before), fitted)
    calibrated = replace(config, latent_calibrated=True)
    model = AAE(calibrated)
    state = {k: v for k, v in checkpoint["model"].items() if "calibration_" not in k}
    model.load_state_dict(state, strict=False)  # the calibration buffers start as the identity

    def as_tensor(value: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))

    with torch.no_grad():
        model.encoder.calibration_matrix.copy_(as_tensor(whitening.matrix))
        model.encoder.calibration_offset.copy_(as_tensor(whitening.offset))
        model.decoder.calibration_inverse.copy_(as_tensor(whitening.inverse))
        model.decoder.calibration_offset.copy_(as_tensor(whitening.offset))
    out = {k: v for k, v in checkpoint.items() if k not in ("training_state", "model", "decoder_ema", "config")}
    out["config"] = calibrated.to_dict()
    out["model"] = model.state_dict()
    if checkpoint.get("decoder_ema") is not None:  # the EMA decoder takes the same inverse map
        maps = {k: v for k, v in model.decoder.state_dict().items() if k.startswith("calibration_")}
        out["decoder_ema"] = {**{k: v for k, v in checkpoint["decoder_ema"].items() if "calibration_" not in k}, **maps}
    record = {
        "images": len(codes),
        "codes": "posterior samples z ~ q(z|x)" if config.posterior == "gaussian" else "codes",
        "eigenvalues_before": [round(float(w), 4) for w in fitted.eigenvalues],
    }
    # in the training summary, which a package's manifest keeps as its "training"
    out["summary"] = {**checkpoint.get("summary", {}), "latent_calibration": record}
    return out, fitted


def training_codes(checkpoint_path: str | Path, count: int, seed: int, cache_dir: str | Path) -> np.ndarray:
    """The codes the calibration is fitted on: ``count`` training images of the checkpoint's run, encoded by its
    encoder (posterior samples for a gaussian posterior, drawn with ``seed``)."""
    from aae.evaluate import training_images
    from aae.generators import CheckpointGenerator

    generator = CheckpointGenerator(str(checkpoint_path))
    images = training_images(generator.training, generator.image_size, count, seed, cache_dir)
    return generator.encode(images, sample=True, seed=seed)


def calibrate(
    path: str | Path, out: str | Path, count: int = CALIBRATION_IMAGES, seed: int = 0, cache_dir: str | Path = "cache"
) -> dict[str, Any]:
    """Write ``path``'s calibrated checkpoint to ``out``; returns its ``latent_calibration`` record."""
    from aae.train import _atomic_save, read_checkpoint

    checkpoint = read_checkpoint(path)
    calibrated, _ = calibrate_checkpoint(checkpoint, training_codes(path, count, seed, cache_dir))
    record: dict[str, Any] = calibrated["summary"]["latent_calibration"]
    record.update(source=str(path), seed=seed)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(calibrated, Path(out))
    return record
