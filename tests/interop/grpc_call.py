"""gRPC calls through claimgate with grpcio (h2c, prior knowledge), for
tests/grpc.rs.

    grpc_call.py ADDR METHOD [TOKEN]   one unary call: the status code name
                                       and details the client reports
    grpc_call.py ADDR all TOKEN        unary (with its trailing metadata),
                                       server-streaming and bidi calls
"""
import json
import sys

import grpc


def all_calls(addr, token):
    md = [("authorization", f"Bearer {token}")]
    ident = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)
    out = {}
    with grpc.insecure_channel(addr) as channel:
        reply, call = channel.unary_unary("/echo.Echo/Say", **ident).with_call(
            b"hello", metadata=md, timeout=10)
        out["unary"] = reply.decode()
        out["trailers"] = {k: v for k, v in call.trailing_metadata()}
        out["stream"] = [m.hex() for m in channel.unary_stream("/echo.Echo/Many", **ident)(
            b"\x10", metadata=md, timeout=10)]
        out["bidi"] = [m.decode() for m in channel.stream_stream("/echo.Echo/Chat", **ident)(
            iter([b"abc", b"def", b"ghi"]), metadata=md, timeout=10)]
    return out


def main():
    addr, method = sys.argv[1], sys.argv[2]
    if method == "all":
        print(json.dumps(all_calls(addr, sys.argv[3])), flush=True)
        return
    metadata = [("authorization", f"Bearer {sys.argv[3]}")] if len(sys.argv) > 3 else []
    with grpc.insecure_channel(addr) as channel:
        call = channel.unary_unary(method, request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        try:
            call(b"\x0a\x02hi", metadata=metadata, timeout=10)
            out = {"code": "OK"}
        except grpc.RpcError as e:
            out = {"code": e.code().name, "details": e.details()}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
