"""`python -m modelfleet.gateway.run_service`: the ext_proc (inspection) service as its own process (Envoy calls
it; `modelfleet serve`, the tests and the cloud's inspector Deployment start it). Loads the same plan as everything
else."""

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
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="sample inputs for drift and export PSI/KS on this port's /metrics")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    fleet = build_plan(load_fleet(args.root, args.stack))
    plan = fleet.gateway
    drift = None
    if args.metrics_port:
        from modelfleet.monitoring.drift_exporter import DriftSampler, serve_metrics

        drift = DriftSampler.for_models(fleet.models, args.root / "models")
        serve_metrics(drift, args.metrics_port, args.listen.rsplit(":", 1)[0])

    async def run() -> None:
        task = asyncio.create_task(serve(plan, args.listen, drift=drift))
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
