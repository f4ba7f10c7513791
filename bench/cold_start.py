"""Cold start of the local stack: `modelfleet up` until the first inference answers through the gateway (with the
dev API key), and `modelfleet down` until
every port is free — each measured from outside, as a user waits for them, over a few rounds in one run.

    .venv/bin/python bench/cold_start.py [--rounds 3]

Target (issue 14): first inference within 20 s of `up` for the example fleet on this machine. Anchor: KServe
reports about a minute per GB of model for a cold start in a cluster; the local stack loads from local disk.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelfleet.cli_gateway import dev_key  # noqa: E402
from modelfleet.gateway.plan import API_KEY_HEADER  # noqa: E402
from modelfleet.local import DEFAULT_PORTS, smoke_request  # noqa: E402
from modelfleet.loader import load_fleet  # noqa: E402
from modelfleet.triton.runtime import port_is_free  # noqa: E402
from modelfleet.triton.runtime import free_ports  # noqa: E402

TARGET_FIRST_INFERENCE_S = 20.0


def modelfleet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelfleet.cli", *args, "--root", str(ROOT)],
                          capture_output=True, text=True, timeout=300)


def first_inference(url: str, body: bytes, api_key: str, deadline: float) -> float:
    import urllib.request

    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, data=body, method="POST",
                                             headers={"Content-Type": "application/json", API_KEY_HEADER: api_key})
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return time.monotonic()
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"no inference answered at {url}")


def one_round(run_dir: Path) -> tuple[float, float, float]:
    ports = dict(zip(DEFAULT_PORTS, free_ports(len(DEFAULT_PORTS))))
    args = [a for name, port in ports.items() for a in ("--port", f"{name}={port}")]
    model = load_fleet(ROOT, "local").models[0]
    body = json.dumps(smoke_request(model)).encode()
    key_path, _ = dev_key(ROOT, "local")
    began = time.monotonic()
    up = subprocess.Popen([sys.executable, "-m", "modelfleet.cli", "up", "--run-dir", str(run_dir), *args,
                           "--root", str(ROOT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    answered = first_inference(f"http://127.0.0.1:{ports['gateway-http']}/v2/models/{model.name}/infer", body,
                               key_path.read_text().strip(), began + 120)
    output, _ = up.communicate(timeout=120)
    if up.returncode != 0:
        raise SystemExit(f"modelfleet up failed:\n{output}")
    up_returned = time.monotonic()
    stopping = time.monotonic()
    down = modelfleet("down", "--run-dir", str(run_dir))
    if down.returncode != 0:
        raise SystemExit(f"modelfleet down failed:\n{down.stdout}{down.stderr}")
    while not all(port_is_free(p) for p in ports.values()):
        time.sleep(0.05)
    return answered - began, up_returned - began, time.monotonic() - stopping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    results = []
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        for n in range(rounds):
            results.append(one_round(Path(tmp) / f"round-{n}"))
            print(f"round {n + 1}: first inference {results[-1][0]:.2f}s, up returned {results[-1][1]:.2f}s, "
                  f"down to ports free {results[-1][2]:.2f}s", flush=True)
    first, returned, down = (statistics.median(column) for column in zip(*results))
    print(f"\nmedian of {rounds}: up → first inference {first:.2f}s (target ≤ {TARGET_FIRST_INFERENCE_S:.0f}s: "
          f"{first / TARGET_FIRST_INFERENCE_S:.2f}× the target), up returned {returned:.2f}s, "
          f"down → ports free {down:.2f}s")


if __name__ == "__main__":
    main()
