"""A real Envoy for a test: the config written beside the test's files, started, ready, and stopped after."""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

from modelfleet.gateway.local import envoy_binary


@contextlib.contextmanager
def running_envoy(config: dict, folder: Path, admin: int, timeout_s: float = 10.0):
    """`config` must open its admin listener on `admin` (readiness is asked there)."""
    path = folder / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    log = folder / "envoy.log"
    with open(log, "wb") as out:
        envoy = subprocess.Popen([str(envoy_binary()), "-c", str(path), "--disable-hot-restart", "--concurrency", "1",
                                  "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=0.5)
                break
            except OSError:
                if envoy.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"envoy did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.05)
        yield envoy
    finally:
        envoy.terminate()
        envoy.wait(10)
