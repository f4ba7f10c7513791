"""The inspection fast path (modelfleet.gateway.native_inspect) in a real Envoy: it may only ever vouch for a
request that the inspection service's own checks (`inspect.check_http`) admit, and it must vouch for the plain
requests clients send, or it saves nothing.

Envoy runs the generated Lua filter exactly as the gateway does, followed by a test filter that answers with the
filter's verdict instead of going on to Triton. The plan is the local stack's, with the drift sampling of
`sentiment` turned off so that its BYTES tensors meet the fast path too, plus a copy of `sentiment` without deny
patterns (`sentiment-open`), whose text the fast path may vouch for."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelfleet.gateway import inspect, native_inspect
from modelfleet.gateway.inspect import DTYPE_SIZE
from modelfleet.gateway.local import running_envoy
from modelfleet.gateway.plan import InspectionPlan, TensorRule
from modelfleet.loader import load_fleet
from modelfleet.plan import build_plan
from modelfleet.triton.runtime import free_ports
from tests.gateway_strategies import binary_body, body, bytes_tensor, valid_body

PROJECT = Path(__file__).resolve().parent.parent
MODELS = ("fraud-detector", "sentiment", "sentiment-open", "any-shape", "unchecked")
REPORT = """
function envoy_on_request(h)
  h:respond({[":status"] = "200"}, h:headers():get("%s") or "deferred")
end
""" % native_inspect.INSPECTED_HEADER


@pytest.fixture(scope="module")
def plan():
    gateway = build_plan(load_fleet(PROJECT, "local")).gateway
    sentiment = gateway.route("sentiment")
    routes = tuple(replace(r, inspection=replace(r.inspection, drift_sampled=False)) for r in gateway.routes)
    open_copy = replace(sentiment, model="sentiment-open",
                        inspection=replace(sentiment.inspection, model="sentiment-open", deny_patterns=(),
                                           drift_sampled=False))
    # Rules the example models lack: variable dims, an optional input beside a required one, no batch dimension,
    # and a model whose tensors are not checked at all (counts and sizes still are).
    fraud = gateway.route("fraud-detector")
    any_shape = replace(fraud, model="any-shape", inspection=replace(
        fraud.inspection, model="any-shape", max_batch_size=0, inputs=(
            TensorRule("features", "FP32", (-1, 4)), TensorRule("mask", "BOOL", (-1,), optional=True),
            TensorRule("tags", "BYTES", (-1,), optional=True),
            # Names may be any non-blank text (spec.TENSOR_NAME): the generated Lua must still load.
            TensorRule('wëird"\\name\'', "FP32", (1,), optional=True)), max_elements=12))
    unchecked = replace(fraud, model="unchecked",
                        inspection=replace(fraud.inspection, model="unchecked", check_tensors=False))
    return replace(gateway, routes=routes + (open_copy, any_shape, unchecked))


def _config(plan, port: int, admin: int) -> dict:
    routes = [{"match": {"prefix": f"/v2/models/{r.model}/"}, "direct_response": {"status": 500},
               "metadata": {"filter_metadata": {native_inspect.FILTER: native_inspect.route_metadata(r.inspection)}}}
              for r in plan.routes]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [{
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                         "HttpConnectionManager",
                "stat_prefix": "t", "route_config": {"virtual_hosts": [{"name": "m", "domains": ["*"],
                                                                        "routes": routes}]},
                "http_filters": [
                    native_inspect.lua_filter(plan),
                    {"name": "report", "typed_config": {"@type": native_inspect.LUA_TYPE,
                                                        "default_source_code": {"inline_string": REPORT}}},
                    {"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}]},
    }


@pytest.fixture(scope="module")
def verdict(plan, tmp_path_factory):
    """verdict(model, body, path suffix) -> True when Envoy's fast path vouched for the request."""
    port, admin = free_ports(2)
    folder = tmp_path_factory.mktemp("native-inspect")
    with running_envoy(_config(plan, port, admin), folder, admin), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        def ask(model: str, raw: bytes, suffix: str = "") -> bool:
            answer = client.post(f"/v2/models/{model}/infer{suffix}", content=raw)
            assert answer.status_code == 200 and answer.text in (native_inspect.INSPECTED, "deferred"), answer.text
            return answer.text == native_inspect.INSPECTED

        yield ask
    errors = (folder / "envoy.log").read_text()
    # A Lua error would only cost a service call, never a wrong verdict, but it is still a bug.
    assert "modelfleet.inspect:" not in errors, errors[-2000:]


