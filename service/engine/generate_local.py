"""In-process generation into a folder, with no server and no Redis: what ``synthgen generate`` runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from service.engine.registry import LoadedModel
from service.engine.rendering import RenderedSample, RenderSpec, encode_samples, job_inputs
from synthgen.core.images import EXTENSIONS
from synthgen.core.webdataset import sample_key


def _batches(count: int, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, count, batch_size):
        yield np.arange(start, min(count, start + batch_size), dtype=np.int64)


def generate_to_directory(
    model: LoadedModel,
    spec: RenderSpec,
    count: int,
    out_dir: str | Path,
    batch_size: int = 64,
    encode_threads: int = 2,
    progress: bool = True,
) -> Path:
    """In-process generation: ``{key}.{ext}`` files and ``manifest.jsonl`` in ``out_dir``.

    Encoding of batch k runs in a thread pool while batch k+1 is decoded.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = EXTENSIONS[spec.fmt]
    with (
        ThreadPoolExecutor(encode_threads) as pool,
        open(out / "manifest.jsonl", "w", encoding="utf-8") as manifest,
        tqdm(total=count, unit="img", desc="generating", disable=not progress) as bar,
    ):
        pending = None
        for indices in _batches(count, batch_size):
            rows = job_inputs(model, spec, indices)
            images = model.decode(rows)
            if pending is not None:
                _write_samples(pending.result(), out, ext, manifest, bar)
            pending = pool.submit(encode_samples, model, spec, indices, rows, images)
        if pending is not None:
            _write_samples(pending.result(), out, ext, manifest, bar)
    return out


def _write_samples(samples: list[RenderedSample], out: Path, ext: str, manifest: TextIO, bar: tqdm[Any]) -> None:
    for s in samples:
        name = f"{sample_key(s.index)}.{ext}"
        (out / name).write_bytes(s.data)
        manifest.write(json.dumps({"file": name, **s.meta}, separators=(",", ":")) + "\n")
    bar.update(len(samples))
