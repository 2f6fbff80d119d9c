"""Raw bulk (npy) and interactive single images through the service, against in-process onnxruntime, in one run.

Every number is measured here, now, next to its baseline, with the same onnxruntime threads and
spinning setting everywhere (``--ort-threads``, spinning off):

1. bulk baseline: in-process decode of batches of ``--job-size`` decode rows (``LoadedModel.inputs``: the
   latents, and a conditional model's attributes) + npy encoding of every image, on one onnxruntime session of
   ``--ort-threads`` threads; and the same work on the decoder as the service loads it by default
   (SYNTHGEN_ORT_INSTANCES auto: on 2 CPU cores two one-thread sessions, each batch decoded in halves at once);
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

This machine's speed drifts by tens of percent within a minute, so every measurement runs in ``--rounds``
slices, each right after a slice of its baseline, and each rate is over all its slices.

    python bench/bench_serving.py                      # about 3 minutes on 2 cores
    python bench/bench_serving.py --rounds 5 --images 4096 --per-client 48
"""

from __future__ import annotations

import argparse
import os
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
from service.engine.registry import LoadedModel, ModelRegistry, instance_plan
from service.engine.sessions import open_session, pick_providers
from service.settings import get_settings
from synthgen.core.images import encode_image
from tests.support.live import LiveService


def load_model(ort_threads: int, provider: str) -> LoadedModel:
    settings = get_settings()
    model = ModelRegistry.from_directory(settings.models_dir, settings.default_model).default
    model.session = open_session(model.package, pick_providers(provider), ort_threads, spinning=False)
    return model


def load_instances(ort_threads: int, provider: str) -> LoadedModel:
    """The decoder as the service loads it by default (SYNTHGEN_ORT_INSTANCES auto): on 2 CPU cores, two
    one-thread sessions, each batch decoded in two halves at once."""
    settings = get_settings()
    return ModelRegistry.from_directory(settings.models_dir, settings.default_model, provider, ort_threads, False, 0).default


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


def interactive(base: str, clients: int, per_client: int, ext: str = "npy", first_seed: int = 5000) -> tuple[float, list[float]]:
    """images/s and the latencies (s) of ``clients`` connections each fetching ``per_client`` single images back to
    back, from the light load generator (bench/http_load.py)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    return closed_loop(
        host, int(port), lambda c, i: f"/v1/images/{first_seed + c}.{ext}?index={i}", clients=clients, per_client=per_client
    )


def interactive_httpx(
    base: str, clients: int, per_client: int, ext: str = "npy", first_seed: int = 5000
) -> tuple[float, list[float]]:
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
    return len(latencies) / (time.perf_counter() - started), latencies


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


class Tally:
    """Measurements taken in slices that alternate with their baselines' (this machine's speed drifts by tens of
    percent within a minute): each one's images and seconds summed over its slices, and latencies pooled."""

    def __init__(self) -> None:
        self.images: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.latencies: dict[str, list[float]] = {}
        self.cpu_ms: dict[str, float] = {}  # CPU ms per image of the process that matters (the api, the clients)

    def add(self, name: str, images: int, rate: float) -> None:
        self.images[name] = self.images.get(name, 0.0) + images
        self.seconds[name] = self.seconds.get(name, 0.0) + images / rate

    def rate(self, name: str) -> float:
        return self.images[name] / self.seconds[name]

    def quantiles_ms(self, name: str) -> tuple[float, float]:
        p50, p99 = np.quantile(self.latencies[name], [0.5, 0.99]) * 1000
        return float(p50), float(p99)


def measure_bulk(
    service: LiveService, args: argparse.Namespace, model: LoadedModel, instances: LoadedModel, tally: Tally
) -> None:
    """Bulk jobs (npy) and their in-process baselines, slice by slice; with a classifier, labeled jobs too."""
    base, n, size = service.base_url, args.images, args.job_size
    labeled = model.labeler is not None
    bulk_baseline(model, size, size, label=labeled)  # warm-ups, the classifier too
    bulk_jobs(base, 2 * size, size, args.in_flight, labels=False)
    for _ in range(args.rounds):
        tally.add("bulk_base", n, bulk_baseline(model, n, size))
        tally.add("jobs", n, bulk_jobs(base, n, size, args.in_flight, labels=False))
        tally.add("bulk_instances", n, bulk_baseline(instances, n, size))
        tally.add("one_job", n, one_job(base, n, labels=False))
        if labeled:
            tally.add("bulk_labeled", n, bulk_baseline(model, n, size, label=True))
            tally.add("jobs_labeled", n, bulk_jobs(base, n, size, args.in_flight))
            tally.add("one_job_labeled", n, one_job(base, n))


