"""The cloud half of the gateway failover layer (modelfleet.routing.peering): every object validates against the
vendored CRD schemas, each region's fallback is the peer an independent reading of the latency map and the
residency gives, never the region itself nor a region outside the residency set, and cross-region traffic is
mutual TLS on a listener of its own that reaches only the region's own Triton."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import pytest
import yaml

from modelfleet import serving
from modelfleet.gateway import manifests
from modelfleet.loader import load_fleet
from modelfleet.plan import FleetPlan, build_plan

ROOT = Path(__file__).resolve().parents[1]
ROUTED_STACKS = ["staging", "prod"]
PEER_PORT = 8443
BACKEND_GROUP = "gateway.envoyproxy.io"


@cache
def _plan(stack: str, root: Path = ROOT) -> FleetPlan:
    return build_plan(load_fleet(root, stack))


def _objects(plan: FleetPlan) -> dict[str, list[dict]]:
    return {r.ref: manifests.region_objects(plan, r, manifests.placeholder_cloud(plan, r), {"a": "b"})
            for r in plan.regions}


# --- an independent reading of the latency map and the residency --------------------------------------------

@cache
def _where() -> dict[str, dict]:
    data = yaml.safe_load((ROOT / "modelfleet/data/latency_keys.yaml").read_text())
    return {f"{cloud}:{name}": entry for cloud, entries in data.items() for name, entry in entries.items()}


def _km(a, b) -> float:
    (la1, lo1), (la2, lo2) = (map(math.radians, a)), (map(math.radians, b))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6371 * math.asin(math.sqrt(h))


def _expected_peer(root: Path, stack: str, model: str, region: str) -> str | None:
    """The nearest other region (distance to its latency key, as Route53 measures to AWS regions), inside the
    model's residency set when the region is in one; stack order breaks ties."""
    config = yaml.safe_load((root / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    regions = [r if isinstance(r, str) else r["region"] for r in config["modelfleet:regions"]]
    spec = yaml.safe_load((root / "models" / f"{model}.yaml").read_text())
    residency = spec.get("routing", {}).get("residency", {})
    allowed = next((set(members) for members in residency.values() if region in members), None)
    where = _where()
    candidates = [r for r in regions if r != region and (allowed is None or r in allowed)]
    if not candidates:
        return None

    def key_location(r: str):
        return where[f"aws:{where[r].get('key', r.split(':', 1)[1])}"]["at"]

    return min(candidates, key=lambda r: _km(where[region]["at"], key_location(r)))


def _fallback_regions(plan: FleetPlan, objects: list[dict], model: str) -> list[str]:
    """The regions a model's routes in one region fall back to, read from the declared objects."""
    backends = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Backend"}
    by_name = {r.name: r.region for r in plan.routing.regions}
    kube = plan.model(model).kube_name
    routes = [o for o in objects if o["kind"] in ("HTTPRoute", "GRPCRoute")
              and o["metadata"]["name"] == manifests.route_name(kube)]
    assert len(routes) == 2
    out = []
    for route in routes:
        [rule] = route["spec"]["rules"]
        for ref in rule["backendRefs"]:
            if ref["kind"] == "Backend":
                assert ref["group"] == BACKEND_GROUP
                backend = backends[ref["name"]]
                assert backend["spec"]["fallback"] is True
                [endpoint] = backend["spec"]["endpoints"]
                assert endpoint["fqdn"]["port"] == PEER_PORT
                out.append(by_name[endpoint["fqdn"]["hostname"]])
    return out


# --- tests ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", ROUTED_STACKS)
def test_every_peering_object_passes_its_schema(stack):
    plan = _plan(stack)
    kinds: dict[str, int] = {}
    for ref, objects in _objects(plan).items():
        region = next(r for r in plan.regions if r.ref == ref)
        for obj in objects:
            serving.validate_manifest(obj, region.kubernetes_version)
            kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
    peers = {(region, peer) for m in plan.routing.models for region, peer in m.fallback}
    assert kinds["Backend"] == kinds["BackendTLSPolicy"] == len(peers) > 0


@pytest.mark.parametrize("stack", ROUTED_STACKS)
def test_each_regions_fallback_is_the_nearest_peer_within_residency_and_never_itself(stack):
    plan = _plan(stack)
    objects = _objects(plan)
    checked = 0
    for region in plan.regions:
        for placement in region.placements:
            expected = _expected_peer(ROOT, stack, placement.model, region.ref)
            got = _fallback_regions(plan, objects[region.ref], placement.model)
            assert got == ([expected] * 2 if expected else []), (region.ref, placement.model)
            assert region.ref not in got
            checked += 1
    assert checked == sum(len(r.placements) for r in plan.regions) > 0


def test_a_resident_region_never_falls_back_outside_its_residency_set(project_copy):
    # sentiment's EU clients may be served by aws:eu-west-1 only: its nearest other region (gcp:europe-west4) is
    # in the EU but not in the set, so eu-west-1's gateway has no peer for it at all — not the nearest one.
    path = project_copy / "models" / "sentiment.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["routing"]["residency"] = {"eu": ["aws:eu-west-1"]}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    plan = build_plan(load_fleet(project_copy, "prod"))
    objects = _objects(plan)
    assert _expected_peer(project_copy, "prod", "sentiment", "aws:eu-west-1") is None
    assert _fallback_regions(plan, objects["aws:eu-west-1"], "sentiment") == []
    # fraud-detector has no residency: the same region falls back to its nearest region, which the EU set keeps.
    assert _fallback_regions(plan, objects["aws:eu-west-1"], "fraud-detector") == ["gcp:europe-west4"] * 2
    for ref, region_objects in objects.items():
        for model in ("sentiment", "fraud-detector"):
            resident = ref == "aws:eu-west-1" and model == "sentiment"
            for peer in _fallback_regions(plan, region_objects, model):
                assert not resident, f"{ref} sends {model} abroad to {peer}"
                assert peer != ref


@pytest.mark.parametrize("stack", ROUTED_STACKS)
def test_cross_region_traffic_is_mutual_tls_to_a_listener_that_reaches_only_its_own_triton(stack):
    plan = _plan(stack)
    namespace = serving.namespace_name(plan)
    for ref, objects in _objects(plan).items():
        of = lambda kind: [o for o in objects if o["kind"] == kind]  # noqa: E731
        [gateway] = of("Gateway")
        listeners = {x["name"]: x for x in gateway["spec"]["listeners"]}
        peer = listeners["peer"]
        assert (peer["protocol"], peer["port"], peer["tls"]["mode"]) == ("HTTPS", PEER_PORT, "Terminate")
        assert peer["tls"]["certificateRefs"] == [{"group": "", "kind": "Secret", "name": "peer-tls"}]
        # The listener requires a client certificate of the fleet's peer CA (not optional).
        [policy] = [p for p in of("ClientTrafficPolicy") if p["spec"]["targetRefs"][0].get("sectionName") == "peer"]
        validation = policy["spec"]["tls"]["clientValidation"]
        assert validation == {"caCertificateRefs": [{"group": "", "kind": "Secret", "name": "peer-tls"}]}
        # Envoy presents the region's peer certificate to backends with a TLS policy: the peers only.
        [proxy] = of("EnvoyProxy")
        assert proxy["spec"]["backendTLS"]["clientCertificateRef"] == {
            "group": "", "kind": "Secret", "name": "peer-tls", "namespace": namespace}
        assert {t["targetRefs"][0]["kind"] for t in (p["spec"] for p in of("BackendTLSPolicy"))} <= {"Backend"}
        for tls in of("BackendTLSPolicy"):
            [target] = tls["spec"]["targetRefs"]
            backend = next(b for b in of("Backend") if b["metadata"]["name"] == target["name"])
            peer_region = next(r.region for r in plan.routing.regions
                               if r.name == backend["spec"]["endpoints"][0]["fqdn"]["hostname"])
            assert tls["spec"]["validation"] == {
                "caCertificateRefs": [{"group": "", "kind": "Secret", "name": "peer-tls"}],
                "hostname": f"{peer_region.replace(':', '-')}.peer.modelfleet"}
        # Routes on the peer listener reach only their model's own Triton, and nothing else attaches to it.
        routes = of("HTTPRoute") + of("GRPCRoute")
        on_peer = [r for r in routes if r["spec"]["parentRefs"][0]["sectionName"] == "peer"]
        region = next(r for r in plan.regions if r.ref == ref)
        with_peer = [p.model for p in region.placements if _expected_peer(ROOT, stack, p.model, ref)]
        assert len(on_peer) == 2 * len(with_peer)
        for route in on_peer:
            assert route["metadata"]["name"].startswith("peer-")
            assert "hostnames" not in route["spec"]
            [rule] = route["spec"]["rules"]
            assert [ref_["kind"] for ref_ in rule["backendRefs"]] == ["Service"]
            assert rule["backendRefs"][0]["name"].startswith("triton-")
        # No API-key, limit or inspection policy names a peer route: the first gateway did all three.
        for kind in ("SecurityPolicy", "BackendTrafficPolicy", "EnvoyExtensionPolicy"):
            for p in of(kind):
                assert not any(t["name"].startswith("peer-") for t in p["spec"]["targetRefs"])
        # The secret holds the certificate, the key and the CA, synced from the region's secret manager.
        [secret] = [s for s in of("ExternalSecret") if s["metadata"]["name"] == "peer-tls"]
        assert secret["spec"]["dataFrom"] == [{"extract": {"key": manifests.secret_id(plan, region, "peer-tls")}}]
        # Envoy may open the peer port inward, and reach other regions' peer ports.
        [fence] = [n for n in of("NetworkPolicy") if n["metadata"]["name"] == f"envoy-{namespace}"]
        assert {"ports": [{"protocol": "TCP", "port": PEER_PORT}]} in fence["spec"]["ingress"]


@pytest.mark.parametrize("stack", ROUTED_STACKS)
def test_health_checks_and_retry_follow_the_local_failover_numbers(stack):
    plan = _plan(stack)
    every = [o for objects in _objects(plan).values() for o in objects if o["kind"] == "BackendTrafficPolicy"]
    # A model with no peer in a region (its residency set has no other region) keeps its one policy, unchecked.
    policies = [p for p in every if "healthCheck" in p["spec"]]
    assert len(policies) == 2 * sum(len(m.fallback) for m in plan.routing.models) > 0
    assert len(every) - len(policies) == sum(len(r.placements) for r in plan.regions) - len(policies) // 2
    for policy in policies:
        spec = policy["spec"]
        [target] = spec["targetRefs"]
        active, passive = spec["healthCheck"]["active"], spec["healthCheck"]["passive"]
        model = policy["metadata"]["labels"]["modelfleet.io/model"]
        if target["kind"] == "HTTPRoute":
            # Triton's per-model readiness (KServe v2), answered by the peer's route for the model too.
            assert active["type"] == "HTTP" and active["http"] == {"path": f"/v2/models/{model}/ready"}
        else:
            assert active["type"] == "TCP" and active["tcp"] == {}
        assert (active["interval"], active["timeout"], active["unhealthyThreshold"]) == ("1000ms", "500ms", 2)
        assert passive["consecutive5XxErrors"] == passive["consecutiveGatewayErrors"] == 3
        assert passive["maxEjectionPercent"] == 100
        # Only what failed before an upstream saw the request is retried: inference is never repeated.
        assert spec["retry"] == {"numRetries": 1, "retryOn": {"triggers": ["connect-failure", "refused-stream"]}}


def test_the_entry_load_balancer_carries_the_peer_port_and_envoy_gateway_serves_backends():
    from modelfleet.routing import endpoint, peering

    plan = _plan("prod")
    for region in plan.regions:
        service = endpoint.entry_service(plan, region)
        assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
            ("https", 443, 10443), ("peer", PEER_PORT, PEER_PORT)}
        cloud = manifests.placeholder_cloud(plan, region)
        values = peering.with_backend_api(plan, manifests.envoy_gateway_values(cloud))
        assert values["config"]["envoyGateway"]["extensionApis"] == {"enableBackend": True}
    dev = _plan("dev")
    assert dev.routing is None
    region = dev.regions[0]
    plain = manifests.region_objects(dev, region, manifests.placeholder_cloud(dev, region), {})
    assert not [o for o in plain if o["kind"] in ("Backend", "BackendTLSPolicy")]
