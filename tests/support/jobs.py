"""Helpers for jobs seen from outside: wait for a status, read a result tar, the bytes a clean run gives."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from synthgen.core.jobs import TERMINAL_STATUSES


def wait_job(
    http: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool],
    timeout_s: float = 300,
    poll_s: float = 0.05,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll a job's status until ``until(job)``; transient errors (api restarting, 503) are retried."""
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            response = http.get(f"/v1/jobs/{job_id}", headers=headers)
            if response.status_code == 200:
                job = response.json()
                if until(job):
                    return job
        except httpx.TransportError:
            pass
        time.sleep(poll_s)
    raise AssertionError(f"job {job_id} never reached the condition in {timeout_s} s; last seen {job}")


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in TERMINAL_STATUSES


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def download_digest(http: httpx.Client, job_id: str) -> tuple[str, list[str]]:
    """Stream a job's whole result tar: its sha256, and its member names in order."""
    digest, data = hashlib.sha256(), bytearray()
    with http.stream("GET", f"/v1/jobs/{job_id}/result", timeout=300) as response:
        assert response.status_code == 200, response.read()
        for block in response.iter_bytes(1 << 20):
            digest.update(block)
            data += block
    return digest.hexdigest(), tar_names(bytes(data))


def expected_names(count: int, ext: str = "png") -> list[str]:
    """The member names of a complete result of ``count`` images: each image once, in index order."""
    return [f"{i:08d}.{e}" for i in range(count) for e in (ext, "json")]


def clean_tar_digest(models_dir: Path, model: str, seed: int, count: int, fmt: str = "png", batch: int = 2048) -> str:
    """sha256 of the tar a job should give, made in this process: no queue, no worker, no kill."""
    from service.engine.registry import ModelRegistry
    from service.engine.rendering import RenderSpec, render, samples_to_tar
    from synthgen.core.webdataset import tar_end

    loaded = ModelRegistry.from_directory(models_dir, model).default
    spec = RenderSpec(seed=seed, fmt=fmt)
    digest = hashlib.sha256()
    for start in range(0, count, batch):
        blocks, _ = samples_to_tar(render(loaded, spec, np.arange(start, min(count, start + batch))), fmt)
        digest.update(blocks)
    digest.update(tar_end())
    return digest.hexdigest()
