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
        (root / "models" / f"{name}.yaml").write_text(template.read_text().replace(template.stem, name))
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


def _warm_up() -> None:
    """Evaluate the example prod stack (both clouds) once: the provider SDKs load their modules lazily on first use (seconds,
    once per process), which is import cost, not the per-resource cost measured here."""
    from modelfleet.offline import evaluate

    evaluate(ROOT, "prod")


def child_full(root: Path) -> dict:
    from modelfleet.loader import load_fleet
    from modelfleet.offline import evaluate
    from modelfleet.plan import build_plan

    _warm_up()
    base = _rss_mib()
    start = time.perf_counter()
    build_plan(load_fleet(root, "bench"))  # what `modelfleet plan` computes besides the evaluation
    evaluation = evaluate(root, "bench")
    seconds = time.perf_counter() - start
    dump = root / "recorded.json"
    dump.write_text(json.dumps([[r.type, r.name, r.custom, r.inputs] for r in evaluation.resources]))
    return {"resources": len(evaluation.resources), "seconds": seconds, "peak_mib": _peak_mib() - base}


def _sdk_only(program) -> tuple[float, float]:
    """Run `program` under a no-op mock in the same offline runtime modelfleet uses; seconds and peak MiB."""
    from pulumi.runtime import mocks, settings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from modelfleet.offline import offline_runtime

    class NoOp(mocks.Mocks):
        def new_resource(self, args):
            return f"{args.name}-id", args.inputs

        def call(self, args):
            return {}, None

    _warm_up()
    base = _rss_mib()
    start = time.perf_counter()
    settings.set_root_resource(None)
    mocks.set_mocks(NoOp(), project="modelfleet", stack="bench", preview=False)
    with offline_runtime():
        _sync_await(run_pulumi_func(program))
    return time.perf_counter() - start, _peak_mib() - base


def child_floor(count: int) -> dict:
    """The SDK's floor: `count` bare resources, no inputs."""
    import pulumi

    def program():
        for i in range(count):
            pulumi.CustomResource("bench:index:Bare", f"r{i}", {})

    seconds, peak = _sdk_only(program)
    return {"resources": count, "seconds": seconds, "peak_mib": peak}


def child_replay(dump: Path) -> dict:
    """The same resources modelfleet declared — types, names, inputs — registered flat, with no modelfleet code:
    what the SDK alone costs for exactly this fleet."""
    import pulumi

    recorded = json.loads(dump.read_text())

    def program():
        for typ, name, custom, inputs in recorded:
            if custom:
                pulumi.CustomResource(typ, name, inputs)
            else:
                pulumi.ComponentResource(typ, name, inputs)

    seconds, peak = _sdk_only(program)
    return {"resources": len(recorded), "seconds": seconds, "peak_mib": peak}


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
        children = {"full": lambda: child_full(Path(value)), "floor": lambda: child_floor(int(value)),
                    "replay": lambda: child_replay(Path(value))}
        result = children[kind]()
        print(json.dumps(result))
        return

    rows = []
    for size in args.sizes.split(","):
        models, regions = (int(x) for x in size.split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            make_fleet(Path(tmp), models, regions)
            full = run_child("full", tmp)
            replay = run_child("replay", str(Path(tmp) / "recorded.json"))
        floor = run_child("floor", str(full["resources"]))
        rows.append((size, full, replay, floor))

    header = (f"{'fleet':>6} {'resources':>9} {'modelfleet s':>12} {'replay s':>8} {'bare s':>7} "
              f"{'vs replay':>9} {'vs bare':>7} {'us/res':>7} {'peak MiB':>8} {'replay MiB':>10} {'bare MiB':>8}")
    print(header)
    print("-" * len(header))
    for size, full, replay, floor in rows:
        n = full["resources"]
        print(f"{size:>6} {n:>9} {full['seconds']:>12.2f} {replay['seconds']:>8.2f} {floor['seconds']:>7.2f} "
              f"{full['seconds'] / replay['seconds']:>9.2f} {full['seconds'] / floor['seconds']:>7.2f} "
              f"{full['seconds'] / n * 1e6:>7.0f} {full['peak_mib']:>8.0f} {replay['peak_mib']:>10.0f} "
              f"{floor['peak_mib']:>8.0f}")
    big = [(full, replay, floor) for _, full, replay, floor in rows if full["resources"] >= 100]
    if big:
        for label, index in (("the replay floor (same resources, no modelfleet code)", 1), ("the bare floor", 2)):
            worst = max(r[0]["seconds"] / r[index]["seconds"] for r in big)
            verdict = "meets" if worst <= 1.25 else "misses"
            print(f"worst time ratio against {label}, fleets of 100+ resources: {worst:.2f} ({verdict} 1.25)")


if __name__ == "__main__":
    main()
