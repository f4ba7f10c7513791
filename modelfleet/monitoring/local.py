"""The local stack's monitoring: a real Prometheus and Alertmanager (Debian's, scripts/install_monitoring.sh)
scraping the local Triton and the gateway's Envoy, with exactly the rules and Alertmanager routes `render` writes.

The only local differences are the scrape targets (static addresses instead of ServiceMonitors, with the
`namespace` label the clusters' scrapes add) and the secrets folder the Alertmanager config's `*_file` fields
point into (files created empty here: nothing leaves this machine).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from modelfleet.monitoring.alertmanager import alertmanager_config, secret_keys
from modelfleet.monitoring.promtool import INSTALL_HINT
from modelfleet.monitoring.rules import monitoring_plan
from modelfleet.plan import FleetPlan
from modelfleet.serving import namespace_name

ENVOY_STATS_PATH = "/stats/prometheus"


class MonitoringStartupError(RuntimeError):
    """Prometheus or Alertmanager is missing or did not become ready; the message carries the log tail."""


@dataclass(frozen=True)
class Targets:
    triton_metrics: int  # Triton's metrics port
    envoy_admin: int | None = None  # the gateway's Envoy admin port (serves /stats/prometheus)
    inspection: int | None = None  # the gateway's inspection service metrics port (drift gauges)
    canary_triton_metrics: int | None = None  # the canaries' Triton (modelfleet.canary), when a model has one


def _binary(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise MonitoringStartupError(f"{name} not found on PATH; {INSTALL_HINT}")
    return found


def prometheus_config(plan: FleetPlan, targets: Targets, rules_file: Path, alertmanager_port: int,
                      interval_s: float) -> dict:
    labels = {"namespace": namespace_name(plan)}
    # One job for both Tritons, as in the cloud where one ServiceMonitor selects the stable and the canary pods:
    # the SLO rules sum over the job, and `version` tells the two apart.
    tritons = [targets.triton_metrics] + ([targets.canary_triton_metrics] if targets.canary_triton_metrics else [])
    scrapes = [{"job_name": "triton", "static_configs": [{"targets": [f"127.0.0.1:{port}" for port in tritons],
                                                          "labels": labels}]}]
    if targets.envoy_admin:
        scrapes.append({"job_name": "gateway", "metrics_path": ENVOY_STATS_PATH,
                        "static_configs": [{"targets": [f"127.0.0.1:{targets.envoy_admin}"], "labels": labels}]})
    if targets.inspection:
        scrapes.append({"job_name": "gateway-inspection",
                        "static_configs": [{"targets": [f"127.0.0.1:{targets.inspection}"], "labels": labels}]})
    interval = f"{int(interval_s * 1000)}ms"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": scrapes,
    }


class LocalMonitoring:
    """Prometheus + Alertmanager as a context manager, on the given free ports, data in `workdir`."""

    def __init__(self, plan: FleetPlan, targets: Targets, prometheus_port: int, alertmanager_port: int,
                 workdir: Path | None = None, interval_s: float = 15.0, startup_timeout_s: float = 30.0):
        self.plan, self.targets = plan, targets
        self.prometheus_port, self.alertmanager_port = prometheus_port, alertmanager_port
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="modelfleet-monitoring-"))
        self.interval_s, self.startup_timeout_s = interval_s, startup_timeout_s
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.alertmanager_port}"

    def write_configs(self) -> tuple[Path, Path]:
        mon = monitoring_plan(self.plan)
        self.workdir.mkdir(parents=True, exist_ok=True)
        secrets = self.workdir / "secrets"
        secrets.mkdir(exist_ok=True)
        for key in secret_keys(mon):
            (secrets / key).touch()
        rules = self.workdir / "rules.yaml"
        rules.write_text(yaml.safe_dump(mon.rule_file(), sort_keys=False))
        am = self.workdir / "alertmanager.yaml"
        am.write_text(yaml.safe_dump(alertmanager_config(mon, self.plan.dns_domain, str(secrets)), sort_keys=False))
        prom = self.workdir / "prometheus.yml"
        prom.write_text(yaml.safe_dump(prometheus_config(self.plan, self.targets, rules, self.alertmanager_port,
                                                         self.interval_s), sort_keys=False))
        return prom, am

    def _start(self, name: str, args: list[str], ready_url: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.processes[name] = proc
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(ready_url, timeout=0.5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        tail = "\n".join((self.workdir / f"{name}.log").read_text(errors="replace").splitlines()[-20:])
        self.stop()
        raise MonitoringStartupError(f"{name} did not start (exit {proc.poll()}):\n{tail}")

    def commands(self) -> dict[str, tuple[list[str], str]]:
        """Each process's command line and ready URL, Alertmanager first (Prometheus sends to it)."""
        prom, am = self.workdir / "prometheus.yml", self.workdir / "alertmanager.yaml"
        return {
            "alertmanager": ([
                _binary("prometheus-alertmanager"), f"--config.file={am}", f"--storage.path={self.workdir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                "--cluster.listen-address=",  # no gossip port: a single local instance
            ], f"{self.alertmanager_url}/-/ready"),
            "prometheus": ([
                _binary("prometheus"), f"--config.file={prom}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            ], f"{self.prometheus_url}/-/ready"),
        }

    def start(self) -> "LocalMonitoring":
        self.write_configs()
        for name, (args, ready_url) in self.commands().items():
            self._start(name, args, ready_url)
        return self

    def stop(self) -> None:
        for name in ("prometheus", "alertmanager"):
            proc = self.processes.pop(name, None)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def __enter__(self) -> "LocalMonitoring":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- reading back ---------------------------------------------------------------------------------------

    def _get(self, url: str) -> dict:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    def query(self, expr: str) -> list[dict]:
        """An instant query's result vector."""
        body = self._get(f"{self.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        return body["data"]["result"]

    def metric_names(self) -> set[str]:
        return set(self._get(f"{self.prometheus_url}/api/v1/label/__name__/values")["data"])

    def alerts(self) -> list[dict]:
        """Alerts as Prometheus holds them (state pending or firing)."""
        return self._get(f"{self.prometheus_url}/api/v1/alerts")["data"]["alerts"]

    def alertmanager_alerts(self) -> list[dict]:
        return self._get(f"{self.alertmanager_url}/api/v2/alerts")


def parse_ports(text: str) -> tuple[int, int, int] | None:
    """`PROMETHEUS,ALERTMANAGER,DRIFT` ports, or None for `off`."""
    if text.strip().lower() == "off":
        return None
    try:
        prom, am, drift = (int(p) for p in text.split(","))
    except ValueError:
        raise ValueError(f"write three ports PROMETHEUS,ALERTMANAGER,DRIFT or off, got {text!r}") from None
    return prom, am, drift


@contextlib.contextmanager
def local_monitoring(plan: FleetPlan, root: Path, stack: str, triton_metrics: int, gateway_ports,
                     ports: tuple[int, int, int] | None, console):
    """`modelfleet serve`'s monitoring: Prometheus and Alertmanager over the local Triton and gateway, or nothing."""
    if ports is None:
        yield None
        return
    prom, am, drift = ports
    workdir = root / "build" / "serve" / stack / "monitoring"
    with LocalMonitoring(plan, Targets(triton_metrics, gateway_ports.admin, drift), prom, am, workdir) as mon:
        console.print(f"[green]monitoring ready[/]\n  Prometheus   {mon.prometheus_url} (rules: {workdir}/rules.yaml)"
                      f"\n  Alertmanager {mon.alertmanager_url}\n  drift        http://127.0.0.1:{drift}/metrics")
        yield mon
