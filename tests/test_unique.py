"""Unique crowds and collections, checked by an independent distance computation."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from service.engine.registry import ModelRegistry


def _finish(client: TestClient, job_id: str, timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def _samples(client: TestClient, job_id: str) -> tuple[np.ndarray, list[dict[str, Any]]]:
    data = client.get(f"/v1/jobs/{job_id}/result").content
    images, metas = [], []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            blob = tar.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith(".png"):
                images.append(np.asarray(Image.open(io.BytesIO(blob))))
            else:
                metas.append(json.loads(blob))
    return np.stack(images), metas


def _closest_pair_rms(images: np.ndarray) -> float:
    """Written independently of the service: plain float64 thumbnails by block averaging."""
    n, h, w, c = images.shape
    small = images.astype(np.float64).reshape(n, 16, h // 16, 16, w // 16, c).mean(axis=(2, 4)) / 255.0
    flat = small.reshape(n, -1)
    best = np.inf
    for i in range(n - 1):
        d = np.sqrt(((flat[i + 1 :] - flat[i]) ** 2).mean(axis=1))
        best = min(best, float(d.min()))
    return best


def test_a_unique_job_has_no_near_duplicates(app_factory: Callable[..., TestClient], tiny_models_dir: Path) -> None:
    client = app_factory(chunk_size=256, batch_size=64)
    threshold = ModelRegistry.from_directory(tiny_models_dir, "tiny").default.package.uniqueness_threshold
    plain = client.post("/v1/jobs", json={"count": 2000, "seed": 11}).json()
    unique = client.post("/v1/jobs", json={"count": 2000, "seed": 11, "unique": True}).json()
    assert _finish(client, plain["id"])["status"] == "succeeded"
    assert _finish(client, unique["id"])["done"] == 2000
    plain_images, _ = _samples(client, plain["id"])
    images, metas = _samples(client, unique["id"])
    assert len(images) == 2000  # exactly count images
    assert _closest_pair_rms(plain_images) < threshold  # the plain job does have near-duplicates
    assert _closest_pair_rms(images) >= threshold * (1 - 1e-4)  # float32 vs float64 thumbnails
    sources = [m["source_index"] for m in metas]
    assert sources == sorted(sources) and len(set(sources)) == 2000 and sources[-1] > 1999  # some were replaced
    # an image of a unique job is still the ordinary image of its source index
    assert metas[5]["index"] == 5
    same = client.post("/v1/jobs", json={"count": 2000, "seed": 11, "unique": True}).json()
    _finish(client, same["id"])
    again, _ = _samples(client, same["id"])
    assert np.array_equal(again, images)  # the same request gives the same set


def test_a_collection_stays_unique_across_jobs(app_factory: Callable[..., TestClient], tiny_models_dir: Path) -> None:
    client = app_factory(chunk_size=128)
    threshold = ModelRegistry.from_directory(tiny_models_dir, "tiny").default.package.uniqueness_threshold
    first = client.post("/v1/jobs", json={"count": 400, "seed": 3, "collection": "crowd-a"}).json()
    _finish(client, first["id"])
    second = client.post("/v1/jobs", json={"count": 400, "seed": 3, "collection": "crowd-a"}).json()
    _finish(client, second["id"])
    a, _ = _samples(client, first["id"])
    b, metas_b = _samples(client, second["id"])
    assert _closest_pair_rms(np.concatenate([a, b])) >= threshold * (1 - 1e-4)
    assert metas_b[0]["source_index"] > 0  # the same seed had to move past the first job's faces
    bad = client.post("/v1/jobs", json={"count": 4, "collection": "../etc"})
    assert bad.status_code == 422 and "collection" in bad.json()["error"]["message"]


def test_a_unique_job_survives_a_worker_kill(
    app_factory: Callable[..., TestClient], worker_processes: Callable[..., Any], redis_url: str
) -> None:
    import signal

    reference = app_factory(chunk_size=100)
    ref = reference.post("/v1/jobs", json={"count": 1200, "seed": 17, "unique": True}).json()
    _finish(reference, ref["id"])
    expected, _ = _samples(reference, ref["id"])

    api = app_factory(with_worker=False, chunk_size=100)
    job = api.post("/v1/jobs", json={"count": 1200, "seed": 17, "unique": True}).json()
    victim = worker_processes(SYNTHGEN_BATCH_SIZE="64")
    deadline = time.monotonic() + 60
    while api.get(f"/v1/jobs/{job['id']}").json()["done"] < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    assert api.get(f"/v1/jobs/{job['id']}").json()["done"] < 1200
    worker_processes(SYNTHGEN_BATCH_SIZE="64")  # takes the job over after the visibility timeout
    assert _finish(api, job["id"])["done"] == 1200
    images, _ = _samples(api, job["id"])
    assert np.array_equal(images, expected)


def _with_training_index(tiny_models_dir: Path, tmp_path: Path, training_images: np.ndarray, threshold: float) -> Path:
    """A copy of the tiny package that ships ``training_images`` as its privacy index."""
    import shutil

    from export.manifest import write_manifest
    from synthgen.core.privacy import METRIC, thumbnails8, write_index

    package = tmp_path / "models" / "tiny"
    shutil.copytree(tiny_models_dir / "tiny", package)
    write_index(package / "train_index.npz", thumbnails8(training_images))
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["privacy"] = {"file": "train_index.npz", "metric": METRIC, "threshold": threshold, "images": len(training_images)}
    files = [package / name for name in [*manifest["files"], "train_index.npz"]]
    write_manifest(package / "manifest.json", manifest, files)
    return package.parent


def test_novel_jobs_keep_away_from_training_images(
    app_factory: Callable[..., TestClient], tiny_models_dir: Path, tmp_path: Path
) -> None:
    from synthgen.core.privacy import min_distances, thumbnails8

    model = ModelRegistry.from_directory(tiny_models_dir, "tiny").default
    memorized = model.generate(5, np.arange(60))  # pretend the model reproduces its first 60 faces of seed 5
    threshold = 0.0004
    models_dir = _with_training_index(tiny_models_dir, tmp_path, memorized, threshold)
    client = app_factory(models_dir=models_dir, chunk_size=64)
    job = client.post("/v1/jobs", json={"count": 100, "seed": 5, "novel": True}).json()
    assert _finish(client, job["id"])["status"] == "succeeded"
    images, metas = _samples(client, job["id"])
    assert len(images) == 100
    assert min_distances(thumbnails8(images), thumbnails8(memorized)).min() >= threshold  # independent of the worker's mask
    assert metas[0]["source_index"] >= 60 and all(m["novel"] for m in metas)


def test_novel_needs_a_training_index(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(with_worker=False)
    response = client.post("/v1/jobs", json={"count": 4, "novel": True})
    assert response.status_code == 422 and "training index" in response.json()["error"]["message"]
