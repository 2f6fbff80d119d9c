"""Where the time of the serving path goes: py-spy samples the api and the worker process while npy bulk
jobs (or 32 clients of single images) run, and this prints the busiest frames of each, by self time.

    pip install py-spy   # not a dependency of the project
    python bench/profile_serving.py --workload bulk --seconds 10
    python bench/profile_serving.py --workload interactive --seconds 10
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_serving import bulk_jobs
from bench.http_load import closed_loop
from tests.support.live import LiveService


def summarize(raw: Path, top: int) -> list[str]:
    """Self-time share of the innermost frames (function and file) of py-spy's collapsed stacks."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        leaf = stack.split(";")[-1]
        counts[leaf.split(" (")[0] + " (" + leaf.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]] += int(n)
        total += int(n)
    return [f"{100 * c / max(total, 1):5.1f}%  {name}" for name, c in counts.most_common(top)]


def summarize_inclusive(raw: Path, top: int) -> list[str]:
    """Share of samples in which each function (and file) is anywhere on the stack: where whole steps spend."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = {f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] for f in stack.split(";")}
        for frame in frames:
            counts[frame] += int(n)
        total += int(n)
    return [f"{100 * c / max(total, 1):5.1f}%  {name}" for name, c in counts.most_common(top)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=["bulk", "interactive"], default="bulk")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--keep", metavar="DIR", help="keep py-spy's raw stacks (api.txt, worker.txt) in DIR")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    env = {
        "SYNTHGEN_ORT_THREADS": "2",
        "SYNTHGEN_BATCH_SIZE": "256",
        "SYNTHGEN_CHUNK_SIZE": "256",
        "SYNTHGEN_LOG_LEVEL": "warning",
    }
    service = LiveService(env, workers=1)
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sg-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        service.wait_workers()
        assert service.api is not None

        def drive() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the service closes under it when the sampling ends
                if args.workload == "bulk":
                    bulk_jobs(service.base_url, 256 * 400, 256, 2, labels=False)
                else:
                    port = int(service.base_url.rsplit(":", 1)[1])
                    closed_loop("127.0.0.1", port, lambda c, i: f"/v1/images/{5000 + c}.npy?index={i}", 32, 400)

        load = threading.Thread(target=drive, daemon=True)
        load.start()
        targets = {"api": service.api.pid, "worker": service.workers[0].pid}
        spies = [
            subprocess.Popen([spy, "record", "--nonblocking", "--threads", "--format", "raw", "-d", str(args.seconds),
                              "-p", str(pid), "-o", str(out / f"{name}.txt")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in targets.items()
        ]  # fmt: skip
        for process in spies:
            process.wait(args.seconds + 60)
        for name in targets:
            print(f"\n{name}: busiest frames by self time ({args.workload}, {args.seconds} s)")
            print("\n".join("   " + line for line in summarize(out / f"{name}.txt", args.top)))
            print(f"{name}: functions on the stack, by share of samples")
            print("\n".join("   " + line for line in summarize_inclusive(out / f"{name}.txt", 2 * args.top)))
    finally:
        service.close()
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
