"""A real gRPC server (grpcio, generic handlers: no generated code) for
tests/grpc.rs: echo.Echo/Say (unary), /Many (server streaming, 3 replies),
/Chat (bidirectional). Say returns, in its trailing metadata, `x-trailer` and
the x-user-id and te headers it received.

    grpc_echo.py                     h2c on a loopback port
    grpc_echo.py CERT KEY [CLIENT_CA]  TLS (and mTLS when CLIENT_CA is given)

Prints the port.
"""
import sys
import time
from concurrent import futures

import grpc


def say(request, context):
    got = dict(context.invocation_metadata())
    context.set_trailing_metadata((
        ("x-trailer", "kept"),
        ("seen-user", got.get("x-user-id", "")),
        ("seen-auth", "yes" if "authorization" in got else "no"),
    ))
    return request


def many(request, context):
    for i in range(3):
        yield request + bytes([i])


def chat(requests, context):
    for r in requests:
        yield r[::-1]


def main():
    handler = grpc.method_handlers_generic_handler("echo.Echo", {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Many": grpc.unary_stream_rpc_method_handler(many),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    if len(sys.argv) >= 3:
        cert = open(sys.argv[1], "rb").read()
        key = open(sys.argv[2], "rb").read()
        client_ca = open(sys.argv[3], "rb").read() if len(sys.argv) > 3 else None
        creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                            require_client_auth=client_ca is not None)
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
