"""synthgen on a real Redis Cluster (3 masters on loopback, started by ``tests/support/cluster.py``).

The worker SIGKILL test runs on it too (``tests/test_faults.py``), and so do the interactive channel's
(``tests/test_interactive.py``). Here: every script's keys share one slot (the cluster refuses the
script otherwise), a unique job of a collection, a master restarted mid-job, and a process whose shard
count disagrees with the queue's being refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from redis.crc import key_slot

from service.queue import keys as K
from service.queue.connection import connect
from service.queue.jobs import JobSpec, QueueConfig
from service.queue.streams import JobQueue, LayoutMismatch
from synthgen.core.jobs import Priority
from tests.support.cluster import LocalCluster, cluster_redis_server, redis_server_version
from tests.support.jobs import clean_tar_digest, download_digest, finished, wait_job
from tests.support.live import LiveService

SEED = 31


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    started = LocalCluster(3)
    yield started
    started.close()


def test_every_key_a_script_touches_shares_the_slot_of_its_shard() -> None:
    keys = K.Keyspace(12, tagged=True)
    for _ in range(50):
        job_id = keys.new_job_id()
        shard = keys.shard_of(job_id)
        touched = [
            keys.job(job_id), keys.job_done(job_id), keys.job_progress(job_id), keys.result(job_id, 7),
            keys.unique_state(job_id), *keys.stream_order(shard), keys.queued_images(shard),
            keys.drained(shard, 123), keys.result_bytes(shard, 456),
        ]  # fmt: skip
        assert len({key_slot(k.encode()) for k in touched}) == 1, touched
    # a collection's jobs are drawn into the collection's shard, so their completion script is one slot too
    job_id = keys.new_job_id(keys.collection_shard("tenant", "crowd"))
    assert key_slot(keys.collection("tenant", "crowd").encode()) == key_slot(keys.job(job_id).encode())
    assert len({key_slot(keys.queued_images(s).encode()) for s in range(12)}) == 12  # the shards spread out
    assert K.DEFAULT.job("abc") == "synthgen:job:abc"  # one untagged shard: the layout a single Redis has used


def test_a_queue_with_another_layout_is_refused(cluster: LocalCluster) -> None:
    async def run() -> None:
        client = connect(cluster.url, cluster=True)
        try:
            await JobQueue(client, QueueConfig(shards=12, tagged=True)).ensure_groups()
            with pytest.raises(LayoutMismatch, match="SYNTHGEN_QUEUE_SHARDS"):
                await JobQueue(client, QueueConfig(shards=6, tagged=True)).ensure_groups()
        finally:
            await client.aclose()

    asyncio.run(run())


def test_jobs_of_every_shard_complete_once_on_the_cluster(cluster: LocalCluster) -> None:
    """Jobs in many shards through the queue's own calls: create, read, complete (the Lua script), stats."""

    async def run() -> None:
        client = connect(cluster.url, cluster=True)
        queue = JobQueue(client, QueueConfig(chunk_size=10, shards=12, tagged=True))
        try:
            await queue.ensure_groups()
            jobs = [await queue.create_job(JobSpec("m@1", "x" * 64, 25, seed, priority=Priority.BULK)) for seed in range(24)]
            assert len({queue.keys.shard_of(j.id) for j in jobs}) > 6
            items = []
            while len(items) < 24 * 3:
                items += await queue.read_work("c1", 100, 100)
            for item in items + items[:5]:  # five chunks completed twice: counted once
                await queue.complete_chunk(item, item.images, b"tar", [0, 3], jobs[0].expires_at)
            for job in jobs:
                done = await queue.get_job(job.id)
                assert (done.status.value, done.done) == ("succeeded", 25)
            depth = await queue.depth()
            assert depth[Priority.BULK] == {"lag": 0, "pending": 0}
            from service.queue.admission import read_stats

            stats = await read_stats(client, 86_400, keys=queue.keys)
            assert stats.queued_images == 0 and stats.result_bytes == 3 * 24 * 3
        finally:
            await client.aclose()

    asyncio.run(run())


def test_a_unique_collection_job_and_a_master_restart_mid_job(
    live_service: Callable[..., LiveService], tiny_models_dir: Path
) -> None:
    """A unique job of a collection (its completion script touches the collection) completes; then the
    master holding a running job's shard is restarted mid-job, and the job completes with clean bytes."""
    service = live_service(workers=1, cluster=True, SYNTHGEN_BATCH_SIZE="16")
    assert service.cluster is not None
    service.wait_workers()
    with httpx.Client(base_url=service.base_url, timeout=60) as http:
        unique = http.post("/v1/jobs", json={"count": 60, "seed": 3, "collection": "crowd"}).json()
        assert wait_job(http, unique["id"], finished, timeout_s=120)["status"] == "succeeded"
        count = 1500
        job = http.post("/v1/jobs", json={"count": count, "seed": SEED}).json()
        master = service.cluster.node_of_key(service.keys.job(job["id"]))
        wait_job(http, job["id"], lambda j: j["done"] >= count // 4)
        service.cluster.restart(master, down_s=1.0)
        final = wait_job(http, job["id"], finished, timeout_s=300)
        assert final["status"] == "succeeded" and final["done"] == count, final
        digest, names = download_digest(http, job["id"])
        assert names == [f"{i:08d}.{ext}" for i in range(count) for ext in ("png", "json")]
        assert digest == clean_tar_digest(tiny_models_dir, "tiny", SEED, count)
        assert service.queued_images() == 0
    assert all(w.poll() is None for w in service.workers) and service.api is not None and service.api.poll() is None
    print(f"\nredis-server {redis_server_version(cluster_redis_server())}: master {master} restarted mid-job, bytes identical")
