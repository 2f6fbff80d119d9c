"""Loaded models: one onnxruntime session per verified package, looked up by ``name`` or ``name@version``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.engine.sessions import Runner, make_runner, open_session, pick_providers
from service.settings import Settings
from synthgen.core.errors import ModelPackageError, NotFound
from synthgen.core.latents import prior_latents
from synthgen.core.package import ModelPackage, discover_packages
from synthgen.core.privacy import TrainingIndex

log = logging.getLogger(__name__)


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

    def runner(self, io_binding: str) -> Runner:
        """What the worker's batcher calls: IO binding on CUDA (``auto``), plain ``decode`` on CPU."""
        return make_runner(self, io_binding)

    def generate(self, seed: int, indices: np.ndarray, truncation: float | None = None) -> np.ndarray:
        """Images for (seed, indices): the determinism contract in one call."""
        return self.decode(self.latents(seed, indices, truncation))


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


def build_registry(settings: Settings, models_dir: Path | None = None, default: str | None = None) -> ModelRegistry:
    """The one way a process loads its models: every package under the models folder, verified, on the
    settings' execution provider, threads and spinning; raises ModelPackageError naming a bad file."""
    return ModelRegistry.from_directory(
        models_dir or settings.models_dir,
        default or settings.default_model,
        settings.execution_provider,
        settings.ort_threads,
        settings.ort_spinning,
    )
