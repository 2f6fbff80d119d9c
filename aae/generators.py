"""What ``synthgen evaluate`` measures: a decoder of prior latents, and an encoder when there is one.

Two implementations of one interface:

- ``PackageGenerator``: a model package, its decoder.onnx run by onnxruntime on CPU, so the metrics
  describe exactly what is served. Its encoder is the package's ``encoder.onnx`` when it has one,
  else the torch encoder of the checkpoint it was exported from (``--checkpoint``), else none.
- ``CheckpointGenerator``: a torch checkpoint, for the AE / VAE / AAE comparison runs.

Both draw latents with the contract's counter-based ``prior_latents``: sample i of seed s is image i of a
job with seed s. A conditional model decodes rows ``[z | y]``, as the service does (``sample_inputs``): the
one-hot attributes ``y`` of sample i are drawn from the training marginals from (s, i), as for a job that
names none (``synthgen.core.crowd.Crowd``), so its samples are unconditional samples of the model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aae.metrics import midpoints
from aae.model import AAE, images_uint8, load_checkpoint
from synthgen.core.attributes import AttributeSpace
from synthgen.core.crowd import Crowd
from synthgen.core.errors import ModelPackageError
from synthgen.core.latents import interpolate_inputs, prior_latents
from synthgen.core.package import ENCODER_OUTPUT, ModelPackage, graph_metadata_mismatch, load_package, sha256_file
from synthgen.core.similarity import CALIBRATION_SAMPLES, CALIBRATION_SEED, calibrate_threshold

log = logging.getLogger(__name__)
BATCH = 256


class EncoderUnavailable(RuntimeError):
    """The model has no encoder here: encoder metrics (prior fit, reconstructions) cannot be computed."""


def _batched(fn: Any, x: np.ndarray) -> np.ndarray:
    if len(x) == 0:
        raise ValueError("nothing to run: an empty batch")
    return np.concatenate([fn(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])


class TorchEncoder:
    """A checkpoint's encoder on uint8 NHWC images: the (mean) code, or for a stochastic encoder (the VAE's, an AAE's
    gaussian posterior) a posterior sample."""

    def __init__(self, model: AAE) -> None:
        self.model = model
        self.variational = model.encoder.stochastic

    @torch.no_grad()
    def _run(self, images: np.ndarray, sample: bool, generator: torch.Generator) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)
        mu, scale = self.model.encoder.posterior(x)
        if sample and scale is not None:
            mu = mu + (scale @ torch.randn(mu.shape, generator=generator).unsqueeze(-1)).squeeze(-1)
        out: np.ndarray = mu.numpy().astype(np.float32)
        return out

    def __call__(self, images: np.ndarray, sample: bool = False, seed: int = 0) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        return _batched(lambda x: self._run(x, sample, generator), images)


class OnnxDecoder:
    """A package's ``decoder.onnx`` on CPU: z (and y) -> uint8 NHWC images, refused unless its metadata match the
    manifest."""

    def __init__(self, package: ModelPackage) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(package.decoder_path), providers=["CPUExecutionProvider"])
        wrong = graph_metadata_mismatch(package, self.session.get_modelmeta().custom_metadata_map)
        if wrong:
            raise ModelPackageError(f"{package.decoder_path}: graph metadata {wrong} does not match manifest {package.ref}")

    def __call__(self, z: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        feeds = {"z": np.ascontiguousarray(z, dtype=np.float32)}
        if y is not None:
            feeds["y"] = np.ascontiguousarray(y, dtype=np.float32)
        return np.asarray(self.session.run(["images"], feeds)[0], dtype=np.uint8)


class OnnxEncoder:
    """A package's ``encoder.onnx``: uint8 NHWC images -> z (for a VAE, the posterior mean). An encoder whose q(z|x)
    is a Gaussian also gives its log-variance (``log_var_output``), or after a latent calibration its scale matrix
    (``scale_output``), and ``sample`` then draws z ~ q(z|x)."""

    def __init__(self, path: Path, log_var_output: str | None = None, scale_output: str | None = None) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.log_var_output = log_var_output
        self.scale_output = scale_output
        self.variational = log_var_output is not None or scale_output is not None

    def _run(self, images: np.ndarray, sample: bool, rng: np.random.Generator) -> np.ndarray:
        feed = {"images": np.ascontiguousarray(images)}
        if not (sample and self.variational):
            return np.asarray(self.session.run([ENCODER_OUTPUT], feed)[0], dtype=np.float32)
        spread = self.scale_output or self.log_var_output
        mean, moments = self.session.run([ENCODER_OUTPUT, spread], feed)
        noise = rng.standard_normal(mean.shape)
        # z = mean + S eps, or mean + sigma * eps
        z = mean + (np.einsum("bij,bj->bi", moments, noise) if self.scale_output else noise * np.exp(0.5 * moments))
        return np.asarray(z, dtype=np.float32)

    def __call__(self, images: np.ndarray, sample: bool = False, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return _batched(lambda x: self._run(x, sample, rng), images)


Encoder = TorchEncoder | OnnxEncoder


class Generator:
    """Decode prior latents to uint8 images [N, H, W, C]; encode images to codes when an encoder is present.

    What ``decode`` takes is the decoder's whole input, one row per image: z, or ``[z | y]`` for a conditional
    model (``attributes`` not empty; y its one-hot attributes, ``AttributeSpace.one_hot``).
    """

    attributes: AttributeSpace = AttributeSpace({})
    name: str
    kind: str  # "aae", "ae" or "vae"
    prior: dict[str, Any]
    latent_dim: int
    image_size: int
    training: dict[str, Any]  # the training summary of the checkpoint (data, data_seed, images, seconds, ...)
    uniqueness_threshold: float
    encoder: Encoder | None = None
    encoder_source: str = ""  # where the encoder comes from, or why there is none

    def _decode(self, z: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def decode(self, rows: np.ndarray) -> np.ndarray:
        """Decode inputs [N, latent_dim (+ condition_dim)] -> images."""
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.latent_dim + self.attributes.dim:
            raise ValueError(f"expected decode inputs [N, {self.latent_dim + self.attributes.dim}], got {rows.shape}")
        dim, conditional = self.latent_dim, bool(self.attributes)
        return _batched(lambda x: self._decode(x[:, :dim], x[:, dim:] if conditional else None), rows)

    def sample_z(self, n: int, seed: int, truncation: float | None = None, start: int = 0) -> np.ndarray:
        """Latents of images ``start`` .. ``start + n - 1`` of a job with this seed (and truncation)."""
        return prior_latents(self.prior, seed, np.arange(start, start + n), self.latent_dim, truncation)

    def sample_inputs(self, n: int, seed: int, truncation: float | None = None, start: int = 0) -> np.ndarray:
        """Decode inputs of images ``start`` .. ``start + n - 1`` of a job with this seed: their latents, and for a
        conditional model their attributes drawn from the training marginals (a job that names none)."""
        indices = np.arange(start, start + n)
        z = self.sample_z(n, seed, truncation, start)
        if not self.attributes:
            return z
        return self.with_condition(z, self.attributes.one_hot(Crowd().codes(self.attributes, seed, n, indices)))

    def with_condition(self, z: np.ndarray, condition: np.ndarray | None) -> np.ndarray:
        """Decode inputs of latents z and, for a conditional model, their one-hot attributes (required then)."""
        if not self.attributes:
            return np.asarray(z, dtype=np.float32)
        if condition is None:
            raise ValueError(f"{self.name} is conditional: decoding needs the images' attributes")
        return np.concatenate([z, condition], axis=1).astype(np.float32)

    def interpolate(self, a: np.ndarray, b: np.ndarray, t: np.ndarray, method: str = "slerp") -> np.ndarray:
        """Decode inputs along the path from row a to row b, as the service's interpolations walk it."""
        return interpolate_inputs(a, b, t, method, self.latent_dim)

    def midpoints(self, a: np.ndarray, b: np.ndarray, method: str = "slerp") -> np.ndarray:
        """The halfway rows of pairs (a_i, b_i) [N, D]: ``interpolate`` at t = 1/2, for many pairs at once."""
        dim = self.latent_dim
        return np.concatenate([midpoints(a[:, :dim], b[:, :dim], method), (a[:, dim:] + b[:, dim:]) / 2], axis=1)

    def encode(self, images: np.ndarray, sample: bool = False, seed: int = 0) -> np.ndarray:
        """Codes of images; with ``sample``, a VAE's torch encoder draws z ~ q(z|x) instead of taking its mean."""
        if self.encoder is None:
            raise EncoderUnavailable(self.encoder_source)
        return self.encoder(images, sample, seed)

    def codes_description(self, sample: bool) -> str:
        if self.encoder is not None and self.encoder.variational and sample:
            return "posterior samples z ~ q(z|x)"
        return "posterior means" if self.kind == "vae" else "deterministic codes"

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name, "kind": self.kind, "prior": _prior_summary(self.prior), "latent_dim": self.latent_dim}
        if self.attributes:
            out["attributes"] = {"names": list(self.attributes.names), "condition_dim": self.attributes.dim}
        return out


