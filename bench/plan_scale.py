"""How the offline plan scales: time and peak memory for fleets of N models x R regions, side by side with the
Pulumi SDK's own floor — the same number of bare resources registered under a no-op mock, in the same run.

    .venv/bin/python bench/plan_scale.py            # 1x1, 10x3, 50x6
    .venv/bin/python bench/plan_scale.py --sizes 2x2

Each measurement runs in a fresh child process (the SDK keeps global state), after the same imports, so
the figures compare the work and not the import cost. Target: modelfleet's overhead at most 25% above the
floor, and cost linear in resources (the us/resource column stays flat).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Regions where both example hardware classes are offered, alternating clouds.
REGIONS = ["aws:us-east-1", "gcp:us-central1", "aws:eu-west-1", "gcp:europe-west4", "aws:us-west-2", "gcp:us-east4",
           "aws:eu-central-1", "gcp:europe-west1"]


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_fleet(root: Path, models: int, regions: int) -> None:
    """A synthetic project: `models` copies of the example models, spread over the first `regions` regions."""
    shutil.copy(ROOT / "Pulumi.yaml", root / "Pulumi.yaml")
    shutil.copy(ROOT / "__main__.py", root / "__main__.py")
    (root / "models").mkdir()
    (root / "stacks").mkdir()
    templates = [ROOT / "models" / "fraud-detector.yaml", ROOT / "models" / "sentiment.yaml"]
    names = []
    for i in range(models):
        template = templates[i % len(templates)]
        name = f"{template.stem}-{i:03d}"
        (root / "models" / f"{name}.yaml").write_text(
            template.read_text().replace(f"name: {template.stem}", f"name: {name}"))
        names.append(name)
    stack = {
        "config": {
            "modelfleet:environment": "prod",
            "modelfleet:regions": REGIONS[:regions],
            "modelfleet:models": names,
            "modelfleet:gcp_project": "modelfleet-bench",
            "modelfleet:budget_monthly_usd": 10_000_000,
            "modelfleet:dns_domain": "bench.example.com",
            "modelfleet:required_tags": {"team": "bench"},
        }
    }
    (root / "stacks" / "Pulumi.bench.yaml").write_text(json.dumps(stack))


def child_full(root: Path) -> dict:
    import components.fleet  # noqa: F401 — the same imports as the floor child
    from modelfleet.loader import load_fleet
    from modelfleet.offline import evaluate
    from modelfleet.plan import build_plan

    base = _rss_mib()
    start = time.perf_counter()
    build_plan(load_fleet(root, "bench"))  # what `modelfleet plan` computes besides the evaluation
    evaluation = evaluate(root, "bench")
    seconds = time.perf_counter() - start
    return {"resources": len(evaluation.resources), "seconds": seconds, "peak_mib": _peak_mib() - base}


def child_floor(count: int) -> dict:
    import components.fleet  # noqa: F401
    import pulumi
    from pulumi.runtime import mocks, settings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    class NoOp(mocks.Mocks):
        def new_resource(self, args):
            return f"{args.name}-id", args.inputs

        def call(self, args):
            return {}, None

    base = _rss_mib()
    start = time.perf_counter()
    settings.set_root_resource(None)
    mocks.set_mocks(NoOp(), project="modelfleet", stack="bench", preview=False)

    def program():
        for i in range(count):
            pulumi.CustomResource("bench:index:Bare", f"r{i}", {})

    _sync_await(run_pulumi_func(program))
    seconds = time.perf_counter() - start
    return {"resources": count, "seconds": seconds, "peak_mib": _peak_mib() - base}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True,
                         cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1x1,10x3,50x6", help="comma-separated MODELSxREGIONS")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, value = args.child
        result = child_full(Path(value)) if kind == "full" else child_floor(int(value))
        print(json.dumps(result))
        return

    rows = []
    for size in args.sizes.split(","):
        models, regions = (int(x) for x in size.split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            make_fleet(Path(tmp), models, regions)
            full = run_child("full", tmp)
        floor = run_child("floor", str(full["resources"]))
        rows.append((size, full, floor))

    header = (f"{'fleet':>7} {'resources':>9} {'modelfleet s':>12} {'floor s':>8} {'time ratio':>10} "
              f"{'us/res':>7} {'floor us/res':>12} {'peak MiB':>9} {'floor MiB':>9} {'mem ratio':>9}")
    print(header)
    print("-" * len(header))
    for size, full, floor in rows:
        n = full["resources"]
        print(f"{size:>7} {n:>9} {full['seconds']:>12.2f} {floor['seconds']:>8.2f} "
              f"{full['seconds'] / floor['seconds']:>10.2f} {full['seconds'] / n * 1e6:>7.0f} "
              f"{floor['seconds'] / n * 1e6:>12.0f} {full['peak_mib']:>9.0f} {floor['peak_mib']:>9.0f} "
              f"{full['peak_mib'] / max(floor['peak_mib'], 1):>9.2f}")
    worst = max(full["seconds"] / floor["seconds"] for _, full, floor in rows if full["resources"] >= 100) \
        if any(full["resources"] >= 100 for _, full, _ in rows) else None
    if worst is not None:
        verdict = "meets" if worst <= 1.25 else "MISSES"
        print(f"\nworst time ratio on fleets of 100+ resources: {worst:.2f} ({verdict} the 1.25 target)")


if __name__ == "__main__":
    main()
