"""What the gateway costs: perf_analyzer against Triton directly, through a plain Envoy route, through the full
gateway without inspection (auth + rate limit, all inside Envoy), and with inspection (+ ext_proc), at concurrency
1 and 16.

    PYTHONPATH=$PWD .venv/bin/python bench/gateway.py              # fraud-detector over HTTP, one run
    PYTHONPATH=$PWD .venv/bin/python bench/gateway.py --model sentiment --interval-ms 3000

Targets (issue 11): the full gateway without inspection adds <= 0.5 ms p50 at concurrency 1 and keeps >= 85% of
plain Envoy's throughput at concurrency 16; with inspection <= 2 ms p50 and >= 60%. One run on a shared machine:
compare the rows with each other, not with published numbers.

Placement (`--placement`): by default Triton and its Python-backend stubs run on half the CPUs and everything else
(perf_analyzer, the Envoys, the inspection service) on the other half, as in the cloud, where the gateway's pods
cannot land on the tainted GPU nodes. On two cores that makes the load generator and the proxy the bottleneck at
concurrency 16, so the throughput ratio is decided by the proxy's CPU per request (plus perf_analyzer's own,
the same for every path), and it repeats within a few percent. `--placement shared` lets every process use every
CPU: the ratio then mostly measures how Triton's dynamic batcher reacts to the proxy taking CPU from it, and moved
between 67% and 98% from run to run (README).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import tempfile
import urllib.request
from dataclasses import replace
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modelfleet.gateway import keys as keyfile  # noqa: E402
from modelfleet.gateway import native_inspect  # noqa: E402
from modelfleet.gateway.envoy_config import BUFFER, EXT_PROC, LocalPorts, envoy_bootstrap  # noqa: E402
from modelfleet.gateway.local import ENVOY_CONCURRENCY, LocalGateway, running_envoy  # noqa: E402
from modelfleet.gateway.plan import GatewayPlan  # noqa: E402
from modelfleet.loader import load_fleet  # noqa: E402
from modelfleet.local import build_local_repository  # noqa: E402
from modelfleet.plan import build_plan  # noqa: E402
from modelfleet.triton.runtime import PerfPoint, TritonServer, free_ports, run_perf_analyzer  # noqa: E402


def plain_envoy(listen: int, admin: int, triton_http: int) -> dict:
    """Envoy with one route to Triton and nothing else: the floor any proxy pays."""
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "plain", "address": {"socket_address": {"address": "127.0.0.1",
                                                                          "port_value": listen}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                         "HttpConnectionManager",
                "stat_prefix": "plain", "codec_type": "AUTO",
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "route": {"cluster": "triton", "timeout": "60s"}}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}],
            "clusters": [{"name": "triton", "type": "STATIC", "connect_timeout": "0.25s",
                          "load_assignment": {"cluster_name": "triton", "endpoints": [{"lb_endpoints": [
                              {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                           "port_value": triton_http}}}}]}]}}]},
    }


def without_inspection(config: dict) -> dict:
    """The full gateway's config minus inspection: no fast path, no ext_proc, and no body buffer (the body size
    limit is one of inspection's checks in issue 11). Authentication, rate limits and the audit log only."""
    config = copy.deepcopy(config)
    inspection = (EXT_PROC, native_inspect.FILTER, BUFFER)
    for listener in config["static_resources"]["listeners"]:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] not in inspection]
        for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
            for name in inspection:
                route.get("typed_per_filter_config", {}).pop(name, None)
    return config


