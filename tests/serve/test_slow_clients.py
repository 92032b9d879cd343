"""Idle and slow clients do not hold up the others (issue 23 item 9): the server runs on one event loop (uvicorn),
where a silent connection or one that trickles its request costs a socket, not a worker."""

from __future__ import annotations

import socket
import threading
import time

import httpx


def test_50_idle_connections_and_trickling_clients_do_not_block_other_requests(start_server):
    server = start_server(idle_timeout_s=30.0)
    address = ("127.0.0.1", server.port)
    idle = [socket.create_connection(address, timeout=30) for _ in range(50)]  # connected, never a byte
    trickling = [socket.create_connection(address, timeout=30) for _ in range(10)]
    for sock in trickling:  # half a request, then silence
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
    try:
        answers: list[int] = []
        start = time.monotonic()

        def ask(i: int) -> None:
            reply = httpx.post(f"{server.url}/v1/completions", json={"prompt": f"hi {i}", "max_tokens": 2}, timeout=30)
            answers.append(reply.status_code)

        clients = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(timeout=60)
        elapsed = time.monotonic() - start
        assert answers == [200] * 8
        assert elapsed < 10, elapsed  # they waited for nobody
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    finally:
        for sock in idle + trickling:
            sock.close()
