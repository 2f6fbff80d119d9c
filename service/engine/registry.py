"""Loaded models: onnxruntime sessions of each verified package, looked up by ``name`` or ``name@version``."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.engine.labeling import Labeler, Predicted
from service.engine.sessions import Runner, make_runner, open_session, pick_providers
from service.settings import Settings
from synthgen.core.attributes import AttributeSpace
from synthgen.core.crowd import Crowd
from synthgen.core.errors import ModelPackageError, NotFound
from synthgen.core.latents import Seeds
from synthgen.core.package import ModelPackage, discover_packages
from synthgen.core.privacy import TrainingIndex

log = logging.getLogger(__name__)


EVERYONE = Crowd()  # no control: every attribute drawn from the training marginals, from (seed, index)


@dataclass
class LoadedModel:
    """A package with its onnxruntime session; ``decode`` is thread-safe (ORT sessions are).

    What the engine moves is one float32 row per image, the decoder's whole input: ``z`` for an
    unconditional model, ``[z | y]`` for a conditional one (``y`` the one-hot attributes,
    ``AttributeSpace.one_hot``), so batching, the interactive path and IO binding handle one array
    whatever the model. ``inputs`` builds the rows, ``decode`` feeds them to the graph, ``split`` takes
    them apart again.
    """

    package: ModelPackage
    session: ort.InferenceSession
    labeler: Labeler | None = None  # the package's attribute classifier, when it ships one
    _training_index: TrainingIndex | None = None
    # More sessions of the same graph (``Settings.ort_instances``): a batch is split across all of them
    spares: list[ort.InferenceSession] = field(default_factory=list)
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    @property
    def instances(self) -> int:
        """Sessions of the decoder: a batch decodes in as many parts at once."""
        return 1 + len(self.spares)

    def training_index(self) -> TrainingIndex | None:
        """The privacy guard's index of training thumbnails, loaded on first use (None without one)."""
        path = self.package.privacy_index_path
        if path is not None and self._training_index is None:
            self._training_index = TrainingIndex.load(path, self.package.privacy_threshold)
        return self._training_index

    @property
    def provider(self) -> str:
        return str(self.session.get_providers()[0])

    @property
    def attributes(self) -> AttributeSpace:
        """The attributes the decoder is conditioned on (an empty space: unconditional)."""
        return self.package.attributes

    @property
    def row_dim(self) -> int:
        """Columns of a decode row: latent_dim, plus condition_dim for a conditional model."""
        return self.package.latent_dim + self.package.condition_dim

    def feeds(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's inputs of decode rows [B, row_dim]: ``z``, and ``y`` for a conditional model."""
        assert rows.ndim == 2 and rows.shape[1] == self.row_dim, (rows.shape, self.row_dim)
        rows = np.asarray(rows, dtype=np.float32)
        z, y = self.split(rows)
        out = {"z": np.ascontiguousarray(z)}
        if y is not None:
            out["y"] = np.ascontiguousarray(y)
        return out

    def split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Decode rows -> (z [B, latent_dim], y [B, condition_dim] or None for an unconditional model)."""
        dim = self.package.latent_dim
        return rows[:, :dim], (rows[:, dim:] if self.package.condition_dim else None)

    def decode(self, rows: np.ndarray) -> np.ndarray:
        """Decode rows float32 [B, row_dim] -> images uint8 [B, H, W, C].

        With spare sessions, the batch is split into one part per session and the parts decode at once, each on
        its own session (this thread runs the first): no barrier between threads inside each operator, as one
        session of several intra-op threads has. The bytes are the same either way.
        """
        parts = min(self.instances, len(rows))
        if parts <= 1:
            return self._run(self.session, rows)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(self.spares), thread_name_prefix="decode-part")
        pieces = np.array_split(rows, parts)
        others = [self._pool.submit(self._run, s, p) for s, p in zip(self.spares, pieces[1:], strict=False)]
        first = self._run(self.session, pieces[0])
        return np.concatenate([first, *(f.result() for f in others)])

    def _run(self, session: ort.InferenceSession, rows: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["images"], self.feeds(rows))[0], dtype=np.uint8)

    def latents(
        self,
        seed: Seeds,
        indices: np.ndarray,
        truncation: float | None = None,
        crowd: Crowd = EVERYONE,
        sources: np.ndarray | None = None,
    ) -> np.ndarray:
        """z [len(indices), latent_dim] of images ``indices`` of ``seed`` (an identity's code plus variation, in
        identity jobs; ``sources``: see ``Crowd.latents``)."""
        return crowd.latents(self.package.manifest["prior"], seed, indices, self.package.latent_dim, truncation, sources)

    def codes(self, seed: Seeds, indices: np.ndarray, crowd: Crowd = EVERYONE, count: int | None = None) -> np.ndarray | None:
        """Attribute value indices [len(indices), len(attributes)] of the images; None for an unconditional model.

        ``count``: the job's image count, which a ``distribution`` needs for its exact quotas.
        """
        space = self.attributes
        if not space:
            return None
        if count is None:
            if crowd.distribution:
                raise ValueError("a crowd with a distribution needs the job's image count")
            count = 0  # unused: only quotas depend on the count
        return crowd.codes(space, seed, count, indices)

    def inputs(
        self,
        seed: Seeds,
        indices: np.ndarray,
        truncation: float | None = None,
        crowd: Crowd = EVERYONE,
        count: int | None = None,
        sources: np.ndarray | None = None,
    ) -> np.ndarray:
        """Decode rows float32 [len(indices), row_dim] of images ``indices`` of a job: ``z`` or ``[z | y]``
        (``sources``: where each latent's own draw comes from, see ``Crowd.latents``). ``seed`` may be one per
        index, for single images of many seeds at once (a crowd without identities or quotas)."""
        z = self.latents(seed, indices, truncation, crowd, sources)
        codes = self.codes(seed, indices, crowd, count)
        if codes is None:
            return z
        return np.concatenate([z, self.attributes.one_hot(codes)], axis=1)

    def labels(self, rows: np.ndarray) -> list[dict[str, str] | None]:
        """The {name: value} each row was conditioned on (its dominant value, for a blend); None for every row
        of an unconditional model."""
        _, y = self.split(rows)
        if y is None:
            return [None] * len(rows)
        return [*self.attributes.labels(self.attributes.codes_of(y))]

    def predict(self, images: np.ndarray) -> list[Predicted | None]:
        """The classifier's labels of decoded images, one ``{name: {"value", "confidence"}}`` per image; None for
        every image of a package without a classifier."""
        if self.labeler is None:
            return [None] * len(images)
        return [*self.labeler.predict(images)]

    def runner(self, io_binding: str) -> Runner:
        """What the worker's batcher calls: IO binding on CUDA (``auto``), plain ``decode`` on CPU."""
        return make_runner(self, io_binding)

    def generate(self, seed: int, indices: np.ndarray, truncation: float | None = None) -> np.ndarray:
        """Images for (seed, indices): the determinism contract in one call."""
        return self.decode(self.inputs(seed, indices, truncation))


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
        cls,
        models_dir: Path,
        default: str,
        provider: str = "auto",
        threads: int = 0,
        spinning: bool = False,
        instances: int = 1,
    ) -> ModelRegistry:
        """Every package under ``models_dir``; ``instances`` sessions of each decoder share ``threads`` between them
        (0: onnxruntime's default; see ``instance_plan``)."""
        providers = pick_providers(provider)
        count, per_instance = instance_plan(providers, threads, instances)
        models = []
        for p in discover_packages(models_dir):
            sessions = [open_session(p, providers, per_instance, spinning) for _ in range(count)]
            models.append(LoadedModel(p, sessions[0], Labeler.open(p, p.attributes, providers), spares=sessions[1:]))
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


AUTO_INSTANCES_MAX = 4  # beyond this, parts of a batch get too small to pay


def instance_plan(providers: list[str], threads: int, instances: int) -> tuple[int, int]:
    """(sessions, intra-op threads of each) for a decoder.

    ``instances`` 0 means auto: on CUDA one session; on CPU up to AUTO_INSTANCES_MAX sessions sharing the threads
    (``threads``, or every core when 0): two one-thread sessions decoding the halves of a batch at once outrun
    one two-thread session on the whole batch on 2 cores (1.09x in bench/bench_serving.py: no barrier between
    the threads of one operator). Given ``instances``, they share ``threads`` (at least one each; 0 keeps onnxruntime's default).
    """
    if instances == 0:
        if providers[0] != "CPUExecutionProvider":
            return 1, threads
        total = threads or os.cpu_count() or 1
        count = min(total, AUTO_INSTANCES_MAX)
        return count, max(1, total // count)
    if not threads:
        return instances, 0
    return instances, max(1, threads // instances)


def build_registry(settings: Settings, models_dir: Path | None = None, default: str | None = None) -> ModelRegistry:
    """The one way a process loads its models: every package under the models folder, verified, on the
    settings' execution provider, threads and spinning; raises ModelPackageError naming a bad file."""
    return ModelRegistry.from_directory(
        models_dir or settings.models_dir,
        default or settings.default_model,
        settings.execution_provider,
        settings.ort_threads,
        settings.ort_spinning,
        settings.ort_instances,
    )
