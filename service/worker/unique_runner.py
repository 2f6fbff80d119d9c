"""Unique crowds: no two images of a job (or of a collection) are near-duplicates.

Candidates are the job's ordinary latents, taken in index order: 0, 1, 2, ... A candidate is accepted
when its 16x16 thumbnail is at least the model's uniqueness threshold (RMS, see synthgen/core/similarity.py)
away from every image accepted before it, in this job and in earlier jobs of the same collection.
Image i of the job is the i-th accepted candidate, and its JSON records ``source_index``, the latent
index it came from. So the same request always gives the same set, and a rejected candidate is
replaced by the next one that passes, deterministically.

In a job with a crowd (attributes, quotas, identities), image i is conditioned on its own values whatever
candidate fills it: a rejected candidate is replaced by another latent for the same slot (``_fill_slots``),
so the request's exact quotas hold in the unique job too.

Each image depends on all the images before it, so one worker computes a unique job in order, chunk
after chunk. Every chunk is stored with its state (accepted embeddings and next candidate), so a
worker that takes the job over after a crash resumes where the last chunk ended, with the same result.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from service.engine.registry import LoadedModel
from service.engine.rendering import EncodedChunk, RenderSpec, chunk_of, encode_samples, job_inputs
from service.queue.jobs import Job, WorkItem
from service.queue.streams import JobQueue
from service.queue.unique_state import Collection
from synthgen.core.privacy import TrainingIndex
from synthgen.core.similarity import thumbnails

log = logging.getLogger(__name__)
Decode = Callable[[np.ndarray, str], Awaitable[np.ndarray]]


class AcceptedSet:
    """The embeddings accepted so far, and the test a new candidate must pass.

    Rows live in one growing float64 buffer with their squared norms, so each batch of candidates
    costs one matrix product against the accepted rows and no copy of them.
    """

    def __init__(self, threshold2: float, dim: int) -> None:
        self.threshold2 = threshold2  # squared sums are compared: RMS < t  <=>  sum of squares < t^2 * dim
        self.dim = dim
        self.size = 0
        self._rows = np.zeros((0, dim))
        self._norms = np.zeros(0)

    def add_block(self, embeddings: np.ndarray) -> None:
        k = len(embeddings)
        if not k:
            return
        if self.size + k > len(self._rows):  # grow by doubling: amortized O(k) per block
            capacity = max(2 * len(self._rows), self.size + k, 256)
            rows, norms = np.empty((capacity, self.dim)), np.empty(capacity)
            rows[: self.size], norms[: self.size] = self._rows[: self.size], self._norms[: self.size]
            self._rows, self._norms = rows, norms
        block = embeddings.astype(np.float64)
        self._rows[self.size : self.size + k] = block
        self._norms[self.size : self.size + k] = (block * block).sum(1)
        self.size += k

    def select(self, candidates: np.ndarray, need: int) -> list[int]:
        """Positions of the candidates accepted, in order, at most ``need`` of them."""
        # float64: the expanded |a|^2 + |b|^2 - 2ab cancels badly in float32 near small thresholds
        existing, candidates = self._rows[: self.size], candidates.astype(np.float64)
        far = np.ones(len(candidates), dtype=bool)
        if self.size:
            d2 = (candidates**2).sum(1)[:, None] + self._norms[None, : self.size] - 2 * candidates @ existing.T
            far = d2.min(axis=1) >= self.threshold2
        chosen: list[int] = []
        for i in np.flatnonzero(far):
            if chosen:
                d2 = ((candidates[chosen] - candidates[i]) ** 2).sum(1)
                if d2.min() < self.threshold2:
                    continue
            chosen.append(int(i))
            if len(chosen) == need:
                break
        return chosen


@dataclass
class UniqueJob:
    item: WorkItem
    job: Job
    model: LoadedModel
    spec: RenderSpec
    novel: TrainingIndex | None = None  # the privacy guard, for novel jobs
    stopping: Callable[[], bool] = lambda: False  # the worker is draining: hand the rest of the job back

    @property
    def unique(self) -> bool:
        return self.job.unique


async def run_unique_job(queue: JobQueue, work: UniqueJob, decode: Decode, encode_pool: Executor, batch: int) -> None:
    """Compute every chunk of a unique job in order, resuming after the last stored chunk."""
    job_id, count, chunk_size, expires_at = work.item.job_id, work.job.count, work.job.chunk_size, work.job.expires_at
    threshold = work.model.package.uniqueness_threshold
    dim = 16 * 16 * work.model.package.image_shape[2]  # thumbnail size x channels
    accepted = AcceptedSet(threshold * threshold * dim, dim)
    collection = Collection(queue.redis, work.job.owner, work.job.collection, queue.keys) if work.job.collection else None
    if collection:
        await collection.lock(job_id)
    try:
        state = await queue.unique_state(job_id)
        if collection:
            await _add_collection(accepted, collection, state, dim)
        next_candidate = 0
        for chunk in range(math.ceil(count / chunk_size)):
            if f"next:{chunk}" in state:  # stored before a takeover: reuse it
                accepted.add_block(np.frombuffer(state[f"emb:{chunk}"], np.float32).reshape(-1, dim))
                next_candidate = int(state[f"next:{chunk}"])
                continue
            if work.stopping():  # the entry stays pending: whoever takes it resumes after this chunk
                log.info("unique job %s handed back at chunk %d: the worker is stopping", job_id, chunk)
                return
            if collection:
                await collection.keep_locked()
            first, need = chunk * chunk_size, min(chunk_size, count - chunk * chunk_size)
            indices = np.arange(first, first + need)
            if work.job.crowd.controlled:  # image i keeps its own attributes and identity: fill it slot by slot
                sources, rows, images, embeddings = await _fill_slots(work, accepted, decode, indices, batch)
            else:
                sources, rows, images, embeddings, next_candidate = await _fill_chunk(
                    work, accepted, decode, next_candidate, need, batch
                )
            encoded = await asyncio.get_running_loop().run_in_executor(
                encode_pool, _encode_with_sources, work, indices, sources, rows, images
            )
            stored = embeddings.astype(np.float32).tobytes()  # already in ``accepted``: the fill added them
            done, _ = await queue.complete_unique_chunk(
                job_id, chunk, need, encoded.tar, encoded.offsets, expires_at, stored, next_candidate,
                collection.key if collection else None, encoded.label_counts,
            )  # fmt: skip
            if done < 0:
                log.info("unique job %s stopped (cancelled, failed or gone) at chunk %d", job_id, chunk)
                break
    finally:
        if collection:
            await collection.unlock()
    await queue.skip(work.item)


async def _add_collection(accepted: AcceptedSet, collection: Collection, state: dict[str, bytes], dim: int) -> None:
    """The faces earlier jobs of the collection accepted; this job's own chunks come from its state."""
    own = {state[k] for k in state if k.startswith("emb:")}
    for block in await collection.embeddings():
        if block not in own:
            accepted.add_block(np.frombuffer(block, np.float32).reshape(-1, dim))


