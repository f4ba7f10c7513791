"""The service's protobuf view of Envoy's ext_proc messages against Envoy's complete definitions
(envoy-data-plane): every field number and kind agrees, and messages cross between the two unchanged."""

from __future__ import annotations

import importlib

import pytest
from envoy_data_plane.envoy.service.ext_proc.v3 import HttpBody
from envoy_data_plane.envoy.service.ext_proc.v3 import ProcessingRequest as RefProcessingRequest
from envoy_data_plane.envoy.service.ext_proc.v3 import ProcessingResponse as RefProcessingResponse
from envoy_data_plane.google.protobuf import Struct

from modelfleet.gateway import protos
from modelfleet.gateway.service import _refuse
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


def test_the_views_answers_read_as_envoys():
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
