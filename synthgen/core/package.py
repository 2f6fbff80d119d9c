"""Model packages on disk: read and verify ``manifest.json`` and the files it lists by sha256."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from synthgen.core.attributes import AttributeSpace
from synthgen.core.errors import ModelPackageError

MANIFEST_FORMAT = "synthgen.model-package/1"
ENCODER_OUTPUT = "z"  # encoder.onnx's code: z, or the mean of q(z|x)
ENCODER_LOG_VAR_OUTPUT = "z_log_var"  # and an AAE's gaussian posterior's log-variance beside it
# or, once a latent calibration has rotated that posterior, its scale matrix S [B, D, D]: z = mean + S eps
ENCODER_SCALE_OUTPUT = "z_scale"


@lru_cache
def manifest_schema() -> dict[str, Any]:
    """The JSON schema every manifest.json must satisfy (synthgen/core/manifest_schema.json)."""
    text = resources.files("synthgen.core").joinpath("manifest_schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelPackage:
    """A verified package: its manifest and where its decoder lies."""

    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def latent_dim(self) -> int:
        return int(self.manifest["latent_dim"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        image = self.manifest["image"]
        return int(image["height"]), int(image["width"]), int(image["channels"])

    @cached_property
    def attributes(self) -> AttributeSpace:
        """The attributes a conditional decoder takes beside z; an empty space for an unconditional model (built
        once: every single image reads it, and the manifest of a verified package does not change)."""
        return AttributeSpace.from_manifest(self.manifest.get("attributes"))

    @property
    def condition_dim(self) -> int:
        """Columns of the decoder's one-hot input ``y`` (0: unconditional, the decoder takes ``z`` alone)."""
        return self.attributes.dim

    @property
    def prior_std(self) -> float:
        return float(self.manifest["prior"].get("std", 1.0))

    @property
    def decoder_path(self) -> Path:
        return self.path / str(self.manifest["decoder"]["file"])

    @property
    def decoder_fp16_path(self) -> Path | None:
        entry = self.manifest.get("decoder_fp16")
        return self.path / str(entry["file"]) if entry else None

    @property
    def encoder_path(self) -> Path | None:
        entry = self.manifest.get("encoder")
        return self.path / str(entry["file"]) if entry else None

    @property
    def encoder_log_var_output(self) -> str | None:
        """The encoder graph's log-variance output, where its q(z|x) is a Gaussian (None: deterministic codes)."""
        entry = self.manifest.get("encoder") or {}
        return entry.get("log_var_output")

    @property
    def encoder_scale_output(self) -> str | None:
        """The encoder graph's posterior scale output, where a latent calibration rotated its Gaussian q(z|x)."""
        entry = self.manifest.get("encoder") or {}
        return entry.get("scale_output")

    @property
    def classifier_path(self) -> Path | None:
        """The attribute classifier (uint8 images -> per-attribute probabilities), when the package has one."""
        entry = self.manifest.get("classifier")
        return self.path / str(entry["file"]) if entry else None

    @property
    def privacy_index_path(self) -> Path | None:
        """The training set's thumbnails, for ``novel`` jobs (None when the package has none)."""
        entry = self.manifest.get("privacy")
        return self.path / str(entry["file"]) if entry else None

    @property
    def privacy_threshold(self) -> float:
        return float(self.manifest["privacy"]["threshold"])

    @property
    def uniqueness_threshold(self) -> float:
        return float(self.manifest["uniqueness"]["threshold"])

    @property
    def sha256(self) -> str:
        """The identity of the model: the sha256 of its decoder graph."""
        return str(self.manifest["files"][self.manifest["decoder"]["file"]]["sha256"])


def graph_metadata_mismatch(package: ModelPackage, metadata: dict[str, str]) -> dict[str, str | None]:
    """The entries of a graph's metadata that contradict its package's manifest ({} when it belongs to it)."""
    expected = {
        "synthgen.name": package.name,
        "synthgen.version": package.version,
        "synthgen.latent_dim": str(package.latent_dim),
        # recorded only by conditional graphs: an unconditional graph has no entry (None)
        "synthgen.condition_dim": str(package.condition_dim) if package.condition_dim else None,
    }
    return {k: metadata.get(k) for k, v in expected.items() if metadata.get(k) != v}


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise ModelPackageError(f"{manifest_path}: missing; a model package needs a manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelPackageError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ModelPackageError(f"{manifest_path}: expected a JSON object, got {type(manifest).__name__}")
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(manifest_schema()).iter_errors(manifest))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ModelPackageError(f"{manifest_path}: does not match the manifest schema at {where}: {error.message}")
    means = manifest["prior"].get("means") if manifest["prior"]["kind"] == "mixture" else None
    if means is not None and any(len(mean) != manifest["latent_dim"] for mean in means):
        raise ModelPackageError(f"{manifest_path}: every prior mean must have latent_dim={manifest['latent_dim']} values")
    try:
        AttributeSpace.from_manifest(manifest.get("attributes"))
    except (ValueError, KeyError) as exc:
        raise ModelPackageError(f"{manifest_path}: attributes are inconsistent ({exc})") from exc
    return manifest


def load_package(path: str | Path) -> ModelPackage:
    """Read a package and verify every listed file's size and sha256; raise ModelPackageError if not."""
    root = Path(path)
    manifest = _read_manifest(root)
    for filename, entry in manifest["files"].items():
        file_path = root / filename
        if not file_path.is_file():
            raise ModelPackageError(f"{file_path}: missing; listed in {root / 'manifest.json'}")
        size = file_path.stat().st_size
        if size != entry["bytes"]:
            why = "truncated" if size < entry["bytes"] else "replaced or appended to"
            raise ModelPackageError(f"{file_path}: {size} bytes, manifest says {entry['bytes']} ({why}?)")
        actual = sha256_file(file_path)
        if actual != entry["sha256"]:
            raise ModelPackageError(f"{file_path}: sha256 {actual[:12]}… does not match manifest {entry['sha256'][:12]}…")
    for role in ("decoder", "decoder_fp16", "encoder", "classifier", "privacy"):
        if role in manifest and manifest[role]["file"] not in manifest["files"]:
            raise ModelPackageError(f"{root / 'manifest.json'}: {role} file {manifest[role]['file']} is not listed under files")
    return ModelPackage(root, manifest)


def discover_packages(models_dir: str | Path) -> list[ModelPackage]:
    """Every package (a folder with a manifest.json) directly under ``models_dir``, verified."""
    root = Path(models_dir)
    if not root.is_dir():
        raise ModelPackageError(f"{root}: models directory does not exist")
    packages = [load_package(p) for p in sorted(root.iterdir()) if (p / "manifest.json").is_file()]
    if not packages:
        raise ModelPackageError(f"{root}: no model package (a folder with manifest.json) found")
    return packages
