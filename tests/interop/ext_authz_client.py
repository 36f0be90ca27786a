"""An Envoy ext_authz client with grpcio and Envoy's own generated stubs
(PyPI `xds-protos`, built from envoyproxy/data-plane-api): sends one
CheckRequest per case and prints what came back, as JSON.

    python3 tests/interop/ext_authz_client.py HOST:PORT '[{"method": ..., "path": ...,
        "host": ..., "headers": {...}}, ...]'

Prints {"health": STATUS, "results": [{"code", "message", "ok": {"set",
"remove"} | null, "denied": {"status", "headers", "body"} | null, "error"}]}.
"""
import json
import sys

import grpc
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc

target, cases = sys.argv[1], json.loads(sys.argv[2])
channel = grpc.insecure_channel(target)
stub = external_auth_pb2_grpc.AuthorizationStub(channel)

# grpc.health.v1.Health/Check, encoded by hand (no extra package): a
# HealthCheckRequest with field 1 = the service name; the answer's field 1 is
# the status enum (1 = SERVING).
service = b"envoy.service.auth.v3.Authorization"
health = channel.unary_unary(
    "/grpc.health.v1.Health/Check",
    request_serializer=lambda b: b,
    response_deserializer=lambda b: b,
)
answer = health(b"\x0a" + bytes([len(service)]) + service, timeout=10)
health_status = answer[1] if len(answer) >= 2 and answer[0] == 0x08 else 0

results = []
for case in cases:
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method=case["method"],
        path=case["path"],
        host=case["host"],
        scheme="http",
        protocol="HTTP/1.1",
        headers=case.get("headers", {}),
    )
    request = external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http)
        )
    )
    try:
        resp = stub.Check(request, timeout=10)
    except grpc.RpcError as e:
        results.append({"error": e.code().name, "message": e.details()})
        continue
    out = {"code": resp.status.code, "message": resp.status.message, "ok": None, "denied": None}
    kind = resp.WhichOneof("http_response")
    if kind == "ok_response":
        out["ok"] = {
            "set": {h.header.key: h.header.value for h in resp.ok_response.headers},
            "remove": sorted(resp.ok_response.headers_to_remove),
        }
    elif kind == "denied_response":
        d = resp.denied_response
        out["denied"] = {
            "status": d.status.code,
            "headers": {h.header.key: h.header.value for h in d.headers},
            "body": d.body,
        }
    results.append(out)

print(json.dumps({"health": health_status, "results": results}))
