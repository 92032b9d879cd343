"""`tao-engine serve --model DIR [...]`: run the OpenAI-compatible server until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from tao_engine.output_paths import check_output_file

API_KEY_ENV = "TAO_ENGINE_API_KEY"


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="HF-layout model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="0 = any free port (printed at start)")
    p.add_argument("--api-key", default=None, help=f"require `Authorization: Bearer KEY` (default: ${API_KEY_ENV})")
    p.add_argument("--table", default="infer.sqlite", help="SQLite inference table, created if missing")
    p.add_argument("--served-model-name", default=None, help="the `model` clients name (default: the dir's name)")
    p.add_argument("--max-num-seqs", type=int, default=64, help="sequences batched at once")
    p.add_argument("--max-model-len", type=int, default=None, help="prompt + output cap (default: the model's)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--max-tokens-cap", type=int, default=4096, help="largest max_tokens a request may ask for")
    p.add_argument("--max-request-bytes", type=int, default=1 << 20)
    p.add_argument("--enable-reload", action="store_true", help="accept POST /admin/reload {\"model\": DIR}")


def check_port_free(host: str, port: int) -> None:
    """ValueError naming the address when it cannot be bound (in use, not this machine's, not permitted)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"--host {host}: not an address this machine can listen on ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            raise ValueError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}); choose another "
                             "--port (0 picks a free one) or stop what uses it") from None


def run_serve(args: argparse.Namespace) -> int:
    from tao_engine.engine import EngineConfig
    from tao_engine.engine.prompts import has_chat_template
    from tao_engine.serve import InferenceServer, ServeConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServeConfig(
        host=args.host, port=args.port, api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        served_model_name=args.served_model_name, max_tokens_cap=args.max_tokens_cap,
        max_request_bytes=args.max_request_bytes, enable_reload_endpoint=args.enable_reload,
    )
    engine_config = EngineConfig(dtype=args.dtype, max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len)
    # Everything that can be checked is checked before the model loads and before the table is created or migrated.
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"serve needs {' and '.join(missing)}: pip install 'tao-engine[serve]'")
    check_port_free(config.host, config.port)
    check_output_file(args.table, "--table")
    if not Path(args.model).is_dir():
        raise FileNotFoundError(f"--model {args.model}: no such directory (give an HF-layout model directory)")
    server = InferenceServer.from_model_dir(args.model, config, table_path=args.table, engine_config=engine_config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server.start()
    except BaseException:
        server.stop(drain_timeout_s=0.0)  # the port was taken meanwhile: close the table, stop the engine loop
        raise
    print(f"serving {server.served_model_name} (model version {server.model_version}) at {server.url}/v1; "
          f"logging to {args.table}", file=sys.stderr, flush=True)
    # OpenAI's meaning, whatever a tune's [data] chat_template says: a round from the table trains prompts as served.
    chats = ("rendered by the model's chat template" if has_chat_template(server.tokenizer)
             else "refused (the model has no chat template)")
    print(f"/v1/chat/completions: messages {chats}; /v1/completions: the prompt is sent as raw text",
          file=sys.stderr, flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0
