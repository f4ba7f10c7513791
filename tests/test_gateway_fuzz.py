"""Fuzz: 10,000+ generated requests against the ext_proc handler in-process (the code Envoy calls), and a
hostile-response pass over the PII filter (hostile credentials go to the real Envoy, whose filters check them:
tests/integration/test_gateway.py). Every answer must be a pass or a 4xx refusal that serializes;
nothing may raise. A real-Envoy sample of the same strategies runs in tests/integration/test_gateway.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelfleet.gateway.inspect import filter_response
from modelfleet.gateway.protos import ProcessingResponse
from modelfleet.gateway.service import Inspector
from modelfleet.loader import load_fleet
from modelfleet.plan import build_plan
from tests.gateway_strategies import body, requests

PROJECT = Path(__file__).resolve().parent.parent
FUZZ = settings(max_examples=10_000, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def gateway():
    return build_plan(load_fleet(PROJECT, "local")).gateway


def test_ext_proc_handler_never_fails_on_10000_requests(gateway):
    inspector = Inspector(gateway)
    outcomes = {"pass": 0, "refused": 0}

    @FUZZ
    @given(requests(), st.sampled_from(["http", "grpc"]))
    def one(request, protocol):
        model, raw, suffix = request
        plan = inspector.routes.get(model) or inspector.routes["sentiment"]
        if protocol == "grpc":
            response = inspector._request(plan, True, "ModelInfer", model, "", raw)
        else:
            response = inspector._request(plan, False, "", model, f"/v2/models/{model}/infer{suffix}", raw)
        ProcessingResponse.FromString(response.SerializeToString())  # what goes back to Envoy must serialize
        if response.HasField("immediate_response"):
            status = int(response.immediate_response.status.code)
            assert 400 <= status < 500, status
            error = json.loads(response.immediate_response.body)
            assert error["error"] and error["code"]
            outcomes["refused"] += 1
        else:
            assert response.HasField("request_body")
            outcomes["pass"] += 1

    one()
    assert sum(outcomes.values()) >= 10_000
    assert outcomes["refused"] and outcomes["pass"], outcomes  # the strategies reach both sides


def test_pii_filter_never_fails_on_hostile_responses(gateway):
    plan = next(r.inspection for r in gateway.routes)

    @settings(max_examples=1000, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body(), st.booleans())
    def one(raw, grpc):
        try:
            masked, _ = filter_response(plan, raw, grpc)
        except Exception as exc:  # gRPC framing errors are refusals, anything else is a bug
            assert grpc and type(exc).__name__ in ("Refused", "DecodeError"), exc
            return
        assert len(masked) == len(raw)

    one()
