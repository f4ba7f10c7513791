"""`python -m modelfleet.gateway.run_service`: the ext_authz / ext_proc service as its own process (Envoy calls
it; `modelfleet serve` and the tests start it). Loads the same plan as everything else."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from modelfleet.gateway.service import serve
from modelfleet.loader import load_fleet
from modelfleet.plan import build_plan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--stack", required=True)
    parser.add_argument("--keys", type=Path, required=True, help="the hashed API-key file")
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--role", action="append", choices=("authz", "extproc"), required=True,
                        help="ext_authz, ext_proc, or both (repeat)")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="with extproc: sample inputs for drift and export PSI/KS on this port's /metrics")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    fleet = build_plan(load_fleet(args.root, args.stack))
    plan = fleet.gateway
    drift = None
    if args.metrics_port and "extproc" in args.role:
        from modelfleet.monitoring.drift_exporter import DriftSampler, serve_metrics

        drift = DriftSampler.for_models(fleet.models, args.root / "models")
        serve_metrics(drift, args.metrics_port, args.listen.rsplit(":", 1)[0])

    async def run() -> None:
        task = asyncio.create_task(serve(plan, args.keys, args.listen, tuple(args.role), drift=drift))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(run())


if __name__ == "__main__":
    main()