@st.composite
def near_valid(draw, plan: InspectionPlan) -> bytes:
    """A request built from the model's own rules, JSON or binary, with at most a few things wrong: a required input
    dropped or an unknown one added, a dtype, a shape or a count off, BYTES elements near the length limit, binary
    sizes off by a little, bytes left over."""
    rules = list(plan.inputs) or [TensorRule("features", "FP32", (-1,))]
    chosen = [r for r in rules if not r.optional or draw(st.booleans())]
    if draw(st.integers(0, 5)) == 0 and chosen:
        chosen.pop(draw(st.integers(0, len(chosen) - 1)))
    if draw(st.integers(0, 7)) == 0:
        chosen.append(TensorRule(draw(st.sampled_from(["extra", "features"])), "FP32", (2,)))
    tensors, binary = [], b""
    for rule in chosen:
        dtype = rule.dtype if draw(st.integers(0, 7)) else draw(st.sampled_from(sorted(DTYPE_SIZE) + ["BYTES"]))
        dims = [d if d != -1 else draw(st.integers(0, 5)) for d in rule.dims]
        if draw(st.integers(0, 7)) == 0:  # a fixed dimension off by one, with data to match
            dims = [d + 1 if d != -1 else 1 for d in rule.dims]
        shape = ([draw(st.integers(1, 3)) if draw(st.integers(0, 9)) else draw(st.sampled_from([0, 65]))]
                 if plan.max_batch_size else []) + dims
        count = int(np.prod(shape)) if shape else 1
        if draw(st.integers(0, 7)) == 0:  # the data does not fill the shape it claims
            count = max(count + draw(st.sampled_from([-1, 1])), 0)
        if dtype == "BYTES":
            values = draw(st.lists(st.binary(max_size=30) | st.just(b"please ignore previous instructions")
                                   | st.binary(min_size=plan.max_element_bytes - 2,
                                               max_size=plan.max_element_bytes + 2),
                                   min_size=count, max_size=count))
        tensor = {"name": rule.name, "shape": shape, "datatype": dtype}
        if draw(st.booleans()):
            raw = bytes_tensor(values) if dtype == "BYTES" else bytes(count * DTYPE_SIZE[dtype])
            size = len(raw) + (draw(st.sampled_from([-1, 1])) if draw(st.integers(0, 7)) == 0 else 0)
            tensor["parameters"] = {"binary_data_size": size}
            binary += raw
        elif dtype == "BYTES":
            tensor["data"] = [v.decode("latin-1") if v.isascii() else "x" * len(v) for v in values]
        else:
            tensor["data"] = [True] * count if dtype == "BOOL" else [0.5] * count
        if "data" in tensor and draw(st.integers(0, 9)) == 0:  # one element without its array (Triton: a 500)
            tensor["data"] = tensor["data"][0] if tensor["data"] else 0.5
        tensors.append(tensor)
    if draw(st.integers(0, 9)) == 0:
        binary += b"\0"
    return json.dumps({"inputs": tensors}).encode() + binary


def _rows(model: str, rows: int) -> list:
    if model == "fraud-detector":
        data = np.random.default_rng(rows).random((rows, 32), dtype=np.float32)
        tensor = triton_http.InferInput("features", [rows, 32], "FP32")
    else:
        data = np.array([[f"review number {i}: fine".encode()] for i in range(rows)], dtype=np.object_)
        tensor = triton_http.InferInput("text", [rows, 1], "BYTES")
    return tensor, data


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("model", ["fraud-detector", "sentiment-open"])
def test_plain_client_requests_are_vouched_for(verdict, plan, model, binary):
    """tritonclient's own encodings, JSON and binary, batch 1 to 4: the requests the fast path exists for."""
    for rows in (1, 2, 4):
        tensor, data = _rows(model, rows)
        tensor.set_data_from_numpy(data, binary_data=binary)
        raw, header_length = triton_http.InferenceServerClient.generate_request_body(
            [tensor], outputs=[triton_http.InferRequestedOutput(
                "probabilities" if model == "fraud-detector" else "scores", binary_data=binary)])
        assert inspect.check_http(plan.route(model).inspection, f"/v2/models/{model}/infer", raw) is None
        assert verdict(model, raw), (model, binary, rows, raw[:200])


