"""Seeded random malformed HTTP requests for the server: odd bodies (random bytes, bad UTF-8, truncated or deep or
huge JSON, wrong top-level types), valid requests with one field broken (wrong type, out of range, huge, NaN,
nested), and broken framing (missing, negative, lying or non-numeric Content-Length, chunked bodies). Each request
is sent over its own connection with `Connection: close`, and the status code read back."""

from __future__ import annotations

import json
import random
import socket
from typing import Any

PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/feedback")
ODD_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**63, -(2**63), 10**30, 1.5, -0.0, 1e308, "", "x", "\u0000", "\ud83d\ude00" * 50,
    "a" * 5000, [], [1], [None], ["a", 1], {}, {"a": 1}, [[[[]]]], {"type": "text"},
)
RAW_ODD = (b"NaN", b"Infinity", b"-Infinity", b"1e999999", b"-1e999999", b"123456789" * 40, b'"\\ud800"',
           b'"\\u0000"', b"null", b"true")


def base_body(path: str, rng: random.Random) -> dict[str, Any]:
    if path == "/v1/chat/completions":
        return {"messages": [{"role": "user", "content": "hi"}], "max_tokens": rng.randint(1, 4)}
    if path == "/v1/completions":
        return {"prompt": rng.choice(["hi", [5, 6, 7]]), "max_tokens": rng.randint(1, 4)}
    return {"id": rng.choice(["chatcmpl-x", 1, 10**20]), "feedback": {"score": 1}}


def _mutated_json(path: str, rng: random.Random) -> bytes:
    body = base_body(path, rng)
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        keys = list(body) + ["n", "temperature", "top_p", "stop", "seed", "stream", "stream_options", "logprobs",
                             "top_k", "min_p", "model", "user", "logit_bias", "tools", "unknown_" + str(rng.random())]
        key = rng.choice(keys)
        if kind < 0.5:
            body[key] = rng.choice(ODD_VALUES)
        elif kind < 0.65:
            body.pop(key, None)
        elif kind < 0.8 and path == "/v1/chat/completions":
            body["messages"] = [rng.choice([{"role": rng.choice(["user", "tool", "", None, 5]), "content":
                                             rng.choice(ODD_VALUES)}, rng.choice(ODD_VALUES)])
                                for _ in range(rng.randint(0, 3))]
        elif kind < 0.9 and path == "/v1/completions":
            body["prompt"] = rng.choice([[rng.randint(-5, 10**9) for _ in range(rng.randint(0, 5))],
                                         [True, 1], [[1, 2]], ["a", "b"], [-1], [2**70]])
        else:
            text = json.dumps(body)
            raw = rng.choice(RAW_ODD).decode()
            return (text[:-1] + f', "{key}": {raw}}}').encode()  # a literal JSON parsers disagree on
    return json.dumps(body).encode()


def _odd_body(rng: random.Random) -> bytes:
    choice = rng.randrange(9)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 2000)))
    if choice == 1:
        depth = rng.choice([100, 2000, 100_000])
        return b"[" * depth + b"]" * depth
    if choice == 2:
        depth = rng.choice([1000, 50_000])
        return b'{"messages": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
    if choice == 3:
        return rng.choice([b"[]", b"1", b'"s"', b"null", b"true", b"[1, 2]", b"{}"])
    if choice == 4:
        return b'{"messages": [{"role": "user", "content": "hi"}]'[: rng.randint(0, 45)]  # truncated
    if choice == 5:
        return b'{"prompt": "\xff\xfe\xfd"}'  # not UTF-8
    if choice == 6:
        return b'{"prompt": "' + b"x" * rng.choice([10_000, 900_000]) + b'", "max_tokens": 1}'
    if choice == 7:
        return b'{"prompt": "hi", "prompt": [1], "max_tokens": 1, "max_tokens": -1}'  # duplicated keys
    return b'{"prompt": [' + b",".join(b"7" for _ in range(rng.choice([300, 20_000]))) + b'], "max_tokens": 1}'


def random_request(rng: random.Random) -> bytes:
    """One raw HTTP/1.1 request."""
    path = rng.choice(PATHS)
    body = _mutated_json(path, rng) if rng.random() < 0.55 else _odd_body(rng)
    framing = rng.random()
    headers = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
               f"Content-Type: {rng.choice(['application/json', 'text/plain', 'x' * 300])}"]
    if framing < 0.8:
        headers.append(f"Content-Length: {len(body)}")
    elif framing < 0.84:
        pass  # no Content-Length
    elif framing < 0.88:
        headers.append(f"Content-Length: {rng.choice(['-1', '-100', 'abc', '1e3', '', ' 5', '99999999999999999999'])}")
        headers.append("X-Fuzz-Half-Close: 1")  # " 5" may promise more than the body holds
    elif framing < 0.92:
        headers.append(f"Content-Length: {len(body) + rng.randint(1, 100)}")  # longer than what comes
        headers.append("X-Fuzz-Half-Close: 1")
    elif framing < 0.96:
        headers.append("Transfer-Encoding: chunked")
        body = b"%X\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        headers.append(f"Content-Length: {len(body)}")
        headers.append(f"Content-Length: {len(body) + 1}")  # two, disagreeing
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def send(port: int, request: bytes, timeout: float = 30.0) -> int:
    """Send `request` on a fresh connection and return the response's status code (0 when the server closed without
    answering). A request whose Content-Length promises more than it holds closes its sending side, so the server
    meets the end of the body instead of waiting for the rest (a client that half-closes otherwise counts as gone)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
            if b"X-Fuzz-Half-Close: 1" in request.split(b"\r\n\r\n", 1)[0]:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered (413) and closed while the body was still going out
            pass
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    if not data.startswith(b"HTTP/1."):
        return 0
    return int(data.split(b" ", 2)[1])
