"""Control metrics of a conditional model, judged by its package's attribute classifier.

- Adherence, per attribute: generate images asking for each of its values equally often (exact quotas, the
  other attributes drawn from their training marginals, as a job with that ``distribution`` would), and count
  the images the classifier labels with the value asked for. Asking uniformly makes chance exactly
  ``1 / len(values)``, whatever the classifier tends to answer.
- Identity consistency, per identity attribute: in an identity job (``identities`` x ``per_identity``), the
  fraction of images whose predicted value is their identity's majority prediction; and the fraction of
  images that agree on all of them at once.
- Beside both, what the classifier makes of real renders asked for the same way (``renders``: for a model of
  the avatars, the renderer itself as a perfectly controlled generator, ``avatar_renderer``), and its own
  accuracy on held-out real images (the manifest's ``classifier.accuracy``, over the images' own label
  distribution): a model can only be seen to obey as well as the classifier sees. Asking each value equally
  often weighs the rare values, which the classifier sees least well, far more than the natural distribution.

Only labels that can be seen count (``aae.labels.hidden``: no hair colour under a hat). The images come from
the same code paths as the service's (``synthgen.core.crowd.Crowd``), from (seed, index) alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aae.labels import LabelTable, render_labeled
from synthgen.core.attributes import AttributeSpace, stream_seed
from synthgen.core.crowd import Crowd
from synthgen.core.predictions import predicted_codes

Decode = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (z [B, latent_dim], y one-hot [B, dim]) -> uint8 [B, H, W, C]
Classify = Callable[[np.ndarray], np.ndarray]  # uint8 images [B, H, W, C] -> probabilities [B, dim]

CONTROL_STREAM = 0xC0_47_0001_5EED_0004
RENDER_SEED = 7  # the avatars' held-out dataset seed (aae.classifier.HELD_OUT_SEED): no model trained on it


@dataclass(frozen=True)
class ControlSizes:
    per_value: int = 16  # images per value of each attribute (adherence)
    identities: int = 64  # identity consistency: identities x per_identity images
    per_identity: int = 8
    seed: int = 0
    truncation: float | None = None
    batch: int = 256


@dataclass(frozen=True)
class Generator:
    """A conditional model as control sees it: decode, classify, and what the latents and labels are."""

    decode: Decode
    classify: Classify
    space: AttributeSpace
    prior: Mapping[str, Any]
    latent_dim: int


def avatar_renderer(space: AttributeSpace, size: int, seed: int = RENDER_SEED) -> Decode:
    """The avatar renderer as a decoder: each image shows exactly the labels it is given (y), and z picks the parts
    no label names (nose, the colours of hats and beards...), as z picks a model's style."""

    def decode(z: np.ndarray, y: np.ndarray) -> np.ndarray:
        codes = space.codes_of(y)
        keys = (np.abs(z[:, 0]) * 1e6).astype(np.int64)
        return np.stack([render_labeled(row, seed, int(k), size) for row, k in zip(space.labels(codes), keys, strict=True)])

    return decode


def visible(space: AttributeSpace, codes: np.ndarray) -> np.ndarray:
    """bool [N, len(names)]: whether each requested value can be seen, given the image's other values."""
    return LabelTable(dict(space.values), np.asarray(codes)).visible()


def _run(model: Generator, crowd: Crowd, count: int, seed: int, sizes: ControlSizes) -> tuple[np.ndarray, np.ndarray]:
    """(requested value indices, predicted value indices), both int64 [count, len(names)]."""
    crowd.validated(model.space, count)
    indices = np.arange(count)
    codes = crowd.codes(model.space, seed, count, indices)
    z = crowd.latents(dict(model.prior), seed, indices, model.latent_dim, sizes.truncation)
    y = model.space.one_hot(codes)
    predicted = [
        predicted_codes(model.space, model.classify(model.decode(z[i : i + sizes.batch], y[i : i + sizes.batch])))[0]
        for i in range(0, count, sizes.batch)
    ]
    return codes, np.concatenate(predicted)


