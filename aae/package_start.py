"""A fine-tune's start from a model package, for when the training checkpoint behind it is gone.

A package ships the decoder as ONNX (``decoder.onnx``), with its batch normalizations folded into the convolutions
before them. Those weights are the decoder of an ``AAEConfig`` with ``decoder_norm="none"`` (every layer with its
bias), which computes the same function in training and inference; the encoder and the latent discriminator, which
no package ships, start from fresh weights (``TrainOptions.decoder_frozen_steps`` lets the encoder learn to invert
the decoder before the decoder moves). The rebuilt decoder is checked against the package's graph image for image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from aae.model import AAE, AAEConfig, images_uint8

# the folded graph keeps a layer's bias under the name of its weight with this suffix
FOLDED_BIAS = "_bias"
PARITY_LATENTS = 64
PARITY_BOUND = 1  # grey levels: the graph rounds in float32, torch may round the other way at .5


class PackageStartError(ValueError):
    """The package's decoder cannot be rebuilt as a trainable model."""


def is_package(path: str | Path) -> bool:
    return (Path(path) / "manifest.json").is_file()


def package_checkpoint(folder: str | Path, seed: int = 0) -> dict[str, Any]:
    """A checkpoint (as ``synthgen train`` writes, without training state) holding ``folder``'s decoder.

    ``seed`` draws the fresh encoder and latent discriminator. Raises ``PackageStartError`` when the decoder has
    layers the folded graph cannot give back (group normalization, residual blocks) or the rebuilt decoder differs
    from the graph by more than one grey level.
    """
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    theirs = AAEConfig.from_dict(manifest["config"])
    if theirs.decoder_norm == "group" or theirs.res_blocks:
        raise PackageStartError(
            f"{folder}: its decoder ({theirs.decoder_norm} normalization, {theirs.res_blocks} residual blocks) does not "
            "fold into plain convolutions; fine-tune it from its training checkpoint instead"
        )
    config = AAEConfig.from_dict({**theirs.to_dict(), "decoder_norm": "none"})
    torch.manual_seed(seed)
    model = AAE(config)
    graph = folder / manifest["decoder"]["file"]
    model.decoder.load_state_dict(_decoder_weights(graph, model), strict=True)
    _check_parity(graph, model)
    return {
        "config": config.to_dict(),
        "model": model.state_dict(),
        "started_from_package": {"name": manifest["name"], "version": manifest["version"], "graph": graph.name},
    }


def _decoder_weights(graph: Path, model: AAE) -> dict[str, torch.Tensor]:
    initializers = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(graph)).graph.initializer}
    weights: dict[str, torch.Tensor] = {}
    for name, param in model.decoder.state_dict().items():
        key = f"decoder.{name}"
        if key not in initializers and name.endswith(".bias"):
            key = f"decoder.{name.removesuffix('.bias')}.weight{FOLDED_BIAS}"
        if key not in initializers:
            raise PackageStartError(f"{graph}: no weights for the decoder's {name} (expected an initializer {key!r})")
        array = initializers[key]
        if tuple(array.shape) != tuple(param.shape):
            raise PackageStartError(f"{graph}: {key} has shape {list(array.shape)}, the decoder's {name} {list(param.shape)}")
        weights[name] = torch.from_numpy(np.array(array, dtype=np.float32))
    return weights


def _check_parity(graph: Path, model: AAE) -> None:
    import onnxruntime as ort

    config = model.config
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(PARITY_LATENTS, config.latent_dim, generator=generator)
    feed = {"z": z.numpy()}
    y = None
    if config.condition_dim:
        space = config.attribute_space
        y = torch.from_numpy(space.one_hot(space.draw(0, np.arange(PARITY_LATENTS))))
        feed["y"] = y.numpy()
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    expected = session.run(None, feed)[0].astype(np.int16)
    model.eval()
    with torch.no_grad():
        got = images_uint8(model.decoder(z, y)).numpy().astype(np.int16)
    error = int(np.abs(got - expected).max())
    if error > PARITY_BOUND:
        raise PackageStartError(f"{graph}: the rebuilt decoder differs from the graph by {error} grey levels")
