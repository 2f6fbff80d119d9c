"""Overload: job submissions at 10x the sustainable rate for 60 s, from a bounded number of clients.

1. capacity: the workers' drain rate W (images/s), from a batch of jobs; the sustainable submission
   rate is S = W / job size (jobs/s);
2. before: normal traffic, S/2, for --baseline-s;
3. overload: --factor x S for --overload-s, open loop, from --clients concurrent clients that do not
   back off (the worst case: every 429 is answered by the next request at once);
4. after: S/2 again for --recovery-s.

It records every response (2xx, 429 with or without Retry-After, 5xx, connection errors), samples the
api's and the workers' RSS and Redis's used_memory twice a second, and prints images/s and accepted
jobs/s in 10 s windows before, during and after, and how long after the overload throughput is back.

    python bench/bench_overload.py                         # the shipped model, 60 s at 10x
    python bench/bench_overload.py --overload-s 10         # a short run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.live import LiveService

RESULTS = Path(__file__).resolve().parent / "results"
from tests.support.overload import run, summarize, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overload-s", type=float, default=60.0)
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--baseline-s", type=float, default=10.0)
    parser.add_argument("--recovery-s", type=float, default=15.0)
    parser.add_argument("--job-size", type=int, default=100)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-queued-images", type=int, default=3000, help="admission budget (a few seconds of work)")
    parser.add_argument("--models-dir", default=None, help="default: the shipped models/")
    parser.add_argument("--model", default=None, help="default: SYNTHGEN_DEFAULT_MODEL")
    parser.add_argument("--out", default=str(RESULTS / "overload"), help="writes OUT.json and OUT.txt")
    args = parser.parse_args()
    env = {"SYNTHGEN_MAX_QUEUED_IMAGES": str(args.max_queued_images), "SYNTHGEN_RESULT_TTL_S": "600"}
    if args.models_dir:
        env["SYNTHGEN_MODELS_DIR"] = args.models_dir
    if args.model:
        env["SYNTHGEN_DEFAULT_MODEL"] = args.model
    with LiveService(env, workers=args.workers) as service:
        service.wait_workers()
        report = run(service, args.job_size, args.factor, args.overload_s, args.baseline_s, args.recovery_s, args.clients)
    summary = summarize(report)
    text = table(summary)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**summary, "samples": [asdict(s) for s in report.samples]}, indent=1))
    out.with_suffix(".txt").write_text(text + "\n")
    print(f"\nwritten: {out.with_suffix('.txt')}, {out.with_suffix('.json')}")
    median_api = statistics.median(s.api_rss_mb for s in report.samples)
    print(f"median api RSS {median_api:.0f} MB over {len(report.samples)} samples")


if __name__ == "__main__":
    main()
