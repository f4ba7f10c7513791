"""Monitoring: every Triton workload is scraped by Prometheus and has SLO alerts of its own.

An SLO alert is a PrometheusRule alert labelled `model=<the model>` and `slo=<availability|latency>` (what
modelfleet.monitoring renders for each model's availability and latency burn rates): an alert that merely
mentions the model, or a fleet-wide alert, does not count.
"""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ReportViolation, StackValidationArgs, StackValidationPolicy

from ._util import (MODEL_LABEL, annotations_of, as_dict, get, is_triton, items, labels_of, model_of, namespace_of, pod_template,
                    selector_matches, short, workload_name)

SERVICE = "kubernetes:core/v1:Service"
MONITORS = ("kubernetes:monitoring.coreos.com/v1:ServiceMonitor", "kubernetes:monitoring.coreos.com/v1:PodMonitor",
            "kubernetes:monitoring.googleapis.com/v1:PodMonitoring")
RULES = ("kubernetes:monitoring.coreos.com/v1:PrometheusRule", "kubernetes:monitoring.googleapis.com/v1:Rules")


def _in_namespace(monitor, ns: str) -> bool:
    selector = get(monitor.props, "spec", "namespaceSelector")
    if get(selector, "any") is True:
        return True
    names = [str(n) for n in items(get(selector, "matchNames"))]
    return ns in names if names else namespace_of(monitor.props) == ns


def _scraped(w, resources) -> bool:
    template = pod_template(w.resource_type, w.props)
    ns, pod_labels = namespace_of(w.props), labels_of(template)
    if str(annotations_of(template).get("prometheus.io/scrape", "")).lower() == "true":
        return True
    services = [s for s in resources if s.resource_type == SERVICE and namespace_of(s.props) == ns
                and get(s.props, "spec", "selector") and selector_matches({"matchLabels": get(s.props, "spec", "selector")}, pod_labels)]
    for m in resources:
        if m.resource_type not in MONITORS or not _in_namespace(m, ns):
            continue
        selector = get(m.props, "spec", "selector")
        if m.resource_type.endswith(":ServiceMonitor"):
            if any(selector_matches(selector, labels_of(s.props)) for s in services):
                return True
        elif selector_matches(selector, pod_labels):
            return True
    return False


SLOS = ("availability", "latency")


def _slo_alerts(model: str, resources) -> set[str]:
    """The SLOs (availability, latency) that have an alert labelled with exactly this model: the alert's `model`
    label, or the PrometheusRule's `modelfleet.io/model` (the Kubernetes name, where Triton's name differs)."""
    found = set()
    for r in resources:
        if r.resource_type not in RULES:
            continue
        owned = str(labels_of(r.props).get(MODEL_LABEL)) == model
        for group in items(get(r.props, "spec", "groups")):
            for rule in items(get(group, "rules")):
                labels = as_dict(get(rule, "labels"))
                if get(rule, "alert") and (owned or str(labels.get("model")) == model) and labels.get("slo") in SLOS:
                    found.add(str(labels["slo"]))
    return found


def _monitored(args: StackValidationArgs, report: ReportViolation) -> None:
    for w in args.resources:
        if not is_triton(w.resource_type, w.props):
            continue
        name = str(get(w.props, "metadata", "name", default=w.name))
        model = model_of(w.resource_type, w.props, name)
        missing = []
        if not _scraped(w, args.resources):
            missing.append("scraped (no ServiceMonitor/PodMonitor selecting it or its Service, no prometheus.io/scrape "
                           "annotation)")
        slos = _slo_alerts(model, args.resources)
        if set(SLOS) - slos:
            missing.append(f"alerted on its SLO (no PrometheusRule alert labelled model={model} and slo="
                           f"{'/'.join(sorted(set(SLOS) - slos))})")
        if missing:
            report(f"{short(w.urn)}: the Triton workload {workload_name(w.props, w.name)} (model {model}) is not "
                   f"{' and not '.join(missing)}. Fix: add a ServiceMonitor for its metrics port 8002 and "
                   "PrometheusRule alerts on its SLO (p99 latency, error ratio, availability) labelled "
                   f"model={model}.", w.urn)


triton_scraped_and_alerted = StackValidationPolicy(
    name="triton-scraped-and-alerted",
    description="Every Triton workload is scraped by Prometheus and has availability and latency SLO alerts "
                "labelled with its model.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_monitored,
)

POLICIES = [triton_scraped_and_alerted]