@contextlib.contextmanager
def cpus(allowed: set[int]):
    """Processes started inside run on `allowed` CPUs only: a child inherits the affinity of the thread that forks it,
    and its own threads and children (Triton's Python-backend stubs) inherit it in turn."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, allowed)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def placement(name: str) -> tuple[set[int], set[int]]:
    """(Triton's CPUs, everyone else's) for a placement: `split` gives Triton its own half of the machine's physical
    cores (hyperthread siblings stay together: two threads of one core are not two machines), as in the cloud,
    where the gateway runs on other nodes than Triton's GPU nodes (tainted, ADR 0005); `shared` lets every process
    run on every CPU."""
    every = sorted(os.sched_getaffinity(0))
    if name == "shared":
        return set(every), set(every)
    cores = physical_cores(every)
    if len(cores) < 2:
        raise SystemExit("--placement split needs two physical cores; use --placement shared")
    half = len(cores) // 2
    return {cpu for core in cores[half:] for cpu in core}, {cpu for core in cores[:half] for cpu in core}


def physical_cores(cpus: list[int]) -> list[list[int]]:
    """`cpus` grouped by the core they run on (the kernel's thread_siblings_list), in CPU order."""
    groups: dict[str, list[int]] = {}
    for cpu in cpus:
        try:
            siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip()
        except OSError:
            siblings = str(cpu)
        groups.setdefault(siblings, []).append(cpu)
    return sorted(groups.values())


def allowed_cpus(pid: int) -> str:
    """The CPUs a process and its children (Triton's Python-backend stubs) may run on, as the kernel reports them:
    the printed layout is what ran, not what was asked for."""
    pids = [pid] + [int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat")
                    if _stat_fields(stat)[1:2] == [str(pid)]]
    lists = set()
    for each in pids:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                lists.add(line.split(":", 1)[1].strip())
    return " / ".join(sorted(lists))


def _stat_fields(stat: Path) -> list[str]:
    """/proc/<pid>/stat after the command name (state, parent, ..., utime at 11, stime at 12); [] once it is gone."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far: less sensitive to other load than latency is."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def downstream_requests(admin: int) -> int:
    """Requests an Envoy's HTTP listeners have taken (admin /stats)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?filter=downstream_rq_total", timeout=2) as r:
        return sum(int(line.rsplit(": ", 1)[1]) for line in r.read().decode().splitlines()
                   if line.startswith("http.") and not line.startswith("http.admin."))


def unbound(plan: GatewayPlan) -> GatewayPlan:
    """The plan with rate limits no benchmark reaches: the filters still run and count per tenant (their cost is
    measured), but one tenant's 2,000/s must not cap a path that could go faster."""
    routes = tuple(replace(r, rate_limits=tuple(replace(rule, requests=10**8, bucket=10**8) for rule in r.rate_limits))
                   for r in plan.routes)
    return replace(plan, routes=routes)


def median_point(points: list[PerfPoint]) -> PerfPoint:
    """Each figure's median over the rounds (throughput, p50 and p99 separately)."""
    return PerfPoint(points[0].concurrency, statistics.median(p.throughput_infer_per_s for p in points),
                     statistics.median(p.p99_latency_ms for p in points),
                     statistics.median(p.p50_latency_ms for p in points))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fraud-detector")
    parser.add_argument("--interval-ms", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3, help="measure every path this many times, in turn")
    parser.add_argument("--stability", type=int, default=100,
                        help="perf_analyzer --stability-percentage; loose by default: the rounds' median "
                             "steadies the figures")
    parser.add_argument("--placement", choices=["split", "shared"], default="split",
                        help="split: Triton on half the CPUs, the load generator and every proxy on the other half "
                             "(the cloud's layout); shared: everything on every CPU")
    parser.add_argument("--envoy-concurrency", type=int, default=ENVOY_CONCURRENCY,
                        help="Envoy worker threads, the same for every Envoy (the local gateway's own setting by "
                             "default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        work = Path(tmp)
        plan = build_plan(load_fleet(ROOT, "local"))
        gateway_plan = unbound(plan.gateway)
        repository = build_local_repository(plan, ROOT, work / "repository")
        th, tg, tm, plain, plain_admin, lean, lean_admin, http, grpc, admin, extproc = free_ports(11)
        ports = LocalPorts(http=http, grpc=grpc, admin=admin, triton_http=th, triton_grpc=tg, extproc=extproc)
        key_path = work / "keys.json"
        api_key, _ = keyfile.create(key_path, "bench", ["infer:*"])
        header = ["-H", f"x-api-key:{api_key}"]
        triton_cpus, client_cpus = placement(args.placement)
        with contextlib.ExitStack() as stack:
            with cpus(triton_cpus):
                triton = stack.enter_context(TritonServer(repository, th, tg, tm))
            stack.enter_context(cpus(client_cpus))
            gateway = stack.enter_context(LocalGateway(gateway_plan, ports, ROOT, "local", key_path, work / "gateway",
                                                       envoy_concurrency=args.envoy_concurrency))
            full = envoy_bootstrap(gateway_plan, ports, str(work / "audit-lean.log"), auth_folder=gateway.auth_folder)
            lean_config = without_inspection(full)
            lean_listener = lean_config["static_resources"]["listeners"][0]
            lean_listener["address"]["socket_address"]["port_value"] = lean
            lean_config["static_resources"]["listeners"] = [lean_listener]
            lean_config["admin"]["address"]["socket_address"]["port_value"] = lean_admin
            envoys = [stack.enter_context(running_envoy(config, work / name, admin_port, args.envoy_concurrency,
                                                        log_level="error"))
                      for name, config, admin_port in (("plain", plain_envoy(plain, plain_admin, th), plain_admin),
                                                       ("lean", lean_config, lean_admin))]
            layout = (f"Triton (and its stubs) on CPUs {allowed_cpus(triton.process.pid)}, perf_analyzer, the Envoys "
                      f"and the inspection service on {allowed_cpus(gateway.envoy.pid)}")
            # (name, url, headers, [(process, admin port)] whose CPU per request is counted)
            service = (gateway.services["extproc"].pid, admin)
            paths = [("direct", triton.http_url, [], []),
                     ("plain envoy", f"127.0.0.1:{plain}", [], [(envoys[0].pid, plain_admin)]),
                     ("gateway: auth+ratelimit", f"127.0.0.1:{lean}", header, [(envoys[1].pid, lean_admin)]),
                     ("gateway: +inspection", gateway.http_url, header, [(gateway.envoy.pid, admin), service])]
            # Rounds over all paths in turn, so a burst of load from elsewhere on a shared machine hits every
            # path alike; each figure is the median of its rounds.
            rounds: dict[str, list] = {name: [] for name, *_ in paths}
            cpu_us: dict[tuple[str, int], list[float]] = {}
            for round_index in range(args.rounds):
                # Each round starts one path later: no path always follows the same one (the direct path's
                # large batches, say, leave Triton differently from a proxied one).
                start = round_index % len(paths)
                for name, url, extra, counted in paths[start:] + paths[:start]:
                    before = [(cpu_s(pid), downstream_requests(port)) for pid, port in counted]
                    rounds[name].extend(run_perf_analyzer(
                        args.model, url, args.concurrency, protocol="http",
                        measurement_interval_ms=args.interval_ms, max_trials=10,
                        stability_percentage=args.stability, extra_args=extra, timeout_s=300))
                    for (pid, port), (cpu, requests) in zip(counted, before):
                        spent = (cpu_s(pid) - cpu) * 1e6 / max(downstream_requests(port) - requests, 1)
                        cpu_us.setdefault((name, pid), []).append(spent)
            results = {name: [median_point([p for p in points if p.concurrency == c]) for c in args.concurrency]
                       for name, points in rounds.items()}
    print(f"model {args.model}, HTTP, perf_analyzer time windows of {args.interval_ms} ms, Envoy "
          f"--concurrency {args.envoy_concurrency} (all three Envoys), one run: medians of {args.rounds} rounds over the paths in turn")
    print(f"placement {args.placement}: {layout}\n")
    print(f"{'path':<26}{'conc':>5}{'infer/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs envoy':>10}{'+p50 ms':>9}")
    base = {p.concurrency: p for p in results["plain envoy"]}
    for name, points in results.items():
        for p in points:
            ratio = p.throughput_infer_per_s / base[p.concurrency].throughput_infer_per_s
            added = p.p50_latency_ms - base[p.concurrency].p50_latency_ms
            print(f"{name:<26}{p.concurrency:>5}{p.throughput_infer_per_s:>10.1f}{p.p50_latency_ms:>9.2f}"
                  f"{p.p99_latency_ms:>9.2f}{ratio:>9.0%}{added:>+9.2f}")
    print("\nCPU per request (user + system, /proc, median of the rounds): what each proxy costs, whatever the layout")
    plain_cpu = statistics.median(cpu_us[("plain envoy", envoys[0].pid)])
    for (name, pid), values in cpu_us.items():
        who = "inspection service" if pid == service[0] else "envoy"
        spent = statistics.median(values)
        print(f"  {name:<26}{who:<20}{spent:>8.0f} us{spent / plain_cpu:>8.2f}x plain Envoy's")
    low, high = min(args.concurrency), max(args.concurrency)
    for name, p50_target, tput_target in (("gateway: auth+ratelimit", 0.5, 0.85), ("gateway: +inspection", 2.0, 0.60)):
        at = {p.concurrency: p for p in results[name]}
        added = at[low].p50_latency_ms - base[low].p50_latency_ms
        ratio = at[high].throughput_infer_per_s / base[high].throughput_infer_per_s
        print(f"\n{name}: +{added:.2f} ms p50 at concurrency {low} (target <= {p50_target}), "
              f"{ratio:.0%} of plain Envoy's throughput at {high} (target >= {tput_target:.0%}): "
              f"{'met' if added <= p50_target and ratio >= tput_target else 'NOT met'}")


if __name__ == "__main__":
    main()
