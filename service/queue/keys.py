"""Every Redis key prefix, stream and group name in one place.

Keys live in a ``Keyspace``. Its ``shards`` split the queue: each shard has its own two streams and its
own admission counters, and every key of a job lives in the shard its id hashes to. On Redis Cluster the
keyspace is *tagged*: a shard's keys share the hash tag ``{sN}``, so every Lua script (which touches a
job's keys together with its shard's stream and counters) runs on one slot. The untagged keyspace of one
shard is the layout a single Redis has always used (``synthgen:job:ID`` ...), so existing data stays readable.

The module-level names below are that default keyspace's, for tools and tests that read a single Redis.
"""

from __future__ import annotations

import secrets
import zlib

from synthgen.core.jobs import Priority

PREFIX = "synthgen"
WORKER_GROUP = f"{PREFIX}:workers"
WORKER_HEALTH_PREFIX = f"{PREFIX}:worker:"
REDELIVERIES_KEY = f"{PREFIX}:stats:redeliveries"
LAYOUT_KEY = f"{PREFIX}:layout"  # the keyspace every process of a deployment must agree on
DRAIN_BUCKET_S = 10  # completed images are counted per 10 s bucket, for the drain rate
RESULT_BYTES_BUCKET_S = 600  # stored result bytes are counted per 10 min bucket of their expiry time
STREAM_SUFFIX = {Priority.INTERACTIVE: "stream:interactive", Priority.BULK: "stream:bulk"}
# Interactive single images and interpolations: one request list that every worker pops, and one reply
# list per request. Their own hash tag: each command names one key, so nothing else has to share its slot.
INTERACTIVE_REQUESTS_KEY = f"{PREFIX}:{{interactive}}:requests"


def interactive_reply_key(request_id: str) -> str:
    return f"{PREFIX}:{{interactive}}:reply:{request_id}"


def worker_health_key(name: str) -> str:
    return f"{WORKER_HEALTH_PREFIX}{name}"


def quota_images_key(tenant: str, day: str) -> str:
    """Images a tenant (an API key's id) asked for on a UTC day (YYYYMMDD)."""
    return f"{PREFIX}:quota:{tenant}:images:{day}"


def tenant_jobs_key(tenant: str) -> str:
    """Set of a tenant's job ids, for its concurrent-jobs quota."""
    return f"{PREFIX}:quota:{tenant}:jobs"


