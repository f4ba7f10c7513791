"""promtool unit tests for every alert of a monitoring plan: each alert's cases (firing and quiet), as the
`promtool test rules` file format (https://prometheus.io/docs/prometheus/2.42/configuration/unit_testing_rules/)."""

from __future__ import annotations

from modelfleet.monitoring.rules import MonitoringPlan, Rule

RULES_FILE = "rules.yaml"


def _annotations(plan: MonitoringPlan, name: str, labels: tuple) -> dict:
    """The annotations of the rule that fires with `labels` (burn-rate pairs share an alert name)."""
    want = dict(labels)
    rule = next(r for r in plan.alerts if r.name == name and all(want.get(k) == v for k, v in r.labels))
    return dict(rule.annotations)


def _test(plan: MonitoringPlan, rule: Rule, case) -> dict:
    return {
        "name": f"{rule.name} {dict(rule.labels).get('model', '')} "
                f"{dict(rule.labels).get('long_window', '')}: {case.description}".replace("  ", " "),
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in case.series],
        "alert_rule_test": [{
            "eval_time": f"{case.eval_minutes}m",
            "alertname": rule.name,
            "exp_alerts": [{"exp_labels": dict(labels), "exp_annotations": _annotations(plan, rule.name, labels)}
                           for labels in case.firing],
        }],
    }


def unit_tests(plan: MonitoringPlan, rules_files: list[str] | None = None) -> dict[int, dict]:
    """The test files for `plan`'s alerts, one per evaluation interval (minutes): every case of every alert."""
    files: dict[int, dict] = {}
    for rule in plan.alerts:
        for case in rule.cases:
            interval = case.eval_interval_minutes
            # Recording groups before the alerts that read them: promtool's default group order is a map's,
            # and with evaluation steps longer than the 5m lookback an alert would read nothing.
            files.setdefault(interval, {"rule_files": rules_files or [RULES_FILE],
                                        "evaluation_interval": f"{interval}m",
                                        "group_eval_order": [g.name for g in plan.groups], "tests": []})
            files[interval]["tests"].append(_test(plan, rule, case))
    return dict(sorted(files.items()))
