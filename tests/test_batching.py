"""The dynamic batcher, with pure asyncio and a fake model that records the batches it sees."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from service.engine.batching import DynamicBatcher


class RecordingModel:
    def __init__(self, fail_on: float | None = None, delay_s: float = 0.0) -> None:
        self.batches: list[int] = []
        self.fail_on = fail_on
        self.delay_s = delay_s

    def __call__(self, z: np.ndarray) -> np.ndarray:
        if self.fail_on is not None and (z == self.fail_on).any():
            raise ValueError("poisoned input")
        time.sleep(self.delay_s)
        self.batches.append(len(z))
        return z * 2


async def _run(model: RecordingModel, sizes: list[int], max_batch: int, max_wait_s: float) -> list[np.ndarray | BaseException]:
    batcher = DynamicBatcher(model, max_batch=max_batch, max_wait_s=max_wait_s)
    batcher.start()
    try:
        requests = [np.full((n, 3), float(i), dtype=np.float32) for i, n in enumerate(sizes)]
        return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
    finally:
        await batcher.stop()


@pytest.mark.parametrize("max_batch", [1, 4, 16, 64])
@pytest.mark.parametrize("max_wait_s", [0.0, 0.005, 0.05])
def test_every_request_gets_exactly_its_rows(max_batch: int, max_wait_s: float) -> None:
    model = RecordingModel()
    sizes = [1, 3, 5, 16, 2, 40, 7]
    results = asyncio.run(_run(model, sizes, max_batch, max_wait_s))
    for i, (n, out) in enumerate(zip(sizes, results, strict=True)):
        assert isinstance(out, np.ndarray)
        assert out.shape == (n, 3) and (out == 2.0 * i).all()
    assert max(model.batches) <= max_batch
    assert sum(model.batches) == sum(sizes)


def test_small_requests_are_merged_into_one_batch() -> None:
    model = RecordingModel()
    asyncio.run(_run(model, [4] * 8, max_batch=64, max_wait_s=0.05))
    assert model.batches == [32]


def test_a_full_batch_does_not_wait() -> None:
    model = RecordingModel()
    started = time.monotonic()
    asyncio.run(_run(model, [8, 8], max_batch=16, max_wait_s=5.0))
    assert time.monotonic() - started < 2.0
    assert model.batches == [16]


def test_a_lone_request_waits_at_most_max_wait() -> None:
    model = RecordingModel()
    started = time.monotonic()
    asyncio.run(_run(model, [3], max_batch=64, max_wait_s=0.2))
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 2.0
    assert model.batches == [3]


def test_one_bad_request_fails_alone() -> None:
    model = RecordingModel(fail_on=2.0)  # the request filled with 2.0 is poisoned
    results = asyncio.run(_run(model, [4, 4, 4, 4], max_batch=64, max_wait_s=0.05))
    assert isinstance(results[2], ValueError)
    for i in (0, 1, 3):
        out = results[i]
        assert isinstance(out, np.ndarray) and (out == 2.0 * i).all()


def test_infer_before_start_is_an_error() -> None:
    batcher = DynamicBatcher(RecordingModel(), max_batch=4, max_wait_s=0)
    with pytest.raises(RuntimeError, match="before start"):
        asyncio.run(batcher.submit(np.zeros((1, 3), dtype=np.float32)))


@pytest.mark.parametrize(("max_batch", "max_wait_s", "match"), [(0, 0.0, "max_batch"), (4, -1.0, "max_wait_s")])
def test_bad_parameters_are_refused(max_batch: int, max_wait_s: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DynamicBatcher(RecordingModel(), max_batch=max_batch, max_wait_s=max_wait_s)


def test_interactive_requests_jump_the_bulk_queue() -> None:
    """Bulk never delays interactive work by more than the batch already on the device."""

    async def scenario() -> list[str]:
        seen: list[str] = []

        def model(z: np.ndarray) -> np.ndarray:
            time.sleep(0.02)
            seen.append("interactive" if (z == -1).any() else "bulk")
            return z

        batcher = DynamicBatcher(model, max_batch=16, max_wait_s=0.0)
        batcher.start()
        try:
            bulk = [asyncio.create_task(batcher.submit(np.zeros((16, 2), np.float32), "bulk")) for _ in range(8)]
            await asyncio.sleep(0.03)  # the first bulk batch is on the device now
            await batcher.submit(np.full((4, 2), -1, np.float32), "interactive")
            await asyncio.gather(*bulk)
        finally:
            await batcher.stop()
        return seen

    seen = asyncio.run(scenario())
    assert len(seen) == 9
    assert seen.index("interactive") <= 2, seen


def test_unknown_priority_is_refused() -> None:
    async def scenario() -> None:
        batcher = DynamicBatcher(RecordingModel(), max_batch=4, max_wait_s=0)
        batcher.start()
        try:
            with pytest.raises(ValueError, match="priority must be one of"):
                await batcher.submit(np.zeros((1, 3), np.float32), "urgent")
        finally:
            await batcher.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(("more", "at_least", "at_most"), [(False, 0.0, 0.3), (True, 0.4, 3.0)])
def test_a_batch_waits_only_while_more_requests_can_come(more: bool, at_least: float, at_most: float) -> None:
    async def scenario() -> float:
        batcher = DynamicBatcher(RecordingModel(), max_batch=64, max_wait_s=0.5, more_coming=lambda: more)
        batcher.start()
        try:
            started = time.monotonic()
            await batcher.submit(np.zeros((2, 3), np.float32), "interactive")
            return time.monotonic() - started
        finally:
            await batcher.stop()

    assert at_least <= asyncio.run(scenario()) < at_most