class Keyspace:
    """The names of a deployment's queue keys: ``shards`` shards, tagged for Redis Cluster or not."""

    def __init__(self, shards: int = 1, tagged: bool = False) -> None:
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        if shards > 1 and not tagged:
            raise ValueError("more than one shard needs tagged keys (the untagged layout has one shard)")
        self.shards = shards
        self.tagged = tagged

    @property
    def layout(self) -> str:
        return f"shards={self.shards};tagged={int(self.tagged)}"

    def prefix(self, shard: int) -> str:
        return f"{PREFIX}:{{s{shard}}}" if self.tagged else PREFIX

    def _hash_shard(self, text: str) -> int:
        return zlib.crc32(text.encode()) % self.shards

    def shard_of(self, job_id: str) -> int:
        """The shard a job lives in: a pure function of its id, so any process finds it."""
        return self._hash_shard(job_id)

    def collection_shard(self, tenant: str, name: str) -> int:
        """A collection's jobs all live in one shard, with the collection: their completion script touches both."""
        return self._hash_shard(f"{tenant}\0{name}")

    def new_job_id(self, shard: int | None = None) -> str:
        """An unguessable id (128 random bits), drawn again until it falls in ``shard`` when one is asked for."""
        while True:
            job_id = secrets.token_urlsafe(16)
            if shard is None or self.shard_of(job_id) == shard:
                return job_id

    # per shard: the streams and the statistics admission control reads

    def stream(self, shard: int, priority: Priority) -> str:
        return f"{self.prefix(shard)}:{STREAM_SUFFIX[Priority(priority)]}"

    def stream_order(self, shard: int) -> tuple[str, str]:
        """The shard's streams in the order workers read them: interactive work always goes first."""
        return self.stream(shard, Priority.INTERACTIVE), self.stream(shard, Priority.BULK)

    def all_streams(self) -> list[str]:
        return [s for shard in range(self.shards) for s in self.stream_order(shard)]

    def queued_images(self, shard: int) -> str:
        """Images accepted and not yet done, cancelled or failed, in the shard."""
        return f"{self.prefix(shard)}:stats:queued_images"

    def drained(self, shard: int, bucket: int) -> str:
        """Images completed during drain bucket ``bucket`` (unix time // DRAIN_BUCKET_S)."""
        return f"{self.prefix(shard)}:stats:drained:{bucket}"

    def result_bytes(self, shard: int, bucket: int) -> str:
        """Result bytes that expire during bucket ``bucket`` (expiry unix time // RESULT_BYTES_BUCKET_S)."""
        return f"{self.prefix(shard)}:stats:result_bytes:{bucket}"

    # per job, in the job's shard

    def job(self, job_id: str) -> str:
        """Hash of a job's fields (status, count, done, ...)."""
        return f"{self.prefix(self.shard_of(job_id))}:job:{job_id}"

    def job_done(self, job_id: str) -> str:
        """Set of the chunk numbers of a job that are complete."""
        return f"{self.job(job_id)}:done"

    def job_progress(self, job_id: str) -> str:
        """List that each completed chunk's number is pushed to, to wake readers waiting on the job."""
        return f"{self.job(job_id)}:progress"

    def unique_state(self, job_id: str) -> str:
        """Hash of a unique job's per-chunk state: accepted embeddings and the next candidate index."""
        return f"{self.job(job_id)}:unique"

    def job_predicted(self, job_id: str) -> str:
        """Hash of a job's predicted-label histogram: ``name=value`` -> images the classifier gave that value."""
        return f"{self.job(job_id)}:predicted"

    def result(self, job_id: str, chunk: int) -> str:
        """Hash of one chunk's result: its tar blocks and the offset of each sample in them."""
        return f"{self.prefix(self.shard_of(job_id))}:result:{job_id}:{chunk}"

    # per collection, in the collection's shard

    def collection(self, tenant: str, name: str) -> str:
        """List of the accepted embeddings (float32 blocks) of every job in a tenant's collection."""
        return f"{self.prefix(self.collection_shard(tenant, name))}:collection:{tenant}:{name}"

    def collection_lock(self, tenant: str, name: str) -> str:
        return f"{self.collection(tenant, name)}:lock"


DEFAULT = Keyspace()
STREAM_INTERACTIVE, STREAM_BULK = DEFAULT.stream_order(0)
STREAMS = {Priority.INTERACTIVE: STREAM_INTERACTIVE, Priority.BULK: STREAM_BULK}
STREAM_ORDER = (STREAM_INTERACTIVE, STREAM_BULK)
QUEUED_IMAGES_KEY = DEFAULT.queued_images(0)
job_key = DEFAULT.job
job_done_key = DEFAULT.job_done
job_progress_key = DEFAULT.job_progress
result_key = DEFAULT.result
unique_state_key = DEFAULT.unique_state
job_predicted_key = DEFAULT.job_predicted
collection_key = DEFAULT.collection
collection_lock_key = DEFAULT.collection_lock


def drained_key(bucket: int) -> str:
    return DEFAULT.drained(0, bucket)


def result_bytes_key(bucket: int) -> str:
    return DEFAULT.result_bytes(0, bucket)


def stream_priority(stream: str) -> Priority:
    """The priority of a stream of any shard, from its name."""
    return Priority.INTERACTIVE if stream.endswith(STREAM_SUFFIX[Priority.INTERACTIVE]) else Priority.BULK