def adherence(model: Generator, sizes: ControlSizes, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per attribute: the fraction of images showing the value asked for, per value too, and chance."""
    space = model.space
    out = {}
    for name in names or space.names:
        column, values = space.names.index(name), space.values[name]
        crowd = Crowd(distribution={name: {v: 1.0 / len(values) for v in values}})
        seed = stream_seed(sizes.seed, CONTROL_STREAM, salt=column + 1)
        codes, predicted = _run(model, crowd, len(values) * sizes.per_value, seed, sizes)
        counted = visible(space, codes)[:, column]
        hit = predicted[:, column] == codes[:, column]
        by_value = {}
        for j, value in enumerate(values):
            asked = counted & (codes[:, column] == j)
            if asked.any():
                by_value[value] = round(float(hit[asked].mean()), 4)
        out[name] = {
            "rate": round(float(hit[counted].mean()), 4) if counted.any() else None,
            "chance": round(1.0 / len(values), 4),
            "values": len(values),
            "images": int(counted.sum()),
            "by_value": by_value,
        }
    return out


def identity_consistency(model: Generator, sizes: ControlSizes) -> dict[str, Any] | None:
    """Per identity attribute, the fraction of an identity's images predicted as its majority value; None
    for a model without identity attributes."""
    space = model.space
    if not space.identity:
        return None
    crowd = Crowd(identities=sizes.identities, per_identity=sizes.per_identity)
    count = sizes.identities * sizes.per_identity
    codes, predicted = _run(model, crowd, count, stream_seed(sizes.seed, CONTROL_STREAM), sizes)
    identity = crowd.identity_of(np.arange(count))
    assert identity is not None
    seen = visible(space, codes)
    agree = np.ones(codes.shape, dtype=bool)
    columns = [space.names.index(n) for n in space.identity]
    for j in range(sizes.identities):
        rows = identity == j
        for c in columns:
            shown = rows & seen[:, c]
            if shown.any():
                majority = np.bincount(predicted[shown, c]).argmax()
                agree[shown, c] = predicted[shown, c] == majority
    by_attribute = {space.names[c]: float(agree[seen[:, c], c].mean()) for c in columns if seen[:, c].any()}
    return {
        "by_attribute": {n: round(v, 4) for n, v in by_attribute.items()},
        "all": round(float(agree[:, columns].all(axis=1).mean()), 4),
        "identities": sizes.identities,
        "per_identity": sizes.per_identity,
    }


def measure_control(
    model: Generator,
    sizes: ControlSizes,
    classifier_accuracy: Mapping[str, float] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Adherence, identity consistency and the classifier's accuracy on real images, as one dict."""
    return {
        "adherence": adherence(model, sizes, names),
        "identity": identity_consistency(model, sizes),
        "classifier_accuracy": dict(classifier_accuracy or {}),
        "sizes": asdict(sizes),
    }


def package_generator(path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> tuple[Generator, dict[str, Any]]:
    """A conditional package's decoder.onnx (inputs z, y) and classifier.onnx; returns (generator, manifest)."""
    import onnxruntime as ort

    from synthgen.core.package import load_package

    package = load_package(path)
    space = package.attributes
    if not space:
        raise ValueError(f"{package.ref}: an unconditional model has nothing to control")
    if package.classifier_path is None:
        raise ValueError(f"{package.ref}: no classifier.onnx to judge control with (synthgen classifier add)")
    decoder = ort.InferenceSession(str(package.decoder_path), providers=list(providers))
    classifier = ort.InferenceSession(str(package.classifier_path), providers=list(providers))
    inputs = [i.name for i in decoder.get_inputs()]
    if inputs != ["z", "y"]:
        raise ValueError(f"{package.decoder_path}: a conditional decoder takes inputs ['z', 'y'], this one {inputs}")

    def decode(z: np.ndarray, y: np.ndarray) -> np.ndarray:
        images: np.ndarray = decoder.run(None, {"z": z, "y": y})[0]
        return images

    def classify(images: np.ndarray) -> np.ndarray:
        probabilities: np.ndarray = classifier.run(None, {"images": images})[0]
        return probabilities

    return Generator(decode, classify, space, package.manifest["prior"], package.latent_dim), package.manifest


def package_control(path: str | Path, sizes: ControlSizes = ControlSizes()) -> dict[str, Any]:
    """The control metrics of a conditional package that ships a classifier; for a model of the avatars, the
    same for real renders (``renders``)."""
    model, manifest = package_generator(path)
    result = measure_control(model, sizes, manifest["classifier"]["accuracy"])
    result["model"] = f"{manifest['name']}@{manifest['version']}"
    if manifest.get("training", {}).get("data") == "avatars":
        size = int(manifest["image"]["height"])
        renders = Generator(avatar_renderer(model.space, size), model.classify, model.space, model.prior, model.latent_dim)
        result["renders"] = {k: v for k, v in measure_control(renders, sizes).items() if k in ("adherence", "identity")}
    return result


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def control_table(result: Mapping[str, Any]) -> str:
    """Markdown: per attribute, asked = shown against chance, identity agreement and classifier accuracy."""
    identity = result.get("identity") or {}
    agreement = identity.get("by_attribute", {})
    accuracy = result.get("classifier_accuracy", {})
    renders = result.get("renders")
    both = renders is not None
    header = "| attribute | values | shows the value asked for |" + (" real renders asked the same |" if both else "")
    lines = [
        header + " chance | identity agreement |" + (" real renders |" if both else "") + " classifier accuracy (real) |",
        "|---|---:|---:|" + ("---:|" if both else "") + "---:|---:|" + ("---:|" if both else "") + "---:|",
    ]
    for name, entry in result["adherence"].items():
        row = f"| {name} | {entry['values']} | {_percent(entry['rate'])} |"
        if renders is not None:
            row += f" {_percent(renders['adherence'][name]['rate'])} |"
        row += f" {_percent(entry['chance'])} | {_percent(agreement.get(name))} |"
        if renders is not None:
            row += f" {_percent(((renders.get('identity') or {}).get('by_attribute') or {}).get(name))} |"
        lines.append(row + f" {_percent(accuracy.get(name))} |")
    if identity:
        lines.append(
            f"\nAll identity attributes agree with the identity's majority in {_percent(identity['all'])} of the images "
            f"({identity['identities']} identities x {identity['per_identity']} images)"
            + (f"; real renders: {_percent(renders['identity']['all'])}." if renders and renders.get("identity") else ".")
        )
    return "\n".join(lines)
