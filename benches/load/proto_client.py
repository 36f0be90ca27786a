"""The client side of benches/protocols.sh: for SECONDS, sequential round
trips from THREADS threads, and the count.

    proto_client.py grpc ADDR TOKEN SECONDS THREADS   unary echo.Echo/Say calls
    proto_client.py ws URL TOKEN SECONDS THREADS      1 KiB WebSocket echoes

Prints: <round trips> <seconds> <mean latency µs>
"""
import asyncio
import sys
import threading
import time


def grpc_load(addr, token, seconds, threads):
    import grpc
    md = [("authorization", f"Bearer {token}")] if token != "-" else []
    counts, lat = [0] * threads, [0.0] * threads

    def worker(i):
        with grpc.insecure_channel(addr) as ch:
            say = ch.unary_unary("/echo.Echo/Say", request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)
            say(b"warm", metadata=md)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t = time.monotonic()
                say(b"x" * 64, metadata=md)
                lat[i] += time.monotonic() - t
                counts[i] += 1

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts), sum(lat)


async def ws_one(url, token, seconds):
    from websockets.asyncio.client import connect
    headers = {"Authorization": f"Bearer {token}"} if token != "-" else {}
    n, lat = 0, 0.0
    msg = "m" * 1024
    async with connect(url, additional_headers=headers) as ws:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.monotonic()
            await ws.send(msg)
            await ws.recv()
            lat += time.monotonic() - t
            n += 1
    return n, lat


async def ws_load(url, token, seconds, threads):
    res = await asyncio.gather(*[ws_one(url, token, seconds) for _ in range(threads)])
    return sum(r[0] for r in res), sum(r[1] for r in res)


def main():
    kind, target, token = sys.argv[1], sys.argv[2], sys.argv[3]
    seconds, threads = float(sys.argv[4]), int(sys.argv[5])
    if kind == "grpc":
        n, lat = grpc_load(target, token, seconds, threads)
    else:
        n, lat = asyncio.run(ws_load(target, token, seconds, threads))
    print(n, seconds, round(lat / max(n, 1) * 1e6, 1))


if __name__ == "__main__":
    main()
