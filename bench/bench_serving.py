"""Raw bulk (npy) and interactive single images through the service, against in-process onnxruntime, in one run.

Every number is measured here, now, next to its baseline, with the same onnxruntime threads and
spinning setting everywhere (``--ort-threads``, spinning off):

1. bulk baseline: in-process decode of batches of ``--job-size`` decode rows (``LoadedModel.inputs``: the
   latents, and a conditional model's attributes) + npy encoding of every image;
2. bulk through the service (api + 1 worker + Redis, npy): jobs of ``--job-size`` with ``--in-flight`` at
   a time, and one job of ``--images`` streamed; each as a ratio to (1). With a package that ships a
   classifier, a job labels every image (``predicted``): those jobs are compared with (1) plus the classifier
   in-process too, and the same jobs with ``labels: false`` (no classifier: the work of (1)) with (1);
3. interactive baseline: an in-process batch-1 loop (decode one row, encode it);
4. interactive through the service: ``--clients`` concurrent keep-alive connections fetching
   ``GET /v1/images/{seed}.npy`` back to back from a light load generator (bench/http_load.py), decoded by
   the workers (SYNTHGEN_INTERACTIVE_DECODE=workers) and in the api (=api): images/s, p50 and p99, images/s
   as a ratio to (3), and the api process's CPU time per image (what sizes the api pods: cores = images/s x
   that time); and the same load from httpx clients in threads, with the CPU those clients use per image.

    python bench/bench_serving.py                      # about 2 minutes on 2 cores
    python bench/bench_serving.py --images 8192 --clients 32 --per-client 32
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.http_load import closed_loop
from service.engine.registry import LoadedModel, ModelRegistry
from service.engine.sessions import open_session, pick_providers
from service.settings import get_settings
from synthgen.core.images import encode_image
from tests.support.live import LiveService

Stats = tuple[float, float, float, float]  # images/s, p50 ms, p99 ms, CPU ms per image (the api's, or the clients')


def load_model(ort_threads: int, provider: str) -> LoadedModel:
    settings = get_settings()
    model = ModelRegistry.from_directory(settings.models_dir, settings.default_model).default
    model.session = open_session(model.package, pick_providers(provider), ort_threads, spinning=False)
    return model


def bulk_baseline(model: LoadedModel, images: int, batch: int, label: bool = False) -> float:
    """Images/s of in-process decode + npy encoding of every image; with ``label``, also the package's classifier
    on every batch, which a bulk job of a package with a classifier runs for each image's ``predicted``."""
    started = time.perf_counter()
    for start in range(0, images, batch):
        out = model.decode(model.inputs(0, np.arange(start, min(images, start + batch))))
        if label:
            model.predict(out)
        for image in out:
            encode_image(image, "npy")
    return images / (time.perf_counter() - started)


def batch1_baseline(model: LoadedModel, images: int) -> float:
    started = time.perf_counter()
    for i in range(images):
        encode_image(model.decode(model.inputs(1000, np.array([i])))[0], "npy")
    return images / (time.perf_counter() - started)


def run_job(http: httpx.Client, count: int, seed: int, labels: bool = True) -> int:
    body = {"count": count, "seed": seed, "format": "npy", "priority": "bulk", **({} if labels else {"labels": False})}
    job = http.post("/v1/jobs", json=body).json()
    size = 0
    with http.stream("GET", f"/v1/jobs/{job['id']}/result", timeout=None) as response:
        response.raise_for_status()
        for block in response.iter_bytes(1 << 20):
            size += len(block)
    return size


