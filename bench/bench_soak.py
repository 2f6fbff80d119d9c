"""Soak: at least 1,000,000 images through HTTP, Redis and worker processes, then past the result TTL.

Clients submit jobs one after another (honouring 429 Retry-After) and stream every result over HTTP,
checking that each sample arrives once and in order. Meanwhile the api's and the workers' RSS and
Redis's used_memory are sampled. With a short TTL (60 s, the minimum) and no expired retention, the
run then waits until every job has expired and lists what is left in Redis: only the permanent keys
(the two streams and two counters) may remain.

    python bench/bench_soak.py                      # 1,000,000 images of the shipped model
    python bench/bench_soak.py --images 50000       # a short run
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.live import LiveService

RESULTS = Path(__file__).resolve().parent / "results"
from tests.support.soak import describe, run, soak_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--job-size", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--format", default="png")
    parser.add_argument("--ttl", type=int, default=60, help="SYNTHGEN_RESULT_TTL_S (at least 60)")
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--models-dir", default=None, help="default: the shipped models/")
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default=str(RESULTS / "soak"), help="writes OUT.json and OUT.txt")
    args = parser.parse_args()
    env = soak_env(args.ttl)
    if args.models_dir:
        env["SYNTHGEN_MODELS_DIR"] = args.models_dir
    if args.model:
        env["SYNTHGEN_DEFAULT_MODEL"] = args.model
    with LiveService(env, workers=args.workers) as service:
        service.wait_workers()
        report = run(service, args.images, args.job_size, args.clients, args.sample_every, args.format, wait_ttl=True)
    text = describe(report)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(asdict(report), indent=1))
    out.with_suffix(".txt").write_text(text + "\n")
    print(f"\nwritten: {out.with_suffix('.txt')}, {out.with_suffix('.json')}")
    if report.lost or report.failed or report.leaked_after_ttl:
        sys.exit(1)


if __name__ == "__main__":
    main()