def measure_interactive(service: LiveService, mode: str, args: argparse.Namespace, model: LoadedModel, tally: Tally) -> None:
    """Single images from the light load generator, slice by slice with the in-process batch-1 loop (``mode`` and
    ``batch1 mode``, with the api's CPU per image) and, with workers decoding, from httpx clients in threads
    (``httpx``, with those clients' own CPU per image)."""
    assert service.api is not None
    clients, per_client = args.clients, args.per_client
    n, n1 = clients * per_client, min(args.images, 1000)
    interactive(service.base_url, clients, 2)  # warm-up
    api_seconds = 0.0
    for r in range(args.rounds):
        tally.add(f"batch1 {mode}", n1, batch1_baseline(model, n1))
        cpu_before = cpu_seconds(service.api.pid)
        rate, latencies = interactive(service.base_url, clients, per_client, first_seed=5000 + 100 * r)
        api_seconds += cpu_seconds(service.api.pid) - cpu_before
        tally.add(mode, n, rate)
        tally.latencies.setdefault(mode, []).extend(latencies)
    tally.cpu_ms[mode] = api_seconds * 1000 / (n * args.rounds)
    if mode == "workers":
        own = cpu_seconds(os.getpid())
        rate, latencies = interactive_httpx(service.base_url, clients, per_client)
        tally.cpu_ms["httpx"] = (cpu_seconds(os.getpid()) - own) * 1000 / n
        tally.add("httpx", n, rate)
        tally.add("batch1 httpx", n1, batch1_baseline(model, n1))
        tally.latencies["httpx"] = latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2048, help="images per slice of a bulk measurement")
    parser.add_argument("--job-size", type=int, default=256)
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--per-client", type=int, default=32, help="single images per client and slice")
    parser.add_argument("--ort-threads", type=int, default=2)
    parser.add_argument("--provider", default="auto", help="auto, cpu or cuda (the service gets the same)")
    parser.add_argument("--rounds", type=int, default=3, help="slices of every measurement, each beside its baseline's")
    args = parser.parse_args()
    model = load_model(args.ort_threads, args.provider)
    side_by_side = load_instances(args.ort_threads, args.provider)
    instances, threads_each = instance_plan(pick_providers(args.provider), args.ort_threads, 0)
    args.instances_note = f"{instances} decoder instances of {threads_each} thread(s)"
    print(
        f"{os.cpu_count()} cores; {model.package.ref} on {model.provider}; ort threads {args.ort_threads}, spinning off; "
        f"the baselines on one session of {args.ort_threads} threads, the service with {args.instances_note}"
    )
    env = {
        "SYNTHGEN_ORT_THREADS": str(args.ort_threads),
        "SYNTHGEN_ORT_SPINNING": "false",
        "SYNTHGEN_EXECUTION_PROVIDER": args.provider,
        "SYNTHGEN_BATCH_SIZE": str(args.job_size),
        "SYNTHGEN_CHUNK_SIZE": str(args.job_size),
        "SYNTHGEN_LOG_LEVEL": "warning",
    }
    tally = Tally()
    with_service(
        {**env, "SYNTHGEN_INTERACTIVE_DECODE": "workers"}, lambda service: measure_bulk(service, args, model, side_by_side, tally)
    )
    for mode in ("workers", "api"):
        with_service(
            {**env, "SYNTHGEN_INTERACTIVE_DECODE": mode, "SYNTHGEN_BATCH_SIZE": "64"},
            lambda service, mode=mode: measure_interactive(service, mode, args, model, tally),
        )
    report(args, tally)


def report(args: argparse.Namespace, tally: Tally) -> None:
    """Every measurement beside its baseline, each summed over its slices."""
    base, side, r = tally.rate("bulk_base"), tally.rate("bulk_instances"), tally.rate
    print(f"\n{args.rounds} slices of each measurement, alternating with their baselines; rates over all slices")
    print(f"bulk, npy, labels: false: in-process decode + npy encoding {base:.0f} images/s (batches of {args.job_size})")
    print(f"   jobs of {args.job_size}, {args.in_flight} in flight: {r('jobs'):.0f} images/s = {r('jobs') / base:.2f}x")
    print(f"   one job of {args.images}, streamed:  {r('one_job'):.0f} images/s = {r('one_job') / base:.2f}x")
    print(
        f"   the service's workers run {args.instances_note}; in-process on the same: {side:.0f} images/s; "
        f"against that: jobs {r('jobs') / side:.2f}x, one job {r('one_job') / side:.2f}x"
    )
    if "bulk_labeled" in tally.images:
        labeled = r("bulk_labeled")
        print(f"bulk, npy, labeled (the package's classifier on every image): in-process {labeled:.0f} images/s")
        print(
            f"   jobs of {args.job_size}, {args.in_flight} in flight: {r('jobs_labeled'):.0f} images/s = {r('jobs_labeled') / labeled:.2f}x"
        )
        print(
            f"   one job of {args.images}, streamed:  {r('one_job_labeled'):.0f} images/s = {r('one_job_labeled') / labeled:.2f}x"
        )
    print(f"\ninteractive, {args.clients} clients x {args.per_client} single images a slice (GET /v1/images/{{seed}}.npy)")
    print("   light load generator (bench/http_load.py, keep-alive connections):")
    for mode in ("workers", "api"):
        rate, batch1 = r(mode), r(f"batch1 {mode}")
        p50, p99 = tally.quantiles_ms(mode)
        api_ms = tally.cpu_ms[mode]
        print(
            f"   decoded by the {mode + ':':8s} {rate:6.0f} images/s = {rate / batch1:.2f}x the in-process batch-1 loop "
            f"({batch1:.0f}/s), p50 {p50:5.1f} ms, p99 {p99:5.1f} ms; api process CPU {api_ms:.2f} ms per image "
            f"(1 core serves {1000 / api_ms:.0f} images/s)"
        )
    rate, batch1 = r("httpx"), r("batch1 httpx")
    p50, p99 = tally.quantiles_ms("httpx")
    print(
        f"   httpx clients in {args.clients} threads, decoded by the workers: {rate:.0f} images/s = {rate / batch1:.2f}x "
        f"({batch1:.0f}/s), p50 {p50:.1f} ms, p99 {p99:.1f} ms; the clients' own CPU {tally.cpu_ms['httpx']:.2f} ms per image"
    )


if __name__ == "__main__":
    main()
