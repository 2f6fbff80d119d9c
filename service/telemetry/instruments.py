"""Prometheus metrics of the api and the worker (prometheus-client, default registry)."""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import Counter, Gauge, Histogram


class ChunkOutcome(StrEnum):
    """The ``outcome`` label of synthgen_chunks_total: what became of a work item."""

    DONE = "done"  # computed, stored and counted
    SKIPPED = "skipped"  # its job was gone, stopped or expired
    ERROR = "failed"  # it could not be computed: its job failed
    REDIS_ERROR = "redis_error"  # left pending for a retry
    STORE_FULL = "store_full"  # the result store had no room: its job failed


_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter("synthgen_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "synthgen_http_request_seconds", "HTTP request latency by route", ["method", "route"], buckets=_LATENCY_BUCKETS
)
JOBS_CREATED = Counter("synthgen_jobs_created_total", "Jobs accepted", ["model", "priority"])
JOBS_FINISHED = Counter("synthgen_jobs_finished_total", "Jobs by final status, as seen by workers", ["status"])
QUEUE_LAG = Gauge("synthgen_queue_lag", "Work items not yet delivered to any worker", ["priority"])
QUEUE_PENDING = Gauge("synthgen_queue_pending", "Work items delivered but not yet acknowledged", ["priority"])
BATCH_SIZE = Histogram("synthgen_batch_size", "Latents per inference batch", ["model"], buckets=_BATCH_BUCKETS)
BATCH_FILL = Histogram(
    "synthgen_batch_fill_ratio", "Batch size over the maximum batch size", ["model"], buckets=(0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
)
INFERENCE_SECONDS = Histogram("synthgen_inference_seconds", "Decoder time per batch", ["model"], buckets=_LATENCY_BUCKETS)
ENCODE_SECONDS = Histogram("synthgen_encode_seconds", "Encoding time per chunk", ["format"], buckets=_LATENCY_BUCKETS)
IMAGES = Counter("synthgen_images_generated_total", "Images generated", ["model", "format"])
CHUNKS = Counter("synthgen_chunks_total", "Work items processed by outcome", ["outcome"])
REDELIVERIES = Counter("synthgen_redeliveries_total", "Work items reclaimed from a dead or stalled worker")
RESULT_BYTES = Counter("synthgen_result_bytes_total", "Bytes of results stored")
WORKER_INFLIGHT = Gauge("synthgen_worker_inflight", "Work items a worker is processing now")
JOB_SECONDS = Histogram(
    "synthgen_job_seconds",
    "Job duration from creation to its last chunk",
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400),
)
ADMISSIONS_REJECTED = Counter("synthgen_admissions_rejected_total", "Jobs refused by admission control", ["reason"])
QUEUED_IMAGES = Gauge("synthgen_queued_images", "Images accepted and not yet generated")
RESULT_BYTES_STORED = Gauge("synthgen_result_bytes_stored", "Bytes of results currently stored (until they expire)")
DRAIN_RATE = Gauge("synthgen_drain_rate_images_per_second", "Images completed per second over the last minute")
INTERACTIVE_REQUESTS = Counter(
    "synthgen_interactive_requests_total",
    "Requests a worker took from the interactive channel (each: the single images and interpolations that reached "
    "an api together), by outcome",
    ["outcome"],
)
