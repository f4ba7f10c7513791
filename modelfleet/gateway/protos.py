"""Envoy's ext_proc service messages, as protobuf (C/upb) classes for exactly the fields the service reads and
writes.

Why a view: envoy-data-plane's pure-Python classes cost about 1.5 ms per service call here (parse + build +
serialize), more than the whole budget; Envoy's generated `_pb2` modules ship in xds-protos, which also installs its
own copies of `google.api` and `opentelemetry` protos over the shared venv's. Protobuf ignores fields a schema does
not declare, so a schema with Envoy's names and field numbers for the fields we use parses Envoy's messages and
writes ones Envoy reads. Every number here is checked against envoy-data-plane's full definitions
(tests/test_gateway_protos.py), and a round trip through those classes proves the wire format.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2

_F = descriptor_pb2.FieldDescriptorProto
SCALARS = {"string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "bool": _F.TYPE_BOOL, "int32": _F.TYPE_INT32,
           "uint32": _F.TYPE_UINT32, "enum": _F.TYPE_INT32}  # enums travel as varints: int32 reads them
STRUCT = ".google.protobuf.Struct"

# package -> message -> field -> (number, type, repeated). A type is a scalar name, a message of the same
# package ("Msg"), a full name (".pkg.Msg"), or ("map", value type).
SCHEMA: dict[str, dict[str, dict[str, tuple]]] = {
    "envoy.config.core.v3": {
        "HeaderValue": {"key": (1, "string", False), "value": (2, "string", False), "raw_value": (3, "bytes", False)},
        "HeaderValueOption": {"header": (1, "HeaderValue", False), "append_action": (3, "enum", False)},
        "HeaderMap": {"headers": (1, "HeaderValue", True)},
    },
    "envoy.type.v3": {"HttpStatus": {"code": (1, "enum", False)}},
    "envoy.service.ext_proc.v3": {
        "ProcessingRequest": {"request_headers": (2, "HttpHeaders", False), "response_headers": (3, "HttpHeaders", False),
                              "request_body": (4, "HttpBody", False), "response_body": (5, "HttpBody", False),
                              "request_trailers": (6, "HttpTrailers", False),
                              "response_trailers": (7, "HttpTrailers", False),
                              "attributes": (9, ("map", STRUCT), False)},
        "HttpHeaders": {"headers": (1, ".envoy.config.core.v3.HeaderMap", False)},
        "HttpTrailers": {},
        "HttpBody": {"body": (1, "bytes", False), "end_of_stream": (2, "bool", False)},
        "ProcessingResponse": {"request_headers": (1, "HeadersResponse", False),
                               "response_headers": (2, "HeadersResponse", False),
                               "request_body": (3, "BodyResponse", False), "response_body": (4, "BodyResponse", False),
                               "request_trailers": (5, "TrailersResponse", False),
                               "response_trailers": (6, "TrailersResponse", False),
                               "immediate_response": (7, "ImmediateResponse", False),
                               "dynamic_metadata": (8, STRUCT, False)},
        "HeadersResponse": {"response": (1, "CommonResponse", False)},
        "BodyResponse": {"response": (1, "CommonResponse", False)},
        "TrailersResponse": {"header_mutation": (1, "HeaderMutation", False)},
        "CommonResponse": {"status": (1, "enum", False), "header_mutation": (2, "HeaderMutation", False),
                           "body_mutation": (3, "BodyMutation", False)},
        "BodyMutation": {"body": (1, "bytes", False)},
        "HeaderMutation": {"set_headers": (1, ".envoy.config.core.v3.HeaderValueOption", True),
                           "remove_headers": (2, "string", True)},
        "ImmediateResponse": {"status": (1, ".envoy.type.v3.HttpStatus", False),
                              "headers": (2, "HeaderMutation", False), "body": (3, "bytes", False),
                              "grpc_status": (4, "GrpcStatus", False), "details": (5, "string", False)},
        "GrpcStatus": {"status": (1, "uint32", False)},
    },
}
OVERWRITE_IF_EXISTS_OR_ADD = 2  # envoy.config.core.v3.HeaderValueOption.HeaderAppendAction


def _field(message: descriptor_pb2.DescriptorProto, package: str, name: str, spec: tuple) -> None:
    number, kind, repeated = spec
    field = message.field.add(name=name, number=number,
                              label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if isinstance(kind, tuple):  # map<string, V>: a repeated nested entry message, as protoc writes it
        entry = message.nested_type.add(name="".join(p.title() for p in name.split("_")) + "Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
        _field(entry, package, "value", (2, kind[1], False))
        field.label, field.type = _F.LABEL_REPEATED, _F.TYPE_MESSAGE
        field.type_name = f".{package}.{message.name}.{entry.name}"
    elif kind in SCALARS:
        field.type = SCALARS[kind]
    else:
        field.type = _F.TYPE_MESSAGE
        field.type_name = kind if kind.startswith(".") else f".{package}.{kind}"


def _build() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    order = ["envoy.type.v3", "envoy.config.core.v3", "envoy.service.ext_proc.v3"]
    classes = {}
    for package in order:
        proto = descriptor_pb2.FileDescriptorProto(name=f"modelfleet_view/{package}.proto", package=package,
                                                   syntax="proto3")
        proto.dependency.append("google/protobuf/struct.proto")
        proto.dependency.extend(f"modelfleet_view/{p}.proto" for p in order[:order.index(package)])
        for name, fields in SCHEMA[package].items():
            message = proto.message_type.add(name=name)
            for field_name, spec in fields.items():
                _field(message, package, field_name, spec)
        pool.Add(proto)
        for name in SCHEMA[package]:
            classes[name] = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
    return classes


_CLASSES = _build()
ProcessingRequest = _CLASSES["ProcessingRequest"]
ProcessingResponse = _CLASSES["ProcessingResponse"]
HeaderValueOption = _CLASSES["HeaderValueOption"]
