"""A tiny conditional model package, trained in seconds: the decoder takes z and the avatars' one-hot labels.

``build_conditional_package(models_dir)`` trains a 32px conditional AAE for a few steps on avatar faces
(whose labels come with them, aae/labels.py) and exports it, without an encoder, as package
``tiny-cond`` version 1 under ``models_dir``. The session fixture ``tiny_conditional`` (tests/conftest.py)
builds it once; a service started on ``tiny_conditional.models_dir`` serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NAME = "tiny-cond"
VERSION = "1"


@dataclass(frozen=True)
class ConditionalModel:
    checkpoint: Path  # the torch checkpoint the package was exported from
    package: Path  # the package folder, models_dir / NAME
    name: str = NAME
    version: str = VERSION

    @property
    def models_dir(self) -> Path:
        """The folder holding the package (and only it): a service's models folder."""
        return self.package.parent

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def train_conditional_checkpoint(out_dir: Path, images: int = 192, steps: int = 20) -> Path:
    """A few steps of a tiny conditional AAE on ``images`` labeled avatar faces; returns its checkpoint.

    One thread: on a busy machine, torch's thread pool only adds contention to a model this small.
    """
    from aae.model import AAEConfig
    from aae.train import TrainOptions, train

    options = TrainOptions(
        data="avatars",
        count=images,
        epochs=2,
        batch_size=16,
        max_steps=steps,
        threads=1,
        conditional=True,
        out_dir=str(out_dir),
        cache_dir=str(out_dir / "cache"),
        config=AAEConfig(image_size=32, latent_dim=8, base_width=8, disc_hidden=32),
    )
    return train(options)


def build_conditional_package(models_dir: Path, work_dir: Path | None = None) -> ConditionalModel:
    """Train the tiny conditional model (in ``work_dir``, default beside ``models_dir``) and export it into
    ``models_dir`` as ``tiny-cond`` version 1, without an encoder."""
    from export.package import export_package

    work = work_dir or models_dir.parent / f"{models_dir.name}-training"
    checkpoint = train_conditional_checkpoint(work)
    package = models_dir / NAME
    export_package(checkpoint, package, name=NAME, version=VERSION, with_encoder=False)
    return ConditionalModel(checkpoint, package)
