"""The gateway in the cloud: every object valid against its schema, declared as built, and the security rules
(who may reach Triton, who may call a model, where limits are counted, where secrets live) checked against what
the specs say, read here independently of the plan."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from modelfleet import serving, versions
from modelfleet.gateway import manifests
from modelfleet.loader import SpecError, load_fleet
from modelfleet.offline import REDACTED, Recorded, evaluate
from modelfleet.plan import FleetPlan, build_plan

ROOT = Path(__file__).resolve().parents[1]
CLOUD_STACKS = ["dev", "staging", "prod"]
EVALUATED = ["dev", "prod"]
GATEWAY = "modelfleet:gateway:Gateway"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
# Independent of the code: the header names of the issue's contract, Kubernetes' namespace label, Envoy Gateway's
# pod labels and namespace, and the KServe v2 / Triton gRPC names.
TENANT_HEADER, KEY_ID_HEADER, MODEL_HEADER = "x-modelfleet-tenant", "x-modelfleet-key-id", "x-modelfleet-model"
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
ENVOY_NAMESPACE = "envoy-gateway-system"
PER_REGION = {"EnvoyProxy", "GatewayClass", "Gateway", "ClientTrafficPolicy", "ClusterSecretStore", "Deployment",
              "Service", "PodDisruptionBudget"}
PER_MODEL = ("HTTPRoute", "GRPCRoute", "SecurityPolicy", "BackendTrafficPolicy", "EnvoyExtensionPolicy")


@cache
def plan_of(stack: str, root: Path = ROOT) -> FleetPlan:
    return build_plan(load_fleet(root, stack))


def model_yaml(name: str) -> dict:
    return yaml.safe_load((ROOT / "models" / f"{name}.yaml").read_text())


def built(stack: str):
    plan = plan_of(stack)
    for region in plan.regions:
        for obj in manifests.region_objects(plan, region, manifests.placeholder_cloud(plan, region), {"a": "b"}):
            yield region, obj


# --- schemas -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_every_gateway_object_passes_its_schema(stack):
    plan = plan_of(stack)
    objects = list(built(stack))
    scopes = {f"infer:{m.name}" for m in plan.models}  # the default scope: one per model in the examples
    # Per region: 15 fixed objects (16 on GCP: Memorystore's CA), one ExternalSecret per scope, and the five
    # per-model kinds for each model placed there.
    expected = sum(15 + (r.cloud == "gcp") + len(scopes) + 5 * len(r.placements) for r in plan.regions)
    if plan.routing:
        # The second failover layer (routing.peering): per region the peer certificate and the peer listener's
        # policy, a Backend and its TLS policy per peer region, and per model two peer routes and the gRPC half of
        # its traffic policy.
        pairs = [(m.model, region, peer) for m in plan.routing.models for region, peer in m.fallback]
        expected += 2 * len({region for _, region, _ in pairs}) + 3 * len(pairs) + 2 * len({p[1:] for p in pairs})
    assert len(objects) == expected > 0
    kinds = set()
    for region, obj in objects:
        serving.validate_manifest(obj, region.kubernetes_version)
        kinds.add(obj["kind"])
    assert kinds >= PER_REGION | set(PER_MODEL) | {"ExternalSecret", "NetworkPolicy", "ServiceAccount"}
    if plan.routing:
        assert kinds >= {"Backend", "BackendTLSPolicy"}


def _first(stack: str, kind: str) -> tuple:
    return next((r, copy.deepcopy(o)) for r, o in built(stack) if o["kind"] == kind)


@pytest.mark.parametrize("kind, path, value, message", [
    ("SecurityPolicy", ("spec", "apiKeyAuth", "forwardClientIdHeader"), "x", "Additional properties"),
    ("BackendTrafficPolicy", ("spec", "rateLimit", "global", "rules", 0, "limit", "unit"), "Week", "is not one of"),
    ("EnvoyExtensionPolicy", ("spec", "extProc", 0, "processingMode", "request", "body"), "All", "is not one of"),
    ("EnvoyExtensionPolicy", ("spec", "extProc", 0, "messageTimeout"), "half a second", "does not match"),
    ("HTTPRoute", ("spec", "rules", 0, "backendRefs", 0, "port"), 70000, "is greater than"),
    ("GRPCRoute", ("spec", "rules", 0, "matches", 0, "headers", 0, "name"), "bad header", "does not match"),
    ("Gateway", ("spec", "listeners", 0, "tls", "mode"), "Offload", "is not one of"),
    ("ExternalSecret", ("spec", "secretStoreRef", "kind"), "Vault", "is not one of"),
    ("EnvoyProxy", ("spec", "telemetry", "accessLog", "settings", 0, "format", "type"), "YAML", "is not one of"),
])
def test_the_vendored_schemas_reject_what_the_crds_reject(kind, path, value, message):
    region, obj = _first("prod", kind)
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(serving.ManifestError, match=message):
        serving.validate_manifest(obj, region.kubernetes_version)


def test_a_missing_required_field_and_an_unknown_kind_fail():
    region, obj = _first("prod", "SecurityPolicy")
    del obj["spec"]["apiKeyAuth"]["credentialRefs"]
    with pytest.raises(serving.ManifestError, match="'credentialRefs' is a required property"):
        serving.validate_manifest(obj, region.kubernetes_version)
    unknown = {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "HTTPRouteFilter", "metadata": {"name": "x"},
               "spec": {}}
    with pytest.raises(serving.ManifestError, match="HTTPRouteFilter/x"):
        serving.validate_manifest(unknown, region.kubernetes_version)


def test_every_vendored_schema_names_its_source_and_the_pinned_chart():
    for name in serving.VENDORED_CRD_SCHEMAS:
        header = (ROOT / "modelfleet" / "data" / name).read_text().split("\nx-definitions:")[0]
        assert "Source:" in header and "commit" in header and "PRUNED" in header, name
    assert versions.ENVOY_GATEWAY.version in (ROOT / "modelfleet/data/envoy-gateway-crd-schemas.yaml").read_text()
    assert versions.EXTERNAL_SECRETS.version in (ROOT / "modelfleet/data/external-secrets-crd-schemas.yaml").read_text()


# --- the evaluated program ------------------------------------------------------------------------------------

class Declared:
    def __init__(self, resources: list[Recorded], plan: FleetPlan):
        self.resources = resources
        self.plan = plan
        self.by_urn = {r.urn: r for r in resources}

    def of(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == typ]

    def kind(self, kind: str) -> list[Recorded]:
        return [r for r in self.resources if r.type.startswith("kubernetes:") and r.inputs.get("kind") == kind
                and GATEWAY in r.urn]

    def models_own(self, kind: str) -> list[Recorded]:
        """The model's own objects of a kind, without the second failover layer's (routing.peering): its peer
        routes and the gRPC half of its traffic policy."""
        return [r for r in self.kind(kind) if not r.inputs["metadata"]["name"].startswith("peer-")
                and not (kind == "BackendTrafficPolicy" and r.inputs["metadata"]["name"].endswith("-grpc"))]

    def region_key(self, r: Recorded) -> str:
        assert r.provider and r.provider.endswith("-k8s"), r.urn
        return r.provider.removesuffix("-k8s")


@pytest.fixture(params=EVALUATED)
def declared(request, evaluated) -> Declared:
    return Declared(evaluated(request.param).resources, plan_of(request.param))


def test_one_gateway_per_region_through_its_clusters_provider(declared):
    gateways = declared.kind("Gateway")
    assert sorted(declared.region_key(g) for g in gateways) == sorted(r.key for r in declared.plan.regions)
    for kind in PER_MODEL:
        recorded = declared.models_own(kind)
        placements = [(r.key, p.model) for r in declared.plan.regions for p in r.placements]
        assert len(recorded) == len(placements) > 0, kind
        assert sorted((declared.region_key(o), o.inputs["metadata"]["labels"]["modelfleet.io/model"])
                      for o in recorded) == sorted(placements), kind


def test_declared_objects_are_the_built_manifests_and_valid(declared):
    """Everything but the deploy-time values (registry, Redis endpoint, identity) is what the builders make."""
    plan = declared.plan
    total = 0
    for region in plan.regions:
        cloud = manifests.placeholder_cloud(plan, region)
        for obj in manifests.region_objects(plan, region, cloud, {}):
            name = f"{region.key}-gateway-{obj['kind'].lower()}-{obj['metadata']['name']}"
            [recorded] = [r for r in declared.resources if r.name == name and GATEWAY in r.urn]
            total += 1
            serving.validate_manifest(recorded.inputs, region.kubernetes_version)
            if obj["kind"] in ("Deployment", "ServiceAccount", "ConfigMap") or obj["metadata"]["name"] in (
                    "envoy-ratelimit",):
                continue  # image, identity, CA and Redis address are the deployment's
            assert recorded.inputs == obj, name
    assert total == sum(1 for r in declared.resources if GATEWAY in r.urn and r.custom
                        and not r.type.startswith("kubernetes:helm")) > 0


def _route_of(declared: Declared, kind: str, region: str, model: str) -> Recorded:
    [r] = [o for o in declared.kind(kind) if declared.region_key(o) == region
           and o.inputs["metadata"]["name"] == f"triton-{model}"]
    return r


def test_routes_reach_only_their_models_triton(declared):
    routes = declared.models_own("HTTPRoute") + declared.models_own("GRPCRoute")
    assert len(routes) == 2 * sum(len(r.placements) for r in declared.plan.regions) > 0
    for route in routes:
        model = route.inputs["metadata"]["labels"]["modelfleet.io/model"]
        [rule] = route.inputs["spec"]["rules"]
        port = 8000 if route.inputs["kind"] == "HTTPRoute" else 8001
        # Then, with global routing, the peer region's gateway as a fallback (tests/test_routing_peering.py).
        assert rule["backendRefs"][0] == {"group": "", "kind": "Service", "name": f"triton-{model}", "port": port,
                                          "weight": 100}
        assert all(ref["kind"] == "Backend" for ref in rule["backendRefs"][1:])
        assert len(rule["backendRefs"]) == 1 + bool(declared.plan.routing)
        if route.inputs["kind"] == "HTTPRoute":
            assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": f"/v2/models/{model}"}}]
        else:
            assert {m["method"]["service"] for m in rule["matches"]} == {"inference.GRPCInferenceService"}
            assert "ModelInfer" in {m["method"]["method"] for m in rule["matches"]}
            assert "ModelStreamInfer" not in {m["method"]["method"] for m in rule["matches"]}
            for match in rule["matches"]:
                assert match["headers"] == [{"type": "Exact", "name": MODEL_HEADER, "value": model}]


def test_every_route_names_the_version_that_answers_for_the_audit_line(declared):
    """No model here has a canary: each route, its own and the peer listener's, sets the spec's version on the
    answer (`set`: Triton cannot put its own), and the audit line reads it back."""
    routes = declared.kind("HTTPRoute") + declared.kind("GRPCRoute")
    assert len(routes) >= 2 * sum(len(r.placements) for r in declared.plan.regions) > 0
    for route in routes:
        spec = model_yaml(route.inputs["metadata"]["labels"]["modelfleet.io/model"])
        assert "rollout" not in spec
        [rule] = route.inputs["spec"]["rules"]
        assert rule["filters"] == [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
            "set": [{"name": "x-modelfleet-version", "value": str(spec.get("version", 1))}]}}], route.urn
    for proxy in declared.kind("EnvoyProxy"):
        [setting] = proxy.inputs["spec"]["telemetry"]["accessLog"]["settings"]
        assert setting["format"]["json"]["version"] == "%RESP(X-MODELFLEET-VERSION)%"


def test_every_route_is_authenticated_limited_and_inspected(declared):
    for region in declared.plan.regions:
        for placement in region.placements:
            model, spec = placement.model, model_yaml(placement.model)
            targets = sorted(({"group": "gateway.networking.k8s.io", "kind": k, "name": f"triton-{model}"}
                              for k in ("GRPCRoute", "HTTPRoute")), key=lambda t: t["kind"])
            security = _route_of(declared, "SecurityPolicy", region.key, model).inputs["spec"]
            limits = _route_of(declared, "BackendTrafficPolicy", region.key, model).inputs["spec"]
            extension = _route_of(declared, "EnvoyExtensionPolicy", region.key, model).inputs["spec"]
            for policy in (security, extension):
                assert sorted(policy["targetRefs"], key=lambda t: t["kind"]) == targets
            # With global routing the limits come in two halves, one per route kind, each with its own health check.
            halves = [p.inputs["spec"] for p in declared.kind("BackendTrafficPolicy")
                      if declared.region_key(p) == region.key
                      and p.inputs["metadata"]["name"] == f"triton-{model}-grpc"]
            assert sorted((t for h in [limits, *halves] for t in h["targetRefs"]), key=lambda t: t["kind"]) == targets
            for half in halves:
                assert half["rateLimit"] == limits["rateLimit"]

            # API keys from this model's scope's Secret only; the key never reaches Triton.
            assert "jwt" not in security
            auth = security["apiKeyAuth"]
            assert auth["credentialRefs"] == [{"group": "", "kind": "Secret", "name": f"gateway-keys-infer-{model}"}]
            assert auth["sanitize"] is True and auth["forwardClientIDHeader"] == KEY_ID_HEADER
            assert auth["extractFrom"] == [{"headers": ["x-api-key"]}]

            # The spec's numbers, per identity, counted in Redis (Global).
            rate = spec.get("gateway", {}).get("rate_limit", {})
            expected = [(rate.get("requests_per_second", 50), "Second")]
            if rate.get("requests_per_day"):
                expected.append((rate["requests_per_day"], "Day"))
            assert limits["rateLimit"]["type"] == "Global"
            rules = limits["rateLimit"]["global"]["rules"]
            assert [(r["limit"]["requests"], r["limit"]["unit"]) for r in rules] == expected
            # Per tenant (issue 11), not per key: every key of a tenant shares the counters. apiKeyAuth forwards the
            # client id only, so the model's Lua filter derives the tenant header from it.
            for rule in rules:
                assert rule["clientSelectors"] == [{"headers": [{"name": TENANT_HEADER, "type": "Distinct"}]}]
            [lua] = extension["lua"]
            assert lua["type"] == "Inline" and KEY_ID_HEADER in lua["inline"] and TENANT_HEADER in lua["inline"]

            # Fail closed unless the spec says open; responses inspected only for BYTES outputs with PII on.
            [ext] = extension["extProc"]
            assert ext["failOpen"] is (spec.get("gateway", {}).get("fail_mode") == "open")
            assert ext["failOpen"] is False  # neither example model opts out
            pii_on = spec.get("gateway", {}).get("pii", {}).get("mode", "mask") != "off"
            bytes_out = any(t["dtype"] == "BYTES" for t in spec["outputs"])
            assert ("response" in ext["processingMode"]) is (pii_on and bytes_out)
            # The model header comes with the request headers: the CRD admits no `request.headers[...]` attribute.
            assert ext["processingMode"]["request"] == {"body": "Buffered", "attributes": ["request.path"]}
            assert ext["backendRefs"] == [{"group": "", "kind": "Service", "name": "gateway-inspector",
                                           "port": manifests.INSPECTOR_PORT}]


def test_clients_cannot_set_their_own_identity_headers(declared):
    policies = [p for p in declared.kind("ClientTrafficPolicy")
                if "sectionName" not in p.inputs["spec"]["targetRefs"][0]]  # the peer listener's: peering tests
    assert len(policies) == len(declared.plan.regions)
    for policy in policies:
        spec = policy.inputs["spec"]
        assert set(spec["headers"]["earlyRequestHeaders"]["remove"]) == {TENANT_HEADER, KEY_ID_HEADER}
        assert spec["tls"]["minVersion"] in ("1.2", "1.3")
        largest = max(m.gateway.max_request_bytes for m in declared.plan.models)
        assert int(spec["connection"]["bufferLimit"]) == largest


def test_the_load_balancer_is_internal_and_tls_terminates_at_envoy(declared):
    for proxy in declared.kind("EnvoyProxy"):
        cloud = declared.region_key(proxy).split("-")[0]
        annotations = proxy.inputs["spec"]["provider"]["kubernetes"]["envoyService"]["annotations"]
        expected = ({"service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
                     "service.beta.kubernetes.io/aws-load-balancer-internal": "true"} if cloud == "aws"
                    else {"networking.gke.io/load-balancer-type": "Internal"})
        assert annotations == expected
    for gateway in declared.kind("Gateway"):
        listener, *peer = gateway.inputs["spec"]["listeners"]
        assert [p["name"] for p in peer] == (["peer"] if declared.plan.routing else [])
        assert (listener["protocol"], listener["port"], listener["tls"]["mode"]) == ("HTTPS", 443, "Terminate")
        assert listener["tls"]["certificateRefs"] == [{"group": "", "kind": "Secret", "name": "gateway-tls"}]
        assert listener["allowedRoutes"] == {"namespaces": {"from": "Same"}}


def test_an_external_stack_gets_an_internet_facing_load_balancer(project_copy):
    path = project_copy / "stacks" / "Pulumi.prod.yaml"
    text = path.read_text().replace("  modelfleet:gateway:\n", "  modelfleet:gateway:\n    load_balancer: external\n")
    path.write_text(text)
    plan = build_plan(load_fleet(project_copy, "prod"))
    annotations = {r.cloud: manifests.envoy_proxy(plan, r, plan.gateway)["spec"]["provider"]["kubernetes"]
                   ["envoyService"].get("annotations", {}) for r in plan.regions}
    assert annotations == {"aws": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}, "gcp": {}}


def test_the_audit_line_has_the_plans_fields_and_goes_to_stdout(declared):
    for proxy in declared.kind("EnvoyProxy"):
        [setting] = proxy.inputs["spec"]["telemetry"]["accessLog"]["settings"]
        assert setting["sinks"] == [{"type": "File", "file": {"path": "/dev/stdout"}}]
        fields = setting["format"]["json"]
        assert set(fields) == set(declared.plan.gateway.audit_fields)  # a Struct: Envoy orders the keys itself
        assert fields["tenant"] == f"%REQ({TENANT_HEADER.upper()})%"
        assert fields["key_id"] == f"%REQ({KEY_ID_HEADER.upper()})%"
        # The inspector's verdict, from the namespace its ext_proc answers write.
        from modelfleet.gateway.service import METADATA_NAMESPACE
        assert fields["decision"] == f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:decision)%"
        # Never the key, never a body.
        assert not any("X-API-KEY" in v.upper() or "BODY" in v.upper() for v in fields.values())


# --- network policies: independent expectations -----------------------------------------------------------------

def _peers(policy: Recorded, direction: str) -> list[dict]:
    key = "from" if direction == "ingress" else "to"
    return [peer for rule in policy.inputs["spec"].get(direction, []) for peer in rule.get(key, [])]


def test_triton_admits_only_envoy_pods_of_this_gateway_namespace(declared):
    tritons = [p for p in declared.of(NETWORK_POLICY) if p.inputs["metadata"]["name"].startswith("triton-")]
    assert len(tritons) == sum(len(r.placements) for r in declared.plan.regions) > 0
    for policy in tritons:
        namespace = policy.inputs["metadata"]["namespace"]
        inference = [rule for rule in policy.inputs["spec"]["ingress"]
                     if {p["port"] for p in rule["ports"]} & {8000, 8001}]
        assert len(inference) == 1
        [peer] = inference[0]["from"]
        # Both selectors in one peer: Envoy Gateway's namespace, by the label only the API server writes, AND
        # the pods Envoy Gateway made for this stack's Gateway. A podSelector alone would admit any pod in
        # Triton's namespace that copies the labels; an ipBlock would admit by address.
        assert peer["namespaceSelector"] == {"matchLabels": {NAMESPACE_LABEL: ENVOY_NAMESPACE}}
        assert peer["podSelector"]["matchLabels"]["gateway.envoyproxy.io/owning-gateway-namespace"] == namespace
        for any_peer in _peers(policy, "ingress"):
            assert "namespaceSelector" in any_peer and "ipBlock" not in any_peer


def test_gateway_pods_are_fenced_both_ways(declared):
    by_name = {(declared.region_key(p), p.inputs["metadata"]["name"]): p for p in declared.of(NETWORK_POLICY)}
    for region in declared.plan.regions:
        namespace = serving.namespace_name(declared.plan)
        envoy = by_name[(region.key, f"envoy-{namespace}")]
        inspector = by_name[(region.key, "gateway-inspector")]
        ratelimit = by_name[(region.key, "envoy-ratelimit")]
        for policy in (envoy, inspector, ratelimit):
            assert policy.inputs["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert envoy.inputs["metadata"]["namespace"] == ratelimit.inputs["metadata"]["namespace"] == ENVOY_NAMESPACE
        # The inspector: only Envoy calls it (Prometheus scrapes its drift metrics, on that port alone); it calls
        # nobody.
        assert inspector.inputs["spec"]["egress"] == []
        by_port = {p["port"]: rule["from"] for rule in inspector.inputs["spec"]["ingress"] for p in rule["ports"]}
        assert set(by_port) == {manifests.INSPECTOR_PORT, manifests.INSPECTOR_METRICS_PORT}
        [peer] = by_port[manifests.INSPECTOR_PORT]
        assert peer["namespaceSelector"] == {"matchLabels": {NAMESPACE_LABEL: ENVOY_NAMESPACE}}
        [scraper] = by_port[manifests.INSPECTOR_METRICS_PORT]
        assert scraper == {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: serving.PROMETHEUS_NAMESPACE}}}
        # Envoy reaches Triton's inference ports and nothing of Triton's metrics; no address block without JWT.
        ports = {p["port"] for rule in envoy.inputs["spec"]["egress"] for p in rule["ports"]}
        assert {8000, 8001, manifests.INSPECTOR_PORT, 53} <= ports and 8002 not in ports
        assert declared.plan.gateway.jwt is None
        # Other than to the peer regions' gateways, on their peer port only (routing.peering).
        assert not any("ipBlock" in peer for rule in envoy.inputs["spec"]["egress"] for peer in rule["to"]
                       if rule["ports"] != [{"protocol": "TCP", "port": 8443}])
        # The rate limit service reaches Redis on its port inside the region's own network only.
        redis = [rule for rule in ratelimit.inputs["spec"]["egress"]
                 if any("ipBlock" in peer for peer in rule["to"])]
        [rule] = redis
        port = 6379 if region.cloud == "aws" else 6378
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
        import ipaddress
        cidr = ipaddress.ip_network(rule["to"][0]["ipBlock"]["cidr"])
        assert cidr.subnet_of(ipaddress.ip_network("10.0.0.0/8")), "private addresses only"


# --- secrets, identity, Redis, registry ----------------------------------------------------------------------------

def test_no_secret_value_in_config_state_or_objects(declared):
    assert declared.of("kubernetes:core/v1:Secret") == []  # secrets reach the cluster only through ESO
    for r in declared.of("aws:elasticache/replicationGroup:ReplicationGroup"):
        assert r.inputs["authToken"] == REDACTED
        assert r.inputs["transitEncryptionEnabled"] is True and r.inputs["atRestEncryptionEnabled"] is True
    versions_ = declared.of("aws:secretsmanager/secretVersion:SecretVersion") + declared.of(
        "gcp:secretmanager/secretVersion:SecretVersion")
    assert len(versions_) == len(declared.plan.regions)  # the Redis token only; keys and TLS come from people
    for v in versions_:
        assert v.inputs.get("secretString", v.inputs.get("secretData")) == REDACTED
    for r in declared.of("gcp:redis/instance:Instance"):
        assert r.inputs["authEnabled"] is True and r.inputs["transitEncryptionMode"] == "SERVER_AUTHENTICATION"
    for external in declared.kind("ExternalSecret"):
        assert set(external.inputs["spec"]) == {"refreshInterval", "secretStoreRef", "target", "dataFrom"}
    dumped = json.dumps([r.inputs for r in declared.resources])
    assert "mock-auth-" not in dumped


def test_the_secret_reader_reads_only_the_gateways_secrets(declared):
    for region in declared.plan.regions:
        expected = {manifests.secret_id(declared.plan, region, w) for w in ("tls", "redis-auth")} | {
            manifests.api_keys_secret_id(declared.plan, region, f"infer:{m.name}") for m in declared.plan.models}
        if declared.plan.routing:  # the region's peer certificate (routing.peering)
            expected.add(manifests.secret_id(declared.plan, region, "peer-tls"))
        if region.cloud == "aws":
            secrets = [s for s in declared.of("aws:secretsmanager/secret:Secret") if s.name.startswith(region.key)]
            assert {s.inputs["name"] for s in secrets} == expected
            [policy] = [p for p in declared.of("aws:iam/rolePolicy:RolePolicy")
                        if p.name == f"{region.key}-gateway-secrets"]
            [statement] = json.loads(policy.inputs["policy"])["Statement"]
            assert statement["Action"] == ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
            assert sorted(statement["Resource"]) == sorted(s.outputs["arn"] for s in secrets)
            assert not any("*" in arn for arn in statement["Resource"])
            [role] = [r for r in declared.of("aws:iam/role:Role") if r.name == f"{region.key}-gateway-secrets"]
            condition = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
            subject = next(v for k, v in condition.items() if k.endswith(":sub"))
            assert subject == f"system:serviceaccount:{serving.namespace_name(declared.plan)}:gateway-secrets"
        else:
            secrets = [s for s in declared.of("gcp:secretmanager/secret:Secret") if s.name.startswith(region.key)]
            assert {s.inputs["secretId"] for s in secrets} == expected
            members = [m for m in declared.of("gcp:secretmanager/secretIamMember:SecretIamMember")
                       if m.name.startswith(region.key)]
            assert len(members) == len(secrets)
            assert {m.inputs["role"] for m in members} == {"roles/secretmanager.secretAccessor"}
            [account] = [a for a in declared.of("gcp:serviceaccount/account:Account")
                         if a.name == f"{region.key}-gateway-secrets"]
            assert {m.inputs["member"] for m in members} == {f"serviceAccount:{account.outputs['email']}"}
            # GCP's account id rule (6-30 characters), and the region whole: a cut id could serve two regions.
            assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", account.inputs["accountId"])
            assert account.inputs["accountId"].endswith(f"-{region.region}")
            [wi] = [m for m in declared.of("gcp:serviceaccount/iAMMember:IAMMember")
                    if m.name == f"{region.key}-gateway-secrets-workload-identity"]
            assert wi.inputs["member"].endswith(f"[{serving.namespace_name(declared.plan)}/gateway-secrets]")


def test_the_inspector_runs_the_stacks_digest_from_the_regions_registry(declared):
    digest = (yaml.safe_load((ROOT / "stacks" / f"Pulumi.{declared.plan.stack}.yaml").read_text())
              ["config"]["modelfleet:gateway"]["inspector_image_digest"])
    deployments = [d for d in declared.kind("Deployment")]
    assert len(deployments) == len(declared.plan.regions)
    for d in deployments:
        region = declared.region_key(d)
        [container] = d.inputs["spec"]["template"]["spec"]["containers"]
        if region.startswith("aws"):
            [repo] = [r for r in declared.of("aws:ecr/repository:Repository") if r.name.startswith(region)]
            assert repo.inputs["imageTagMutability"] == "IMMUTABLE"
            assert container["image"] == f"{repo.outputs['repositoryUrl']}@{digest}"
        else:
            location = region.removeprefix("gcp-")
            assert re.fullmatch(rf"{location}-docker\.pkg\.dev/[a-z0-9-]+/modelfleet/gateway-inspector@{digest}",
                                container["image"])
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        # The local stack's service, as a process of its own: inspection only, for this stack's specs.
        assert container["command"] == ["python", "-m", "modelfleet.gateway.run_service"]
        args = container["args"]
        assert args[args.index("--listen") + 1] == f"0.0.0.0:{manifests.INSPECTOR_PORT}"
        assert args[args.index("--stack") + 1] == declared.plan.stack


def test_envoy_gateway_counts_in_the_regions_redis_with_tls_and_auth(declared):
    releases = [r for r in declared.of("kubernetes:helm.sh/v3:Release") if GATEWAY in r.urn]
    assert len(releases) == 2 * len(declared.plan.regions)
    for release in releases:
        chart = versions.ENVOY_GATEWAY if "gateway-helm" in release.inputs["chart"] else versions.EXTERNAL_SECRETS
        assert release.inputs["version"] == chart.version
        if chart is not versions.ENVOY_GATEWAY:
            continue
        assert release.inputs["chart"] == "oci://docker.io/envoyproxy/gateway-helm"
        region = declared.region_key(release)
        config = release.inputs["values"]["config"]["envoyGateway"]
        url = config["rateLimit"]["backend"]["redis"]["url"]
        if region.startswith("aws"):
            [redis] = [r for r in declared.of("aws:elasticache/replicationGroup:ReplicationGroup")
                       if r.name.startswith(region)]
            assert url == f"{redis.outputs['primaryEndpointAddress']}:6379"
        else:
            [redis] = [r for r in declared.of("gcp:redis/instance:Instance") if r.name.startswith(region)]
            assert url == f"{redis.outputs['host']}:6378"
        env = {e["name"]: e for e in config["provider"]["kubernetes"]["rateLimitDeployment"]["container"]["env"]}
        assert env["REDIS_TLS"]["value"] == "true"
        assert env["REDIS_AUTH"] == {"name": "REDIS_AUTH", "valueFrom": {"secretKeyRef": {
            "name": "ratelimit-redis-auth", "key": "token"}}}
        # After the node pools, like every add-on.
        assert any("NodeGroup" in d or "NodePool" in d for d in release.dependencies), release.name


def test_prod_redis_survives_a_zone_and_dev_stays_small(evaluated):
    prod = evaluated("prod").resources
    for r in [r for r in prod if r.type == "aws:elasticache/replicationGroup:ReplicationGroup"]:
        assert r.inputs["numCacheClusters"] >= 2 and r.inputs["multiAzEnabled"] is True
    for r in [r for r in prod if r.type == "gcp:redis/instance:Instance"]:
        assert r.inputs["tier"] == "STANDARD_HA"
    [dev] = [r for r in evaluated("dev").resources if r.type == "aws:elasticache/replicationGroup:ReplicationGroup"]
    assert dev.inputs["numCacheClusters"] == 1


# --- bad input -------------------------------------------------------------------------------------------------------

def test_a_cloud_stack_without_the_inspector_digest_is_refused(project_copy):
    path = project_copy / "stacks" / "Pulumi.dev.yaml"
    text = path.read_text()
    path.write_text(re.sub(r"  modelfleet:gateway:\n    inspector_image_digest: .*\n", "", text))
    with pytest.raises(SpecError, match="gateway.inspector_image_digest: required in a cloud environment"):
        load_fleet(project_copy, "dev")


def test_a_cloud_model_accepting_either_keys_or_tokens_is_refused(project_copy):
    stack = project_copy / "stacks" / "Pulumi.dev.yaml"
    stack.write_text(stack.read_text().replace(
        "  modelfleet:gateway:\n",
        "  modelfleet:gateway:\n    jwt: {issuer: 'https://auth.example.com/', audiences: [inference]}\n"))
    model = project_copy / "models" / "sentiment.yaml"
    model.write_text(model.read_text().replace("gateway:\n", "gateway:\n  auth: [api-key, jwt]\n", 1))
    with pytest.raises(SpecError, match=r"sentiment.yaml:\d+ gateway.auth: .*list one method"):
        load_fleet(project_copy, "dev")


def test_a_jwt_model_gets_the_stacks_issuer_and_its_own_scope(project_copy):
    stack = project_copy / "stacks" / "Pulumi.dev.yaml"
    stack.write_text(stack.read_text().replace(
        "  modelfleet:gateway:\n",
        "  modelfleet:gateway:\n    jwt: {issuer: 'https://auth.example.com/', audiences: [inference], "
        "tenant_claim: org}\n"))
    model = project_copy / "models" / "sentiment.yaml"
    model.write_text(model.read_text().replace("gateway:\n", "gateway:\n  auth: jwt\n", 1))
    plan = build_plan(load_fleet(project_copy, "dev"))
    route = plan.gateway.route("sentiment")
    policy = manifests.security_policy(plan, route)
    serving.validate_manifest(policy, "1.33")
    [provider] = policy["spec"]["jwt"]["providers"]
    assert provider["issuer"] == "https://auth.example.com/" and provider["audiences"] == ["inference"]
    assert provider["remoteJWKS"] == {"uri": "https://auth.example.com/.well-known/jwks.json"}
    assert provider["claimToHeaders"] == [{"header": TENANT_HEADER, "claim": "org"}]
    assert "apiKeyAuth" not in policy["spec"]
    assert policy["spec"]["authorization"]["defaultAction"] == "Deny"
    [rule] = policy["spec"]["authorization"]["rules"]
    assert rule["principal"]["jwt"]["scopes"] == ["infer:sentiment"]
    # Limits count per tenant claim; the JWKS fetch is the only egress to addresses outside the cluster.
    limits = manifests.backend_traffic_policy(plan, route)["spec"]["rateLimit"]["global"]["rules"]
    assert {h["name"] for r in limits for s in r["clientSelectors"] for h in s["headers"]} == {TENANT_HEADER}
    assert "lua" not in manifests.extension_policy(plan, route)["spec"]  # the tenant claim is already a header
    egress = manifests.envoy_network_policy(plan)["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]} in egress


def test_render_writes_each_regions_gateway_valid_and_without_secrets(tmp_path):
    from modelfleet.render import render

    plan = plan_of("prod")
    files = [p for p in render(plan, tmp_path) if "gateway" in p.relative_to(tmp_path).parts]
    for region in plan.regions:
        objects = [p for p in files if p.parts[-3] == region.key and p.name[:2].isdigit()]
        expected = manifests.region_objects(plan, region, manifests.placeholder_cloud(plan, region), {})
        assert len(objects) == len(expected) > 0, region.key
        for path in objects:
            obj = yaml.safe_load(path.read_text())
            serving.validate_manifest(obj, region.kubernetes_version)
            assert obj["kind"] != "Secret"
        helm = yaml.safe_load((tmp_path / "kubernetes" / region.key / "gateway" / "helm-gateway-helm.yaml").read_text())
        assert (helm["repository"], helm["version"]) == (versions.ENVOY_GATEWAY.repository, versions.ENVOY_GATEWAY.version)


def test_the_tenant_lua_makes_all_keys_of_a_tenant_share_their_counters(tmp_path):
    """The cloud's Lua filter in a real Envoy 1.40, ahead of a limit counting per tenant header (Envoy Gateway's
    order: auth, Lua, rate limit). Two keys of one tenant draw from one bucket of 3; another tenant has its own;
    a client's own tenant header changes nothing; tenants may contain dots."""
    import http.client

    from modelfleet.triton.runtime import free_ports
    from modelfleet.gateway.local import running_envoy

    route = plan_of("prod").gateway.route("fraud-detector")
    port, admin = free_ports(2)
    typed = "type.googleapis.com/envoy.extensions.filters.http."
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [{"name": "l", "address": {"socket_address": {
            "address": "127.0.0.1", "port_value": port}}, "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                             "HttpConnectionManager",
                    "stat_prefix": "t",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                        {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
                    "http_filters": [
                        {"name": "envoy.filters.http.lua", "typed_config": {
                            "@type": typed + "lua.v3.Lua",
                            "default_source_code": {"inline_string": manifests.tenant_lua(route)}}},
                        {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
                            "@type": typed + "local_ratelimit.v3.LocalRateLimit", "stat_prefix": "rl",
                            "token_bucket": {"max_tokens": 1000, "tokens_per_fill": 1000, "fill_interval": "1s"},
                            "filter_enabled": {"default_value": {"numerator": 100}},
                            "filter_enforced": {"default_value": {"numerator": 100}},
                            "rate_limits": [{"actions": [{"request_headers": {
                                "header_name": TENANT_HEADER, "descriptor_key": "tenant"}}]}],
                            "descriptors": [{"entries": [{"key": "tenant"}], "token_bucket": {
                                "max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "3600s"}}]}},
                        {"name": "envoy.filters.http.router", "typed_config": {"@type": typed + "router.v3.Router"}},
                    ]}}]}]}]},
    }
    with running_envoy(config, tmp_path, admin):
        def status(client_id: str, **extra: str) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/", headers={KEY_ID_HEADER: client_id, **extra})
                return conn.getresponse().status
            finally:
                conn.close()

        acme = [status("acme.aaaaaaaaaaaa"), status("acme.bbbbbbbbbbbb"), status("acme.aaaaaaaaaaaa"),
                status("acme.bbbbbbbbbbbb"), status("acme.cccccccccccc", **{TENANT_HEADER: "someone-else"})]
        assert acme == [200, 200, 200, 429, 429]
        assert status("other.dddddddddddd") == 200
        assert [status("a.b.eeeeeeeeeeee") for _ in range(4)] == [200, 200, 200, 429]
        assert status("a.ffffffffffff") == 200  # tenant "a", not "a.b"