def _prior_summary(prior: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in prior.items() if k != "means"}  # a mixture's means are in the manifest


def _config_summary(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "prior": _prior_summary(config["prior"])} if "prior" in config else dict(config)


class CheckpointGenerator(Generator):
    """A torch checkpoint written by ``aae.train``; the decoder rounds exactly as the exported graph does."""

    def __init__(self, path: str | Path, decoder: str = "auto") -> None:
        """``decoder``: the checkpoint's EMA or live decoder weights, or (auto) the ones its training chose."""
        self.model, checkpoint = load_checkpoint(str(path), decoder=decoder)
        config = self.model.config
        self.path = Path(path)
        self.name, self.kind, self.prior = self.path.parent.name, config.kind, config.prior
        self.latent_dim, self.image_size = config.latent_dim, config.image_size
        self.attributes = config.attribute_space
        self.training = dict(checkpoint.get("summary", {}))
        self.encoder, self.encoder_source = TorchEncoder(self.model), f"torch checkpoint {self.path}"
        calibration = self.decode(self.sample_inputs(CALIBRATION_SAMPLES, CALIBRATION_SEED))
        self.uniqueness_threshold = calibrate_threshold(calibration)

    @torch.no_grad()
    def _decode(self, z: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        condition = None if y is None else torch.from_numpy(np.ascontiguousarray(y))
        out: np.ndarray = images_uint8(self.model.decoder(torch.from_numpy(np.ascontiguousarray(z)), condition)).numpy()
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "checkpoint": str(self.path), "config": _config_summary(self.model.config.to_dict())}


