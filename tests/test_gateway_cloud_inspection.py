"""The inspector as Envoy Gateway drives it in the cloud: the request headers come first (Envoy Gateway sends them
whenever its EnvoyExtensionPolicy asks for the request), with the attributes its CRD admits (`request.path`); the
gRPC model header is read from those headers, since `request.headers['...']` is no attribute the CRD accepts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from modelfleet.gateway import manifests
from modelfleet.gateway.plan import MODEL_HEADER
from modelfleet.gateway.protos import ProcessingRequest
from modelfleet.gateway.service import EXT_PROC_ATTRIBUTES, Inspector
from modelfleet.loader import load_fleet
from modelfleet.plan import build_plan
from modelfleet.serving import ManifestError, validate_manifest

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def inspector():
    return Inspector(build_plan(load_fleet(PROJECT, "local")).gateway)


def _headers(path: str, model: str | None, attribute_path: bool) -> ProcessingRequest:
    req = ProcessingRequest()
    for key, value in ((":path", path), (":method", "POST"), *(((MODEL_HEADER, model),) if model else ())):
        header = req.request_headers.headers.headers.add()
        header.key, header.raw_value = key, value.encode()  # Envoy sends raw_value, not value
    if attribute_path:
        req.attributes[EXT_PROC_ATTRIBUTES].update({"request.path": path})
    return req


def _body(data: bytes) -> ProcessingRequest:
    req = ProcessingRequest()
    req.request_body.body = data
    req.request_body.end_of_stream = True
    return req


def _run(inspector, *messages) -> list:
    async def stream():
        for m in messages:
            yield m

    async def collect():
        return [r async for r in inspector.process(stream(), None)]

    # A loop of its own, never installed as the current one: asyncio.run would leave none current afterwards, and
    # later tests (Pulumi's mocks) ask for it.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(collect())
    finally:
        loop.close()


FRAUD = json.dumps({"inputs": [{"name": "features", "shape": [1, 32], "datatype": "FP32",
                                "data": [0.5] * 32}]}).encode()


@pytest.mark.parametrize("attribute_path", [True, False])
def test_http_request_is_inspected_from_the_headers_message(inspector, attribute_path):
    headers, body = _run(inspector, _headers("/v2/models/fraud-detector/infer", None, attribute_path), _body(FRAUD))
    assert headers.HasField("request_headers")
    assert body.HasField("request_body") and not body.HasField("immediate_response")


def test_grpc_model_header_comes_from_the_request_headers(inspector):
    path = "/inference.GRPCInferenceService/ModelInfer"
    _, answer = _run(inspector, _headers(path, "fraud-detector", True), _body(b"\x00\x00\x00\x00\x03abc"))
    # The model was found (its rules refused a broken body), not "no model is routed".
    assert answer.HasField("immediate_response")
    error = json.loads(answer.immediate_response.body)
    assert error["code"] != "unknown_model" and int(answer.immediate_response.status.code) == 400, error
    _, unrouted = _run(inspector, _headers(path, None, True), _body(b"\x00\x00\x00\x00\x03abc"))
    assert json.loads(unrouted.immediate_response.body)["code"] == "unknown_model"


def test_the_extension_policy_asks_only_for_attributes_the_crd_admits():
    plan = build_plan(load_fleet(PROJECT, "prod"))
    region = plan.regions[0]
    policies = [o for o in manifests.region_objects(plan, region, manifests.placeholder_cloud(plan, region), {})
                if o["kind"] == "EnvoyExtensionPolicy"]
    assert len(policies) == len(plan.models)
    for policy in policies:
        validate_manifest(policy, region.kubernetes_version)
        broken = json.loads(json.dumps(policy))
        broken["spec"]["extProc"][0]["processingMode"]["request"]["attributes"].append(
            f"request.headers['{MODEL_HEADER}']")
        with pytest.raises(ManifestError, match="attributes"):
            validate_manifest(broken, region.kubernetes_version)