async def _fill_chunk(
    work: UniqueJob, accepted: AcceptedSet, decode: Decode, next_candidate: int, need: int, batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Decode candidates in batches until ``need`` pass; returns their sources, decode rows, images, embeddings.

    Accepted candidates join ``accepted`` as they are chosen, so later batches are checked against them.
    """
    picked: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    started = time.monotonic()
    while len(picked) < need:
        candidates = np.arange(next_candidate, next_candidate + batch, dtype=np.int64)
        rows = job_inputs(work.model, work.spec, candidates)
        images = await decode(rows, work.item.priority)
        emb = thumbnails(images)  # float32, exactly as stored: decisions replay identically after a resume
        allowed = np.flatnonzero(work.novel.novel(images)) if work.novel is not None else np.arange(len(images))
        if work.unique:
            chosen = [int(allowed[i]) for i in accepted.select(emb[allowed], need - len(picked))]
            accepted.add_block(emb[chosen])
        else:
            chosen = [int(i) for i in allowed[: need - len(picked)]]
        for i in chosen:
            picked.append((int(candidates[i]), rows[i], images[i], emb[i]))
        next_candidate = int(candidates[chosen[-1]]) + 1 if len(picked) == need else int(candidates[-1]) + 1
        if time.monotonic() - started > 600 and len(picked) < need:
            raise RuntimeError(
                f"could not find {need} unique faces among {next_candidate} candidates; the model's diversity is exhausted"
            )
    sources = np.array([p[0] for p in picked], dtype=np.int64)
    return (
        sources,
        np.stack([p[1] for p in picked]),
        np.stack([p[2] for p in picked]),
        np.stack([p[3] for p in picked]),
        next_candidate,
    )


async def _fill_slots(
    work: UniqueJob, accepted: AcceptedSet, decode: Decode, indices: np.ndarray, batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images ``indices`` of a job with a crowd, each keeping its own attributes and identity.

    Slot i's attempt a takes its latent's own draw from source ``i + a * count`` (attempt 0 is image i of
    the same job without ``unique``). The slots still open are decoded together, in index order, and each
    is accepted or tried again with its next attempt, so the exact quotas and fixed attributes of the
    request hold image by image. Returns sources, decode rows, images and embeddings in index order.
    """
    count = work.job.count
    attempts = np.zeros(len(indices), dtype=np.int64)
    picked: dict[int, tuple[int, np.ndarray, np.ndarray, np.ndarray]] = {}
    started = time.monotonic()
    while len(picked) < len(indices):
        open_slots = np.array([p for p in range(len(indices)) if p not in picked][:batch], dtype=np.int64)
        sources = indices[open_slots] + attempts[open_slots] * count
        rows = job_inputs(work.model, work.spec, indices[open_slots], sources)
        images = await decode(rows, work.item.priority)
        emb = thumbnails(images)
        allowed = np.flatnonzero(work.novel.novel(images)) if work.novel is not None else np.arange(len(images))
        if work.unique:
            chosen = [int(allowed[i]) for i in accepted.select(emb[allowed], len(allowed))]
            accepted.add_block(emb[chosen])
        else:
            chosen = [int(i) for i in allowed]
        for i in chosen:
            picked[int(open_slots[i])] = (int(sources[i]), rows[i], images[i], emb[i])
        attempts[open_slots] += 1  # the accepted slots are done: their count no longer matters
        if time.monotonic() - started > 600 and len(picked) < len(indices):
            raise RuntimeError(
                f"could not find unique faces for {len(indices) - len(picked)} images after {int(attempts.max())} "
                "attempts each; the model's diversity is exhausted for these attributes"
            )
    order = [picked[p] for p in range(len(indices))]
    return (
        np.array([o[0] for o in order], dtype=np.int64),
        np.stack([o[1] for o in order]),
        np.stack([o[2] for o in order]),
        np.stack([o[3] for o in order]),
    )


def _encode_with_sources(
    work: UniqueJob, indices: np.ndarray, sources: np.ndarray, rows: np.ndarray, images: np.ndarray
) -> EncodedChunk:
    samples = encode_samples(work.model, work.spec, indices, rows, images)
    for sample, source in zip(samples, sources, strict=True):
        sample.meta.update(source_index=int(source), unique=work.unique, novel=work.novel is not None)
    return chunk_of(samples, work.spec.fmt)