def _package_encoder(package: ModelPackage, checkpoint: str | Path | None) -> tuple[Encoder | None, str]:
    if package.encoder_path is not None:
        encoder = OnnxEncoder(package.encoder_path, package.encoder_log_var_output, package.encoder_scale_output)
        return encoder, f"the package's {package.encoder_path.name}"
    if checkpoint is None:
        return None, "the package has no encoder.onnx and no --checkpoint was given"
    if sha256_file(Path(checkpoint)) != package.manifest["checkpoint_sha256"]:
        raise ValueError(f"{checkpoint}: not the checkpoint {package.ref} was exported from (its sha256 differs)")
    model, _ = load_checkpoint(str(checkpoint))
    return TorchEncoder(model), f"torch checkpoint {checkpoint}"


class PackageGenerator(Generator):
    """A model package: its decoder.onnx on CPU, exactly what is served."""

    def __init__(self, path: str | Path, checkpoint: str | Path | None = None) -> None:
        self.package = load_package(path)
        self.decoder = OnnxDecoder(self.package)
        manifest = self.package.manifest
        self.name, self.kind, self.prior = self.package.ref, manifest["config"].get("kind", "aae"), manifest["prior"]
        self.latent_dim, self.image_size = self.package.latent_dim, self.package.image_shape[0]
        self.attributes = self.package.attributes
        self.training = dict(manifest.get("training", {}))
        self.uniqueness_threshold = self.package.uniqueness_threshold
        self.encoder, self.encoder_source = _package_encoder(self.package, checkpoint)

    def _decode(self, z: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        return self.decoder(z, y)

    def describe(self) -> dict[str, Any]:
        manifest = self.package.manifest
        extra = {
            "version": self.package.version,
            "sha256": self.package.sha256,
            "config": _config_summary(manifest.get("config", {})),
        }
        training = manifest.get("training", {})
        if training.get("prior_sliced_weight"):
            extra["prior_sliced_weight"] = training["prior_sliced_weight"]
        if training.get("latent_calibration"):
            extra["latent_calibration"] = training["latent_calibration"]
        return {**super().describe(), "name": self.package.name, "ref": self.package.ref, **extra}
