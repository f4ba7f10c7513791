"""The vendored CRD schemas against the CRD text they were taken from: the pruned GRPCRoute schema keeps only
properties the real schema has, each with identical types, enums, patterns and bounds; the route CEL rules JSON
schema cannot say are enforced by validate_manifest."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from modelfleet.gateway import manifests
from modelfleet.loader import load_fleet
from modelfleet.plan import build_plan
from modelfleet.serving import ManifestError, validate_manifest

PROJECT = Path(__file__).resolve().parent.parent
REFERENCE = PROJECT / "tests" / "data" / "crds" / "grpcroute-v1.yaml"
PRUNED = PROJECT / "modelfleet" / "data" / "gateway-api-crd-schemas.yaml"
KEYWORDS = ("type", "enum", "pattern", "format", "minimum", "maximum", "minLength", "maxLength", "minItems",
            "maxItems", "required")


def subset_problems(pruned: dict, full: dict, path: str = "spec") -> list[str]:
    """Where `pruned` says something `full` does not say identically."""
    problems = []
    for key in KEYWORDS:
        if key in pruned and pruned[key] != full.get(key):
            problems.append(f"{path}.{key}: pruned {pruned[key]!r}, CRD {full.get(key)!r}")
    for name, schema in pruned.get("properties", {}).items():
        if name not in full.get("properties", {}):
            problems.append(f"{path}.{name}: not in the CRD")
        else:
            problems += subset_problems(schema, full["properties"][name], f"{path}.{name}")
    if "items" in pruned:
        problems += subset_problems(pruned["items"], full.get("items", {}), f"{path}[]")
    return problems


def _pruned_grpcroute() -> dict:
    return yaml.safe_load(PRUNED.read_text())["kinds"]["gateway.networking.k8s.io/v1/GRPCRoute"]["properties"]["spec"]


def test_the_pruned_grpcroute_schema_is_a_faithful_subset_of_the_crd():
    full = yaml.safe_load(REFERENCE.read_text())
    pruned = _pruned_grpcroute()
    assert subset_problems(pruned, full) == []
    # What the pruned schema must keep for modelfleet's routes: the weights and the match it routes gRPC by.
    backend = pruned["properties"]["rules"]["items"]["properties"]["backendRefs"]["items"]["properties"]
    assert backend["weight"] == {"type": "integer", "format": "int32", "minimum": 0, "maximum": 1000000}


@pytest.mark.parametrize("mutate, where", [
    (lambda s: s["properties"]["rules"]["items"]["properties"]["backendRefs"]["items"]["properties"]["weight"]
     .update(maximum=100), "weight.maximum"),
    (lambda s: s["properties"]["rules"]["items"]["properties"].update(timeouts={"type": "object"}),
     "rules[].timeouts: not in the CRD"),
    (lambda s: s["properties"]["rules"]["items"]["properties"]["matches"]["items"]["properties"]["method"]
     ["properties"]["type"].update(enum=["Exact", "RegularExpression", "Prefix"]), "method.type.enum"),
])
def test_the_subset_check_catches_a_drifted_copy(mutate, where):
    full = yaml.safe_load(REFERENCE.read_text())
    pruned = copy.deepcopy(_pruned_grpcroute())
    mutate(pruned)
    problems = subset_problems(pruned, full)
    assert len(problems) == 1 and where in problems[0], problems


@pytest.fixture(scope="module")
def routes():
    plan = build_plan(load_fleet(PROJECT, "prod"))
    region = plan.regions[0]
    objs = [o for o in manifests.region_objects(plan, region, manifests.placeholder_cloud(plan, region), {})
            if o["kind"] in ("HTTPRoute", "GRPCRoute")]
    # Every model's HTTP and gRPC route, plus the peer listener's copies (modelfleet.routing.peering) when the
    # region has peers: all of them must meet the CEL rules.
    assert len([o for o in objs if not o["metadata"]["name"].startswith("peer-")]) == 2 * len(plan.models)
    return region.kubernetes_version, objs


def test_the_routes_meet_the_crds_cel_rules(routes):
    version, objs = routes
    for obj in objs:
        validate_manifest(obj, version)


@pytest.mark.parametrize("change, words", [
    (lambda r: r["spec"]["rules"][0]["matches"][0]["method"].update(method="Model-Infer"), "method.method"),
    (lambda r: r["spec"]["rules"][0]["matches"][0]["method"].update(service="inference/GRPC"), "method.service"),
    (lambda r: r["spec"]["rules"][0]["backendRefs"][0].pop("port"), "Must have port for Service reference"),
    (lambda r: r["spec"]["rules"][0]["filters"].append(r["spec"]["rules"][0]["filters"][0]),
     "ResponseHeaderModifier filter cannot be repeated"),
    (lambda r: r["spec"]["rules"][0]["filters"][0].pop("responseHeaderModifier"),
     "filter.responseHeaderModifier must be specified"),
    (lambda r: r["spec"]["rules"][0]["filters"][0].update(type="RequestMirror"),
     "filter.responseHeaderModifier must be nil"),
    # 3 rules of 50 matches: each within the schema's 64, together over the CEL rule's 128.
    (lambda r: r["spec"].update(rules=[{**r["spec"]["rules"][0], "matches": r["spec"]["rules"][0]["matches"] * 10}] * 3),
     "more than 128 matches"),
])
def test_a_route_breaking_a_cel_rule_is_refused(routes, change, words):
    version, objs = routes
    grpc = copy.deepcopy(next(o for o in objs if o["kind"] == "GRPCRoute"))
    change(grpc)
    with pytest.raises(ManifestError, match=words):
        validate_manifest(grpc, version)
