"""Throughput and p99 latency of each example model on the local stack's real Triton, at concurrency 1..8.

    .venv/bin/python bench/serve_local.py                  # every model of the local stack
    .venv/bin/python bench/serve_local.py --concurrency 1,4

Serves exactly what `modelfleet serve` serves (the plan's CPU configs, tuned where a record exists) and drives
it with perf_analyzer over gRPC. Two shared cores are noisy: read the figures as a shape, not a promise.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from modelfleet.loader import load_fleet
from modelfleet.local import build_local_repository
from modelfleet.plan import build_plan
from modelfleet.triton.runtime import PerfAnalyzerError, TritonServer, free_ports, run_perf_analyzer

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="local")
    parser.add_argument("--concurrency", default="1,2,3,4,5,6,7,8", help="comma-separated concurrency steps")
    parser.add_argument("--window-ms", type=int, default=1000, help="perf_analyzer measurement window")
    args = parser.parse_args()
    steps = [int(c) for c in args.concurrency.split(",")]

    plan = build_plan(load_fleet(ROOT, args.stack))
    with tempfile.TemporaryDirectory() as tmp:
        repository = build_local_repository(plan, ROOT, Path(tmp) / "repository")
        http, grpc, metrics = free_ports(3)
        with TritonServer(repository, http, grpc, metrics) as server:
            print(f"{'model':<16} {'concurrency':>11} {'infer/s':>9} {'p99 ms':>8}")
            for model in plan.models:
                for concurrency in steps:
                    try:
                        [point] = run_perf_analyzer(model.name, server.grpc_url, [concurrency],
                                                    measurement_interval_ms=args.window_ms, stability_percentage=50)
                        print(f"{model.name:<16} {concurrency:>11} {point.throughput_infer_per_s:>9.0f} "
                              f"{point.p99_latency_ms:>8.2f}", flush=True)
                    except PerfAnalyzerError as exc:
                        reason = str(exc).splitlines()[0][:60]
                        print(f"{model.name:<16} {concurrency:>11} {'—':>9} {'—':>8}  ({reason})", flush=True)


if __name__ == "__main__":
    main()