def bulk_jobs(base: str, images: int, job_size: int, in_flight: int, labels: bool = True) -> float:
    """Images/s of ``images // job_size`` jobs, ``in_flight`` at a time, each downloaded to the end."""
    jobs = max(1, images // job_size)
    with httpx.Client(base_url=base, timeout=120) as http:
        started = time.perf_counter()
        with ThreadPoolExecutor(in_flight) as pool:
            list(pool.map(lambda seed: run_job(http, job_size, seed, labels), range(jobs)))
        return jobs * job_size / (time.perf_counter() - started)


def one_job(base: str, images: int, labels: bool = True) -> float:
    with httpx.Client(base_url=base, timeout=120) as http:
        started = time.perf_counter()
        run_job(http, images, 99, labels)
        return images / (time.perf_counter() - started)


def interactive(base: str, clients: int, per_client: int, ext: str = "npy", first_seed: int = 5000) -> tuple[float, float, float]:
    """images/s, p50 ms and p99 ms of ``clients`` connections each fetching ``per_client`` single images back to back,
    from the light load generator (bench/http_load.py)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    rate, latencies = closed_loop(
        host, int(port), lambda c, i: f"/v1/images/{first_seed + c}.{ext}?index={i}", clients=clients, per_client=per_client
    )
    p50, p99 = np.quantile(latencies, [0.5, 0.99]) * 1000
    return rate, float(p50), float(p99)


def interactive_httpx(
    base: str, clients: int, per_client: int, ext: str = "npy", first_seed: int = 5000
) -> tuple[float, float, float]:
    """The same load from httpx clients in ``clients`` threads: a Python client costs more CPU per request than the
    service does, on the same cores, so this measures the client as much as the service."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            for i in range(per_client):
                started = time.perf_counter()
                http.get(f"/v1/images/{first_seed + c}.{ext}", params={"index": i}).raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - started
    p50, p99 = np.quantile(latencies, [0.5, 0.99]) * 1000
    return len(latencies) / elapsed, float(p50), float(p99)


def own_cpu_seconds() -> float:
    """User + system CPU time this process (the load generator) has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_service(env: dict[str, str], body: Callable[[LiveService], None]) -> None:
    service = LiveService(env, workers=1)
    try:
        service.wait_workers()
        body(service)
    finally:
        service.close()


def measure_interactive(service: LiveService, mode: str, clients: int, per_client: int, stats: dict[str, Stats]) -> None:
    """Single images from the light load generator (into ``stats[mode]``, with the api's CPU per image) and, with
    workers decoding, from httpx clients (``stats["httpx"]``, with those clients' own CPU per image); best kept."""
    assert service.api is not None
    interactive(service.base_url, clients, 2)  # warm-up
    cpu_before = cpu_seconds(service.api.pid)
    result = interactive(service.base_url, clients, per_client)
    api_ms = (cpu_seconds(service.api.pid) - cpu_before) * 1000 / (clients * per_client)
    if result[0] > stats.get(mode, (0.0, 0.0, 0.0, 0.0))[0]:
        stats[mode] = (*result, api_ms)
    if mode == "workers":
        own = own_cpu_seconds()
        result = interactive_httpx(service.base_url, clients, per_client)
        client_ms = (own_cpu_seconds() - own) * 1000 / (clients * per_client)
        if result[0] > stats.get("httpx", (0.0, 0.0, 0.0, 0.0))[0]:
            stats["httpx"] = (*result, client_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4096, help="images per bulk measurement")
    parser.add_argument("--job-size", type=int, default=256)
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--per-client", type=int, default=48)
    parser.add_argument("--ort-threads", type=int, default=2)
    parser.add_argument("--provider", default="auto", help="auto, cpu or cuda (the service gets the same)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every measurement; the best round counts")
    args = parser.parse_args()
    model = load_model(args.ort_threads, args.provider)
    print(f"{os.cpu_count()} cores; {model.package.ref} on {model.provider}; ort threads {args.ort_threads}, spinning off")
    env = {
        "SYNTHGEN_ORT_THREADS": str(args.ort_threads),
        "SYNTHGEN_ORT_SPINNING": "false",
        "SYNTHGEN_EXECUTION_PROVIDER": args.provider,
        "SYNTHGEN_BATCH_SIZE": str(args.job_size),
        "SYNTHGEN_CHUNK_SIZE": str(args.job_size),
        "SYNTHGEN_LOG_LEVEL": "warning",
    }
    best: dict[str, float] = {}
    stats: dict[str, Stats] = {}

    def keep(name: str, value: float) -> None:
        best[name] = max(best.get(name, 0.0), value)

    for _ in range(args.rounds):
        bulk_baseline(model, args.job_size, args.job_size, label=model.labeler is not None)  # warm-up, the classifier too
        keep("bulk_base", bulk_baseline(model, args.images, args.job_size))
        if model.labeler is not None:
            keep("bulk_labeled", bulk_baseline(model, args.images, args.job_size, label=True))
        keep("batch1", batch1_baseline(model, min(args.images, 2000)))

        def bulk(service: LiveService) -> None:
            base = service.base_url
            bulk_jobs(base, 2 * args.job_size, args.job_size, args.in_flight)  # warm-up
            keep("jobs", bulk_jobs(base, args.images, args.job_size, args.in_flight))
            keep("one_job", one_job(base, args.images))
            if model.labeler is not None:
                keep("jobs_unlabeled", bulk_jobs(base, args.images, args.job_size, args.in_flight, labels=False))
                keep("one_job_unlabeled", one_job(base, args.images, labels=False))

        with_service({**env, "SYNTHGEN_INTERACTIVE_DECODE": "workers"}, bulk)
        for mode in ("workers", "api"):
            with_service(
                {**env, "SYNTHGEN_INTERACTIVE_DECODE": mode, "SYNTHGEN_BATCH_SIZE": "64"},
                lambda service, mode=mode: measure_interactive(service, mode, args.clients, args.per_client, stats),
            )

    report(args, best, stats)


def report(args: argparse.Namespace, best: dict[str, float], stats: dict[str, Stats]) -> None:
    """Print the best round of every measurement, each beside its baseline."""
    base = best["bulk_base"]
    print(f"\nbulk, npy: in-process decode + npy encoding {base:.0f} images/s (batches of {args.job_size})")
    print(f"   jobs of {args.job_size}, {args.in_flight} in flight: {best['jobs']:.0f} images/s = {best['jobs'] / base:.2f}x")
    print(f"   one job of {args.images}, streamed:  {best['one_job']:.0f} images/s = {best['one_job'] / base:.2f}x")
    if "bulk_labeled" in best:
        labeled = best["bulk_labeled"]
        print(f"bulk, npy: in-process decode + classifier labels + npy encoding {labeled:.0f} images/s (the same work as a job)")
        print(f"   jobs of {args.job_size}, {args.in_flight} in flight: {best['jobs'] / labeled:.2f}x")
        print(f"   one job of {args.images}, streamed:  {best['one_job'] / labeled:.2f}x")
        print("bulk, npy, labels: false (no classifier: the work of the first baseline)")
        for name, what in (("jobs_unlabeled", f"jobs of {args.job_size}, {args.in_flight} in flight"),
                           ("one_job_unlabeled", f"one job of {args.images}, streamed")):  # fmt: skip
            print(f"   {what}: {best[name]:.0f} images/s = {best[name] / base:.2f}x the first baseline")
    print(f"\ninteractive, {args.clients} clients x {args.per_client} single images (GET /v1/images/{{seed}}.npy)")
    print(f"   in-process batch-1 loop: {best['batch1']:.0f} images/s")
    print("   light load generator (bench/http_load.py, keep-alive connections):")
    for mode in ("workers", "api"):
        rate, p50, p99, api_ms = stats[mode]
        print(
            f"   decoded by the {mode + ':':8s} {rate:6.0f} images/s = {rate / best['batch1']:.2f}x, p50 {p50:5.1f} ms, "
            f"p99 {p99:5.1f} ms; api process CPU {api_ms:.2f} ms per image (1 core serves {1000 / api_ms:.0f} images/s)"
        )
    rate, p50, p99, client_ms = stats["httpx"]
    print(
        f"   httpx clients in {args.clients} threads, decoded by the workers: {rate:.0f} images/s = {rate / best['batch1']:.2f}x, "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms; the clients' own CPU {client_ms:.2f} ms per image"
    )


if __name__ == "__main__":
    main()
