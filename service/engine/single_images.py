"""Single images of many requests at once: their decode rows computed in one vectorized call.

A single image's rows (its latent and, for a conditional model, its drawn attributes) cost a few hundred
microseconds of numpy calls on their own, mostly per-call overhead: more than the rest of the api's work
for the image. Requests for one model and truncation that reach the api in the same turn of the event
loop are computed together (``LoadedModel.inputs`` with one seed per index: row for row the same as each
alone) and go on to the decoder together (``service/coalescing.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np

from service.coalescing import Coalescer
from service.engine.registry import LoadedModel

DecodeRows = Callable[[LoadedModel, np.ndarray], Awaitable[np.ndarray]]
_Key = tuple[str, float | None]  # model ref, truncation
_Asked = tuple[LoadedModel, int, np.ndarray]  # the model, a seed, its indices


class SingleImages:
    """``await images(model, seed, indices, truncation)``: the images, decoded by ``decode_rows``."""

    def __init__(self, decode_rows: DecodeRows, rows: int) -> None:
        self.decode_rows = decode_rows
        self._coalescer: Coalescer[_Key, _Asked] = Coalescer(self._decode, rows)

    async def images(self, model: LoadedModel, seed: int, indices: np.ndarray, truncation: float | None) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        return await self._coalescer.submit((model.package.ref, truncation), (model, seed, indices), len(indices))

    async def _decode(self, key: _Key, asked: list[_Asked]) -> np.ndarray:
        model = asked[0][0]
        seeds = np.concatenate([np.full(len(indices), seed, dtype=np.int64) for _, seed, indices in asked])
        rows = model.inputs(seeds, np.concatenate([indices for _, _, indices in asked]), key[1])
        return await self.decode_rows(model, rows)
