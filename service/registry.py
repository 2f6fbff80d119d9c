"""Loaded models: one onnxruntime session per verified package, looked up by ``name`` or ``name@version``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.errors import ModelPackageError, NotFound
from service.latents import prior_latents
from service.model_package import ModelPackage, discover_packages
from service.privacy import TrainingIndex

log = logging.getLogger(__name__)


def pick_providers(preference: str) -> list[str]:
    """CUDA when asked for (or 'auto') and present, else CPU."""
    available = ort.get_available_providers()
    if preference in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if preference == "cuda":
        log.warning("CUDA requested but onnxruntime has no CUDAExecutionProvider (%s); using CPU", available)
    return ["CPUExecutionProvider"]


@dataclass
class LoadedModel:
    """A package with its onnxruntime session; ``decode`` is thread-safe (ORT sessions are)."""

    package: ModelPackage
    session: ort.InferenceSession
    _training_index: TrainingIndex | None = None

    def training_index(self) -> TrainingIndex | None:
        """The privacy guard's index of training thumbnails, loaded on first use (None without one)."""
        path = self.package.privacy_index_path
        if path is not None and self._training_index is None:
            self._training_index = TrainingIndex.load(path, self.package.privacy_threshold)
        return self._training_index

    @property
    def provider(self) -> str:
        return str(self.session.get_providers()[0])

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Latents float32 [B, latent_dim] -> images uint8 [B, H, W, C]."""
        assert z.ndim == 2 and z.shape[1] == self.package.latent_dim, z.shape
        out = self.session.run(["images"], {"z": np.ascontiguousarray(z, dtype=np.float32)})[0]
        return np.asarray(out, dtype=np.uint8)

    def latents(self, seed: int, indices: np.ndarray, truncation: float | None = None) -> np.ndarray:
        return prior_latents(self.package.manifest["prior"], seed, indices, self.package.latent_dim, truncation)

    def generate(self, seed: int, indices: np.ndarray, truncation: float | None = None) -> np.ndarray:
        """Images for (seed, indices): the determinism contract in one call."""
        return self.decode(self.latents(seed, indices, truncation))


def decoder_for(package: ModelPackage, providers: list[str]) -> Path:
    """The fp16 decoder on CUDA, when the package has one; the fp32 decoder everywhere else (never fp16 on CPU)."""
    if providers[0] == "CUDAExecutionProvider" and package.decoder_fp16_path is not None:
        return package.decoder_fp16_path
    return package.decoder_path


def _check_metadata(package: ModelPackage, path: Path, session: ort.InferenceSession) -> None:
    meta = session.get_modelmeta().custom_metadata_map
    expected = {
        "synthgen.name": package.name,
        "synthgen.version": package.version,
        "synthgen.latent_dim": str(package.latent_dim),
    }
    wrong = {k: meta.get(k) for k, v in expected.items() if meta.get(k) != v}
    if wrong:
        raise ModelPackageError(f"{path}: graph metadata {wrong} does not match manifest {package.ref} (mismatched package?)")


def open_session(package: ModelPackage, providers: list[str], threads: int = 0, spinning: bool = False) -> ort.InferenceSession:
    """An onnxruntime session of the package's decoder, refused unless its names, shapes and metadata match."""
    path = decoder_for(package, providers)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    # Idle pool threads sleep instead of spinning: on a machine shared with the encoder threads, the
    # api and Redis, spinning burns the cores that they need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
        raise ModelPackageError(f"{path}: onnxruntime cannot load it ({exc})") from exc
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != ["z"] or inputs[0].shape[1] != package.latent_dim:
        raise ModelPackageError(
            f"{path}: expected input z [batch, {package.latent_dim}], got {[(i.name, i.shape) for i in inputs]}"
        )
    if [o.name for o in outputs] != ["images"] or list(outputs[0].shape[1:]) != list(package.image_shape):
        raise ModelPackageError(
            f"{path}: expected output images [batch, {', '.join(map(str, package.image_shape))}], "
            f"got {[(o.name, o.shape) for o in outputs]}"
        )
    _check_metadata(package, path, session)
    return session


class ModelRegistry:
    """Every model a process serves, and which one is the default."""

    def __init__(self, models: list[LoadedModel], default: str) -> None:
        self._by_ref = {m.package.ref: m for m in models}
        self._latest: dict[str, LoadedModel] = {}
        for m in sorted(models, key=lambda m: _version_key(m.package.version)):
            self._latest[m.package.name] = m
        self.default = self.get(default)

    @classmethod
    def from_directory(
        cls, models_dir: Path, default: str, provider: str = "auto", threads: int = 0, spinning: bool = False
    ) -> ModelRegistry:
        providers = pick_providers(provider)
        models = [LoadedModel(p, open_session(p, providers, threads, spinning)) for p in discover_packages(models_dir)]
        try:
            registry = cls(models, default)
        except NotFound as exc:
            raise ModelPackageError(f"{models_dir}: default model {default!r} not found ({exc.message})") from exc
        for m in models:
            log.info("model %s (sha256 %s…) on %s", m.package.ref, m.package.sha256[:12], m.provider)
        return registry

    def get(self, ref: str | None) -> LoadedModel:
        """Look up ``name`` (its latest version), ``name@version``, or the default for None."""
        if ref is None:
            return self.default
        model = self._by_ref.get(ref) if "@" in ref else self._latest.get(ref)
        if model is None:
            raise NotFound(f"unknown model {ref!r}; available: {sorted(self._by_ref)}", {"model": ref})
        return model

    def all(self) -> list[LoadedModel]:
        return list(self._by_ref.values())


def _version_key(version: str) -> tuple[int, ...] | tuple[float, str]:
    parts = version.split(".")
    if all(p.isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return (float("inf"), version)
