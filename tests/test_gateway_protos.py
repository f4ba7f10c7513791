"""The service's protobuf view of Envoy's ext_authz / ext_proc messages against Envoy's complete definitions
(envoy-data-plane): every field number and kind agrees, and messages cross between the two unchanged."""

from __future__ import annotations

import importlib

import pytest
from envoy_data_plane.envoy.service.auth.v3 import (
    AttributeContext,
    AttributeContextHttpRequest,
    AttributeContextRequest,
)
from envoy_data_plane.envoy.service.auth.v3 import CheckRequest as RefCheckRequest
from envoy_data_plane.envoy.service.auth.v3 import CheckResponse as RefCheckResponse
from envoy_data_plane.envoy.service.ext_proc.v3 import HttpBody
from envoy_data_plane.envoy.service.ext_proc.v3 import ProcessingRequest as RefProcessingRequest
from envoy_data_plane.envoy.service.ext_proc.v3 import ProcessingResponse as RefProcessingResponse
from envoy_data_plane.google.protobuf import Struct

from modelfleet.gateway import protos
from modelfleet.gateway.service import _refuse, _set
from modelfleet.gateway.inspect import Refusal

KINDS = {"string": "string", "bytes": "bytes", "bool": "bool", "int32": "int32", "uint32": "uint32", "enum": "enum"}


def _reference(package: str, name: str):
    module = importlib.import_module("envoy_data_plane." + package)
    return getattr(module, name)


@pytest.mark.parametrize("package, message", [(p, m) for p, ms in protos.SCHEMA.items() for m in ms])
def test_every_field_matches_envoys_definition(package, message):
    reference = _reference(package, message)
    meta = reference._betterproto.meta_by_field_name
    for name, (number, kind, repeated) in protos.SCHEMA[package][message].items():
        assert name in meta, f"{package}.{message} has no field {name}"
        assert meta[name].number == number, f"{package}.{message}.{name}"
        expected = "map" if isinstance(kind, tuple) else KINDS.get(kind, "message")
        assert meta[name].proto_type == expected, f"{package}.{message}.{name}"


def test_envoys_check_request_reads_through_the_view():
    ref = RefCheckRequest(attributes=AttributeContext(
        request=AttributeContextRequest(http=AttributeContextHttpRequest(
            headers={"x-api-key": "k", "host": "h"}, path="/v2/models/m/infer", method="POST")),
        context_extensions={"scope": "infer:m"}))
    view = protos.CheckRequest.FromString(bytes(ref))
    assert dict(view.attributes.request.http.headers) == {"x-api-key": "k", "host": "h"}
    assert view.attributes.request.http.path == "/v2/models/m/infer"
    assert dict(view.attributes.context_extensions) == {"scope": "infer:m"}


def test_the_views_answers_read_as_envoys():
    response = protos.CheckResponse()
    response.status.code = 0
    _set(response.ok_response.headers, "x-modelfleet-tenant", "acme", raw=False)
    response.ok_response.headers_to_remove.append("x-api-key")
    response.dynamic_metadata.update({"tenant": "acme"})
    ref = RefCheckResponse.parse(response.SerializeToString())
    assert ref.ok_response.headers[0].header.key == "x-modelfleet-tenant"
    assert ref.ok_response.headers[0].header.value == "acme"
    assert ref.ok_response.headers[0].append_action.name == "OVERWRITE_IF_EXISTS_OR_ADD"
    assert ref.ok_response.headers_to_remove == ["x-api-key"] and ref.dynamic_metadata.to_dict() == {"tenant": "acme"}
    refused = RefProcessingResponse.parse(_refuse(Refusal(400, "shape_mismatch", "bad"), "m", True)
                                          .SerializeToString())
    assert int(refused.immediate_response.status.code) == 400
    assert refused.immediate_response.grpc_status.status == 3
    assert refused.immediate_response.details == "modelfleet_shape_mismatch"
    assert refused.dynamic_metadata.to_dict() == {"modelfleet": {"decision": "deny", "reason": "shape_mismatch"}}


def test_envoys_processing_request_reads_through_the_view():
    ref = RefProcessingRequest(request_body=HttpBody(body=b"{}", end_of_stream=True),
                               attributes={"envoy.filters.http.ext_proc": Struct.from_dict(
                                   {"request.path": "/v2/models/m/infer"})})
    view = protos.ProcessingRequest.FromString(bytes(ref))
    assert view.HasField("request_body") and view.request_body.body == b"{}"
    assert view.attributes["envoy.filters.http.ext_proc"].fields["request.path"].string_value == "/v2/models/m/infer"
