"""Parity between onnxruntime and torch, measured in grey levels, over ordinary and extreme latents.

A conditional decoder's parity inputs pair those latents with attributes drawn from the training marginals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from synthgen.core.attributes import AttributeSpace

Feeds = dict[str, np.ndarray]  # a graph's inputs by name
PARITY_LATENTS = 1024
PARITY_SEED = 0
BATCH_SIZES = (1, 7, 64, 256)
DECODER_BOUND = 1.0  # grey levels: fp32 ORT and torch may differ by one rounding step, no more
DECODER_FP16_BOUND = 8.0  # grey levels: fp16 arithmetic loses about 3 significant digits
ENCODER_BOUND = 1e-3  # latent units (the prior has std 1)


@dataclass
class ParityReport:
    latents: int
    max_error: float
    mean_error: float
    bound: float
    batch_sizes: list[int]
    unit: str

    @property
    def ok(self) -> bool:
        return self.max_error <= self.bound

    def to_dict(self) -> dict[str, object]:
        return dict(vars(self))

    def describe(self, what: str) -> str:
        return (
            f"{what}: max {self.max_error:.4g} {self.unit}, mean {self.mean_error:.4g} over {self.latents} "
            f"latents at batch sizes {self.batch_sizes} (bound {self.bound:g})"
        )


def parity_latents(latent_dim: int, count: int = PARITY_LATENTS, std: float = 1.0, seed: int = PARITY_SEED) -> np.ndarray:
    """Half ordinary prior samples, a quarter uniform in [-4, 4] sigma, an eighth at +-4 sigma exactly, the rest near 0."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((count, latent_dim))
    q, e = count // 4, count // 8
    z[count // 2 : count // 2 + q] = rng.uniform(-4, 4, (q, latent_dim))
    z[count // 2 + q : count // 2 + q + e] = 4.0 * rng.choice([-1.0, 1.0], (e, latent_dim))
    z[count // 2 + q + e :] *= 0.01
    return (z * std).astype(np.float32)


def parity_condition(space: AttributeSpace, count: int = PARITY_LATENTS, seed: int = PARITY_SEED) -> np.ndarray:
    """One-hot attributes [count, space.dim] for a conditional decoder's parity inputs, drawn from the training
    marginals (``AttributeSpace.draw``) from a fixed seed."""
    return space.one_hot(space.draw(seed, np.arange(count)))


def decoder_feeds(latent_dim: int, space: AttributeSpace, std: float = 1.0) -> dict[str, np.ndarray]:
    """The decoder's parity inputs, by graph input name: ``z``, and ``y`` for a conditional model."""
    feeds = {"z": parity_latents(latent_dim, std=std)}
    if space:
        feeds["y"] = parity_condition(space)
    return feeds


def _count(feeds: Feeds) -> int:
    return len(next(iter(feeds.values())))


def _joined(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """A graph's outputs side by side, each flattened to a row per item (a graph with one output: that output)."""
    return outputs[0] if len(outputs) == 1 else np.concatenate([o.reshape(len(o), -1) for o in outputs], axis=-1)


def _run_batched(session: ort.InferenceSession, feeds: Feeds, batch: int) -> np.ndarray:
    return np.concatenate(
        [
            _joined(session.run(None, {name: x[i : i + batch] for name, x in feeds.items()}))
            for i in range(0, _count(feeds), batch)
        ]
    )


def compare(module: nn.Module, onnx_path: Path, feeds: Feeds, bound: float, unit: str) -> ParityReport:
    """Run torch once and onnxruntime (CPU) at every batch size; report the largest difference seen.

    ``feeds``: the graph's inputs by name, in the order of ``module.forward``'s arguments.
    """
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        out = module.eval()(*(torch.from_numpy(x) for x in feeds.values()))
        want = _joined([t.numpy() for t in (out if isinstance(out, tuple) else (out,))]).astype(np.float64)
    worst, total, n = 0.0, 0.0, 0
    for batch in BATCH_SIZES:
        got = _run_batched(session, feeds, batch).astype(np.float64)
        err = np.abs(got - want)
        worst = max(worst, float(err.max()))
        total += float(err.sum())
        n += err.size
    return ParityReport(_count(feeds), worst, total / n, bound, list(BATCH_SIZES), unit)


def compare_onnx(reference: Path, candidate: Path, feeds: Feeds, bound: float, unit: str) -> ParityReport:
    """Parity of one graph against another (an fp16 twin against its fp32 original), without torch."""
    ref = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
    want = _run_batched(ref, feeds, 256).astype(np.float64)
    cand = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"])
    worst, total, n = 0.0, 0.0, 0
    for batch in BATCH_SIZES:
        err = np.abs(_run_batched(cand, feeds, batch).astype(np.float64) - want)
        worst, total, n = max(worst, float(err.max())), total + float(err.sum()), n + err.size
    return ParityReport(_count(feeds), worst, total / n, bound, list(BATCH_SIZES), unit)
