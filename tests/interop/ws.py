"""A real WebSocket server and client (PyPI `websockets`) for tests/websocket.rs.

    ws.py serve                      echo server on a loopback port; prints the port
    ws.py echo URL TOKEN             large, fragmented and binary messages; the
                                     upgrade request's headers as the server saw them
    ws.py noauth URL                 the upgrade without a token: the HTTP status
    ws.py proto URL TOKEN            the token as a subprotocol (`bearer.TOKEN`, as a
                                     browser must); the headers the server saw
    ws.py held URL TOKEN SECONDS     keeps the connection; when and how it ended

Prints one JSON object (client modes).
"""
import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidStatus


async def echo(ws):
    try:
        async for msg in ws:
            if msg == "__headers__":
                await ws.send(json.dumps({k.lower(): v for k, v in ws.request.headers.raw_items()}))
            else:
                await ws.send(msg)
    except ConnectionClosed:
        pass


async def run_server():
    def select(connection, offered):
        return "chat" if "chat" in offered else None

    async with serve(echo, "127.0.0.1", 0, max_size=None, select_subprotocol=select) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.Future()


async def run_echo(url, token):
    out = {}
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                       max_size=None) as ws:
        await ws.send("__headers__")
        out["headers"] = json.loads(await ws.recv())
        large = "x" * (4 * 1024 * 1024)
        await ws.send(large)
        out["large_ok"] = (await ws.recv()) == large
        parts = ["frag-%d;" % i * 1000 for i in range(20)]
        await ws.send(parts)  # an iterable: one message in 20 frames
        out["fragmented_ok"] = (await ws.recv()) == "".join(parts)
        blob = bytes(range(256)) * 1024
        await ws.send(blob)
        out["binary_ok"] = (await ws.recv()) == blob
    return out


async def run_proto(url, token):
    async with connect(url, subprotocols=[f"bearer.{token}", "chat"]) as ws:
        await ws.send("__headers__")
        return {"headers": json.loads(await ws.recv()), "subprotocol": ws.subprotocol}


async def run_noauth(url):
    try:
        async with connect(url):
            return {"status": 101}
    except InvalidStatus as e:
        return {"status": e.response.status_code,
                "body": e.response.body.decode(errors="replace") if e.response.body else ""}


async def run_held(url, token, seconds):
    started = time.monotonic()
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                       ping_interval=None) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        try:
            await asyncio.wait_for(ws.recv(), timeout=seconds)
            return {"ended": "message"}
        except asyncio.TimeoutError:
            return {"ended": "still_open", "after": time.monotonic() - started}
        except ConnectionClosed as e:
            return {"ended": "closed", "after": time.monotonic() - started,
                    "code": e.rcvd.code if e.rcvd else None,
                    "reason": e.rcvd.reason if e.rcvd else None}


def main():
    mode = sys.argv[1]
    if mode == "serve":
        asyncio.run(run_server())
        return
    if mode == "echo":
        out = asyncio.run(run_echo(sys.argv[2], sys.argv[3]))
    elif mode == "proto":
        out = asyncio.run(run_proto(sys.argv[2], sys.argv[3]))
    elif mode == "noauth":
        out = asyncio.run(run_noauth(sys.argv[2]))
    elif mode == "held":
        out = asyncio.run(run_held(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
