"""Global routing: every region is reachable only through health-checked records, and data residency holds.

Reads the Route53 records the program declares (modelfleet.routing.plan names them):
- a region's entry record is `<cloud>-<region>.<domain>` with no routing policy (no set identifier);
- routed records (a set identifier) alias a region's entry record, or another routed name;
- geolocation records for a continent alias a latency set (`<continent>.<model>.<domain>`) of that continent's
  regions.

and, for the second failover layer (modelfleet.routing.peering), each region's gateway objects: a model's
HTTPRoute/GRPCRoute (its model in the KServe path or the model header) whose extra backendRef is an Envoy Gateway
`Backend` pointing at a peer region's entry name. A region's objects are named with its key first (`aws-eu-west-1-…`,
RegionPlan.key), which is how a route and its Backend are tied to their region.
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


ROUTE_TYPES = ("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute", "kubernetes:gateway.networking.k8s.io/v1:GRPCRoute")
BACKEND = "kubernetes:gateway.envoyproxy.io/v1alpha1:Backend"
MODEL_PATH = re.compile(r"^/v2/models/(.+)$")
MODEL_HEADER = "x-modelfleet-model"


def _resident_sets(records, entries: dict[str, str]) -> dict[str, list[tuple[str, set[str]]]]:
    """A model's global name -> [(continent, the regions its geolocation record for that continent answers from)]."""
    by_name: dict[str, list] = {}
    for r in records:
        by_name.setdefault(str(get(r.props, "name", default="")), []).append(r)
    out: dict[str, list[tuple[str, set[str]]]] = {}
    for r in records:
        for geo in items(get(r.props, "geolocationRoutingPolicies")):
            continent = str(get(geo, "continent", default="") or "")
            if continent and continent != "*":
                targets = [_alias(x) for x in by_name.get(_alias(r), [])] or [_alias(r)]
                regions = {entries[t] for t in targets if t in entries}
                out.setdefault(str(get(r.props, "name", default="")), []).append((continent, regions))
    return out


def _route_model(props) -> str | None:
    for rule in items(get(props, "spec", "rules")):
        for match in items(get(rule, "matches")):
            path = MODEL_PATH.match(str(get(match, "path", "value", default="") or ""))
            if path:
                return path.group(1)
            for header in items(get(match, "headers")):
                if str(get(header, "name", default="")).lower() == MODEL_HEADER:
                    return str(get(header, "value", default=""))
    return None


def _region_of(name: str, regions: set[str]) -> str | None:
    """The region whose key (`aws-eu-west-1`) starts a resource's name, the longest if several do."""
    keys = {region.replace(":", "-", 1): region for region in regions}
    found = [key for key in keys if name.startswith(key + "-")]
    return keys[max(found, key=len)] if found else None


def _fallback_residency(args: StackValidationArgs, report: ReportViolation) -> None:
    records = [r for r in args.resources if r.resource_type == RECORD]
    entries = _entries(records)
    resident = _resident_sets(records, entries)
    regions = set(entries.values())
    domains = {name.split(".", 1)[1] for name in entries}
    backends = {(_region_of(b.name, regions), str(get(b.props, "metadata", "name", default=""))): b
                for b in args.resources if b.resource_type == BACKEND}
    for route in (r for r in args.resources if r.resource_type in ROUTE_TYPES):
        model, own = _route_model(route.props), _region_of(route.name, regions)
        sets = [s for domain in domains for s in resident.get(f"{model}.{domain}", [])]
        for continent, members in sets:
            if own not in members:
                continue
            for rule in items(get(route.props, "spec", "rules")):
                for ref in items(get(rule, "backendRefs")):
                    if get(ref, "kind") != "Backend":
                        continue
                    backend = backends.get((own, str(get(ref, "name", default=""))))
                    hosts = [str(get(e, "fqdn", "hostname", default="")) for e in
                             items(get(backend.props, "spec", "endpoints"))] if backend else []
                    peers = sorted({entries.get(h, h) for h in hosts})
                    abroad = [p for p in peers if p not in members] or ([] if backend else ["an undeclared Backend"])
                    if abroad:
                        report(f"{short(route.urn)}: {model}'s gateway in {own} sends its failures and overflow to "
                               f"{', '.join(abroad)} (Backend {get(ref, 'name')}), outside the regions that answer "
                               f"its {continent} clients ({', '.join(sorted(members))}): their requests would be "
                               f"served abroad. Fix: fall back to a region of the model's routing.residency."
                               f"{continent.lower()} (modelfleet.routing.peering picks the nearest one inside it).",
                               route.urn)


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

routing_fallback_residency = StackValidationPolicy(
    name="routing-fallback-residency",
    description="A region that answers a continent with data residency sends its gateway fallback only to "
                "another region of that continent's set.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_fallback_residency,
)

POLICIES = [routing_health_checked, routing_residency, routing_fallback_residency]