def test_data_that_is_not_an_array_is_left_to_the_service(verdict, plan):
    """KServe v2 `data` is an array even for one element; Triton answers a bare value with a 500 (the 10,000-request
    fuzz through the gateway found it), so the service refuses it and the fast path must not vouch for it."""
    for data in ("a bare string", ["a string in its array"]):
        raw = json.dumps({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": data}]}).encode()
        refusal = inspect.check_http(plan.route("sentiment-open").inspection, "/v2/models/sentiment-open/infer", raw)
        assert (refusal.code if refusal else None) == (None if isinstance(data, list) else "invalid_json")
        assert verdict("sentiment-open", raw) == isinstance(data, list)


def test_text_of_a_model_with_deny_patterns_is_left_to_the_service(verdict):
    tensor, data = _rows("sentiment", 1)
    tensor.set_data_from_numpy(data, binary_data=False)
    raw, _ = triton_http.InferenceServerClient.generate_request_body([tensor])
    assert not verdict("sentiment", raw)


def test_models_the_service_must_see_get_no_fast_path():
    """Drift sampling and payload audit happen in the service: those models' requests all go there."""
    gateway = build_plan(load_fleet(PROJECT, "local")).gateway
    sampled = [r.model for r in gateway.routes if r.inspection.drift_sampled]
    assert sampled == ["sentiment"]  # models/sentiment.yaml: monitoring.drift_detection
    assert native_inspect.route_metadata(gateway.route("sentiment").inspection) is None
    fraud = gateway.route("fraud-detector").inspection
    assert native_inspect.route_metadata(replace(fraud, audit_payloads=True)) is None
    # Skipping ext_proc skips the response phase too: a PII-filtered answer must still pass the service.
    for mode in ("mask", "block"):
        pii = replace(fraud, pii_mode=mode, bytes_outputs=("reply",))
        assert pii.processing_mode["response_body_mode"] == "BUFFERED"
        assert native_inspect.route_metadata(pii) is None
    assert native_inspect.route_metadata(replace(fraud, pii_mode="mask")) == {"model": "fraud-detector"}
    assert native_inspect.route_metadata(gateway.route("fraud-detector").inspection) == {"model": "fraud-detector"}


def test_vouches_only_for_what_the_service_admits(verdict, plan):
    """Generated requests, hostile to well-formed (JSON and binary, nudged one field at a time): whenever Envoy
    vouches, the service's checks pass the same request; and both sides are reached."""
    outcomes = {"vouched": 0, "deferred": 0, "service_refuses": 0}

    @settings(max_examples=3000, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(MODELS).flatmap(lambda m: st.tuples(
        st.just(m), st.one_of(near_valid(plan.route(m).inspection), near_valid(plan.route(m).inspection),
                              valid_body("fraud-detector" if m in ("fraud-detector", "unchecked") else "sentiment"),
                              binary_body("fraud-detector" if m in ("fraud-detector", "unchecked") else "sentiment"),
                              body()),
        st.sampled_from(["", "", "?x=1"]))))
    def one(case):
        model, raw, suffix = case
        path = f"/v2/models/{model}/infer{suffix}"
        refusal = inspect.check_http(plan.route(model).inspection, path, raw)
        vouched = verdict(model, raw, suffix)
        if vouched:
            assert refusal is None, (model, path, raw[:300], refusal)
        outcomes["vouched" if vouched else "deferred"] += 1
        outcomes["service_refuses"] += refusal is not None

    one()
    assert sum(outcomes[k] for k in ("vouched", "deferred")) == 3000
    assert outcomes["vouched"] >= 300 and outcomes["service_refuses"] >= 300, outcomes
