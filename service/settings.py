"""Typed settings for every synthgen process, read from the environment (``SYNTHGEN_*``) or ``.env``.

A leaf: it imports no other synthgen module. Each value has its default here and nowhere else; the
layers build their own configuration objects from a ``Settings`` (``QueueConfig.from_settings`` ...).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def default_data_dir() -> Path:
    """The per-user data folder (XDG): ``$XDG_DATA_HOME/synthgen``, else ``~/.local/share/synthgen``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "synthgen"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SYNTHGEN_", env_file=".env", extra="ignore")

    # Redis: a URL (redis://, rediss://, unix://). Empty means: start an embedded redis-server.
    redis_url: str = Field(default="", validation_alias=AliasChoices("REDIS_URL", "SYNTHGEN_REDIS_URL"))
    # With no REDIS_URL, `synthgen serve` keeps its embedded Redis (append-only file) in this folder, so a
    # restart or a crash keeps the jobs. One process at a time may use it.
    data_dir: Path = Field(default_factory=lambda: default_data_dir())
    embedded_appendfsync: Literal["everysec", "always"] = "everysec"  # always: nothing acknowledged is ever lost
    # Redis Cluster: every process uses redis-py's cluster client, REDIS_URL names any node of it.
    redis_cluster: bool = False
    # The queue's shards (each with its own streams and counters; a job lives in the one its id hashes to).
    # 0: one on a single Redis (the untagged key layout), 12 on a cluster. Every process must agree.
    queue_shards: int = Field(default=0, ge=0, le=1024)
    require_noeviction: bool = False  # refuse to start (not just warn) on a Redis whose maxmemory-policy evicts keys
    drain_timeout_s: float = Field(default=30.0, gt=0)  # on SIGTERM: how long in-flight work may take to finish

    models_dir: Path = DEFAULT_MODELS_DIR
    default_model: str = "avatars-64"  # name, or name@version
    execution_provider: Literal["auto", "cpu", "cuda"] = "auto"
    io_binding: Literal["auto", "on", "off"] = "auto"  # auto: on with CUDA (preallocated device buffers)

    max_count: int = Field(default=1_000_000, ge=1)
    chunk_size: int = Field(default=256, ge=1, le=65536)  # images per work item (C)
    interactive_max_count: int = Field(default=64, ge=0)  # jobs up to this size default to interactive

    batch_size: int = Field(default=64, ge=1, le=4096)  # latents per inference batch (B)
    batch_wait_ms: float = Field(default=5.0, ge=0)  # how long the batcher waits to fill a batch (W)
    worker_concurrency: int = Field(default=4, ge=1)  # work items in flight per worker
    encode_threads: int = Field(default=2, ge=1)
    ort_threads: int = Field(default=0, ge=0)  # 0: let onnxruntime decide
    # Sessions of each decoder, sharing ort_threads; a batch decodes split into one part per session, all at once.
    # 0: auto (on CPU up to 4: two one-thread sessions outrun one two-thread session on 2 cores; on CUDA 1)
    ort_instances: int = Field(default=0, ge=0, le=64)
    ort_spinning: bool = False  # let idle onnxruntime threads spin: a little more throughput, CPU burnt while idle
    # Single images and interpolations: decoded by the workers (sent on the interactive request list,
    # batched with bulk work, interactive first), or in the api process. auto: by the process's own
    # worker when it has one (``serve --role all``), else by the workers.
    interactive_decode: Literal["auto", "api", "workers"] = "auto"
    # How long the api waits for a worker's reply before it asks again once, then answers 503 unavailable.
    interactive_timeout_s: float = Field(default=5.0, gt=0, le=8)  # below the client socket timeout (10 s)
    # Single images that reach the api together go to the workers in requests of at most this many rows: small
    # enough that a worker starts decoding while the api still reads the rest of a burst (bench/bench_serving.py)
    interactive_rows: int = Field(default=16, ge=1, le=4096)
    png_compress_level: int = Field(default=1, ge=0, le=9)
    visibility_timeout_s: float = Field(default=60.0, gt=0)  # idle time before another worker reclaims

    result_ttl_s: int = Field(default=86_400, ge=60)  # a job's results are kept this long; then it is "expired"
    expired_retention_s: int = Field(default=86_400, ge=0)  # an expired job still answers "expired" this long
    result_store: str = Field(default="redis", pattern=r"^(redis|dir:.+)$")  # or dir:/path/to/volume

    # Admission control: beyond these, POST /v1/jobs answers 429 queue_full with Retry-After.
    max_queued_images: int = Field(default=2_000_000, ge=1)
    max_result_bytes: int = Field(default=2 * 1024**3, ge=1)  # results stored (Redis memory or the volume)

    # API keys: comma- or newline-separated, and/or a file (a mounted secret) with one key per line.
    api_keys: str = ""
    api_keys_file: Path | None = None
    read_only_api_keys: str = ""  # keys that may read (models, status, results, images) but not create or cancel jobs
    require_api_keys: bool = False  # refuse to start without keys (production)
    metrics_require_key: bool = False
    quota_images_per_day: int = Field(default=0, ge=0)  # per key; 0: unlimited
    quota_concurrent_jobs: int = Field(default=0, ge=0)  # per key; 0: unlimited
    max_body_bytes: int = Field(default=65_536, ge=1024)
    body_timeout_s: float = Field(default=30.0, gt=0)  # a request body slower than this gets 408
    cors_origins: str = ""  # comma-separated origins allowed to call the API from a browser; "*" for any

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "info"


@lru_cache
def get_settings() -> Settings:
    """The process's settings; built on first use, never at import time."""
    return Settings()


def default(name: str) -> Any:
    """The default of one setting: for configuration objects that other layers build from a ``Settings``."""
    return Settings.model_fields[name].default
