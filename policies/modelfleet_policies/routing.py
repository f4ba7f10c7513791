"""Global routing: every region is reachable only through health-checked records, and data residency holds.

Reads the Route53 records the program declares (modelfleet.routing.plan names them):
- a region's entry record is `<cloud>-<region>.<domain>` with no routing policy (no set identifier);
- routed records (a set identifier) alias a region's entry record, or another routed name;
- geolocation records for a continent alias a latency set (`<continent>.<model>.<domain>`) of that continent's
  regions.
"""

from __future__ import annotations

import re

from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ReportViolation, StackValidationArgs,
                           StackValidationPolicy)

from ._util import config, get, items, short

RECORD = "aws:route53/record:Record"
# Which regions lie on which continent (Route53 codes), by the clouds' region naming.
DEFAULT_CONTINENT_REGIONS = {
    "EU": ["aws:eu-", "gcp:europe-"],
    "NA": ["aws:us-", "aws:ca-", "gcp:us-", "gcp:northamerica-"],
    "AS": ["aws:ap-", "gcp:asia-"],
}
ENTRY = re.compile(r"^(aws|gcp)-([a-z0-9-]+)\.")


def _alias(r) -> str:
    aliases = items(get(r.props, "aliases"))
    return str(get(aliases[0], "name", default="")) if aliases else ""


def _entries(records) -> dict[str, str]:
    """entry record name -> `cloud:region`."""
    out = {}
    for r in records:
        name = str(get(r.props, "name", default=""))
        m = ENTRY.match(name)
        if m and not get(r.props, "setIdentifier"):
            out[name] = f"{m.group(1)}:{m.group(2)}"
    return out


def _health_checked(args: StackValidationArgs, report: ReportViolation) -> None:
    records = [r for r in args.resources if r.resource_type == RECORD]
    entries = _entries(records)
    covered: set[str] = set()
    for r in records:
        if not get(r.props, "setIdentifier") or _alias(r) not in entries:
            continue
        region = entries[_alias(r)]
        if get(r.props, "healthCheckId"):
            covered.add(region)
        else:
            report(f"{short(r.urn)}: {get(r.props, 'name')} answers with {region} without a health check, so "
                   f"Route53 keeps sending clients to it when it is down. Fix: give the record the health check of "
                   f"{region} (components/routing.py declares one per model and region).", r.urn)
    for name, region in sorted(entries.items()):
        if region not in covered:
            report(f"{region} ({name}) is in no health-checked routed record: clients reach it by no global name, "
                   "or reach it unchecked. Fix: route every region through latency/failover records with its health "
                   "check (modelfleet.routing.plan).")


def _residency(args: StackValidationArgs, report: ReportViolation) -> None:
    allowed: dict = config(args, "continent_regions", {}) or {}
    records = [r for r in args.resources if r.resource_type == RECORD]
    entries = _entries(records)
    by_name: dict[str, list] = {}
    for r in records:
        by_name.setdefault(str(get(r.props, "name", default="")), []).append(r)
    for r in records:
        for geo in items(get(r.props, "geolocationRoutingPolicies")):
            continent = str(get(geo, "continent", default="") or "")
            if continent not in allowed:
                continue
            prefixes = [str(p) for p in items(allowed[continent])]
            where = f"{short(r.urn)}: {get(r.props, 'name')} for {continent} clients"
            aliases = items(get(r.props, "aliases"))
            if get(r.props, "healthCheckId") or (aliases and get(aliases[0], "evaluateTargetHealth")):
                report(f"{where} evaluates health: when its regions are down Route53 falls back to the default "
                       f"record, outside {continent}. Fix: no health check and evaluate_target_health false on the "
                       "geolocation record; the health checks inside its latency set fail over within "
                       f"{continent}.", r.urn)
            targets = [_alias(x) for x in by_name.get(_alias(r), [])] or [_alias(r)]
            regions = sorted({entries.get(t, t) for t in targets})
            abroad = [x for x in regions if not any(x.startswith(p) for p in prefixes)]
            if abroad:
                report(f"{where} can be answered by {', '.join(abroad)}, outside {continent} "
                       f"({', '.join(prefixes)}). Fix: list only {continent} regions in the model's "
                       f"routing.residency.{continent.lower()}.", r.urn)


routing_health_checked = StackValidationPolicy(
    name="routing-regions-health-checked",
    description="Every region behind the global names is in a routed record with its health check.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_health_checked,
)

routing_residency = StackValidationPolicy(
    name="routing-residency",
    description="Geolocation records for a continent with data residency answer only from that continent's "
                "regions and never fall back abroad.",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={
        "continent_regions": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}},
                              "default": DEFAULT_CONTINENT_REGIONS,
                              "description": "Route53 continent code (EU) -> region prefixes allowed to answer "
                                             "its clients, e.g. {\"EU\": [\"aws:eu-\", \"gcp:europe-\"]}."},
    }),
    validate=_residency,
)

POLICIES = [routing_health_checked, routing_residency]
