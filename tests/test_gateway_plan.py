"""The gateway plan: per-model routes, auth, rate-limit buckets, inspection rules and fail mode, from the specs."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from modelfleet.gateway.plan import KeyRecord, key_hash
from modelfleet.loader import SpecError, load_fleet
from modelfleet.plan import build_plan

PROJECT = Path(__file__).resolve().parent.parent


def gateway_of(stack: str, root: Path = PROJECT):
    return build_plan(load_fleet(root, stack)).gateway


def test_local_listens_on_loopback_defaults_without_tls_and_cloud_on_443_with_tls():
    local, prod = gateway_of("local"), gateway_of("prod")
    assert (local.http_port, local.grpc_port, local.tls) == (8080, 8081, False)
    assert (prod.http_port, prod.grpc_port, prod.tls, prod.hostname) == (443, 443, True, "api.inference.example.com")
    assert prod.load_balancer == "internal"


def test_every_model_gets_whole_segment_http_and_header_selected_grpc_routes():
    plan = gateway_of("prod")
    assert [r.model for r in plan.routes] == ["fraud-detector", "sentiment"]
    for route in plan.routes:
        assert route.http_path_prefix == f"/v2/models/{route.model}"
        assert route.grpc_service == "inference.GRPCInferenceService"
        assert "ModelInfer" in route.grpc_methods and "ModelStreamInfer" not in route.grpc_methods
        assert route.auth.scope == f"infer:{route.model}"


def test_rate_limits_per_tenant_from_the_spec():
    fraud = gateway_of("prod").route("fraud-detector")
    rps, daily = fraud.rate_limits
    assert (rps.requests, rps.unit, rps.bucket, rps.fill_interval_s) == (2000, "Second", 2000, 1)
    assert (daily.requests, daily.unit, daily.fill_interval_s) == (50_000_000, "Day", 86_400)
    assert rps.descriptor[-1] == ("tenant", ""), "one bucket per tenant"
    # sentiment declares no quota: only the per-second bucket, at the default 50/s.
    [only] = gateway_of("prod").route("sentiment").rate_limits
    assert (only.name, only.requests) == ("rps", 50)


def test_response_phase_only_for_bytes_outputs_with_pii_on(project_copy: Path):
    plan = gateway_of("prod")
    for route in plan.routes:  # both example models answer with FP32 tensors: nothing to filter
        assert route.inspection.processing_mode["response_body_mode"] == "NONE"
        assert route.inspection.processing_mode["request_body_mode"] == "BUFFERED"
        assert route.inspection.fail_mode == "closed" and not route.inspection.failure_mode_allow
    spec = project_copy / "models" / "sentiment.yaml"
    spec.write_text(spec.read_text().replace("- {name: scores, dtype: FP32, dims: [3]}",
                                             "- {name: scores, dtype: BYTES, dims: [1]}"))
    sentiment = gateway_of("prod", project_copy).route("sentiment").inspection
    assert sentiment.bytes_outputs == ("scores",) and sentiment.pii_mode == "mask"
    assert sentiment.processing_mode["response_body_mode"] == "BUFFERED"
    spec.write_text(spec.read_text() + "  pii: {mode: \"off\"}\n")
    assert gateway_of("prod", project_copy).route("sentiment").inspection.processing_mode[
        "response_body_mode"] == "NONE"


@pytest.mark.parametrize("file, old, new, expected", [
    ("models/sentiment.yaml", "deny_patterns: [", "deny_patterns: ['(unclosed', ",
     "gateway.inspection.deny_patterns"),
    ("models/fraud-detector.yaml", "requests_per_second: 2000", "requests_per_second: 2000, burst: 10",
     "burst: 10 must be >= requests_per_second"),
    ("models/fraud-detector.yaml", "pii: {mode: \"off\"}", "pii: {mode: \"off\"}\n  fail_mode: sometimes",
     "gateway.fail_mode"),
    ("models/fraud-detector.yaml", "pii: {mode: \"off\"}", "pii: {mode: \"off\"}\n  auth: jwt",
     "jwt needs an issuer"),
    # Under the stack's one `modelfleet:gateway` key (it already names the inspector image's digest).
    ("stacks/Pulumi.prod.yaml", "  modelfleet:gateway:\n", "  modelfleet:gateway:\n    tls: false\n",
     "gateway.tls: the gateway terminates TLS"),
])
def test_bad_gateway_specs_name_the_field(project_copy: Path, file, old, new, expected):
    path = project_copy / file
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    with pytest.raises(SpecError) as err:
        load_fleet(project_copy, "prod")
    assert expected in "\n".join(str(p) for p in err.value.problems)


def test_jwt_from_the_stack_defaults_jwks_to_the_issuers_well_known(project_copy: Path):
    stack = project_copy / "stacks" / "Pulumi.prod.yaml"
    stack.write_text(stack.read_text().replace("  modelfleet:gateway:\n", "  modelfleet:gateway:\n    jwt: {issuer: "
                                               "'https://auth.example.com/', audiences: [inference]}\n"))
    jwt = gateway_of("prod", project_copy).jwt
    assert jwt.jwks_uri == "https://auth.example.com/.well-known/jwks.json"
    assert jwt.audiences == ("inference",) and jwt.tenant_claim == "sub"


def test_keys_are_stored_as_the_htpasswd_sha_the_key_check_compares():
    key = "mf_0123456789ab_" + "A" * 43
    # htpasswd -s: "{SHA}" + base64 of the SHA-1 digest (the key table carries it as hex, native_auth.key_table).
    assert key_hash(key) == "{SHA}" + base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
    assert key_hash(key) != key_hash(key[:-1] + "B") and len(key_hash(key)) == 5 + 28
    record = KeyRecord("0123456789ab", "acme", ("infer:sentiment",), key_hash(key), "2026-01-01T00:00:00Z")
    assert record.allows("infer:sentiment") and not record.allows("infer:fraud-detector")
    assert KeyRecord("x", "t", ("infer:*",), "h", "c").allows("infer:fraud-detector")


def test_optional_inputs_may_be_left_out_and_undeclared_inputs_are_not_checked(project_copy: Path):
    from modelfleet.gateway.inspect import check_http

    spec = project_copy / "models" / "fraud-detector.yaml"
    spec.write_text(spec.read_text().replace("- {name: features, dtype: FP32, dims: [32]}",
                                             "- {name: features, dtype: FP32, dims: [32]}\n"
                                             "  - {name: weights, dtype: FP32, dims: [2], optional: true}"))
    plan = gateway_of("prod", project_copy).route("fraud-detector").inspection
    body = b'{"inputs": [{"name": "features", "shape": [1, 32], "datatype": "FP32", "data": ' + \
        str([0.0] * 32).encode() + b'}]}'
    assert check_http(plan, "/v2/models/fraud-detector/infer", body) is None
    assert [(r.name, r.optional) for r in plan.inputs] == [("features", False), ("weights", True)]
    spec.write_text(spec.read_text().replace("weights", "features2").replace(", optional: true", ""))
    plan = gateway_of("prod", project_copy).route("fraud-detector").inspection
    assert check_http(plan, "/v2/models/fraud-detector/infer", body).code == "missing_input"
