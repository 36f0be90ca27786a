"""Opens N keep-alive connections to 127.0.0.1:PORT, one request each
(GET /public/1), prints "open" once all are idle, and holds them for
SECONDS. Used by benches/load.sh and benches/memory.sh.

    python3 benches/load/idle.py PORT N SECONDS
"""
import socket
import sys
import time

port, n, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /public/1 HTTP/1.1\r\nHost: bench\r\n\r\n")
    s.recv(4096)
    socks.append(s)
print("open", flush=True)
time.sleep(hold)
