"""A gRPC call through claimgate with grpcio (h2c, prior knowledge), for
tests/grpc.rs: prints the status code name and details the client reports.

    grpc_call.py ADDR METHOD [TOKEN]
"""
import json
import sys

import grpc


def main():
    addr, method = sys.argv[1], sys.argv[2]
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
