"""Write the monitoring plan for review and for the local stack:

    DIR/monitoring/rules.yaml                      Prometheus rule file (the PrometheusRule's spec in clusters)
    DIR/monitoring/alertmanager.yaml               Alertmanager config; secrets referenced by file, never inlined
    DIR/monitoring/alertmanager-secret-keys.txt    the keys the Alertmanager secret must hold
    DIR/monitoring/dashboards/<name>.json          Grafana dashboards
    DIR/monitoring/tests/promtool-<N>m.yaml        promtool unit tests of every alert (`promtool test rules`)
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from modelfleet.monitoring.alertmanager import alertmanager_config, secret_keys
from modelfleet.monitoring.dashboards import dashboards
from modelfleet.monitoring.promtests import unit_tests
from modelfleet.monitoring.rules import monitoring_plan
from modelfleet.plan import FleetPlan


def dump(obj: dict) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=120)


def render_monitoring(plan: FleetPlan, out_dir: str | Path) -> list[Path]:
    folder = Path(out_dir) / "monitoring"
    mon = monitoring_plan(plan)
    files = {
        folder / "rules.yaml": dump(mon.rule_file()),
        folder / "alertmanager.yaml": dump(alertmanager_config(mon, plan.dns_domain)),
        folder / "alertmanager-secret-keys.txt": "\n".join(secret_keys(mon)) + "\n",
    }
    for name, board in dashboards(plan, mon).items():
        files[folder / "dashboards" / f"{name}.json"] = json.dumps(board, sort_keys=True, indent=1) + "\n"
    for interval, tests in unit_tests(mon, ["../rules.yaml"]).items():
        files[folder / "tests" / f"promtool-{interval}m.yaml"] = dump(tests)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return sorted(files)
