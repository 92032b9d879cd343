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

from tao_engine.cli_flags import DataclassFlags
from tao_engine.engine.config import EngineConfig
from tao_engine.output_paths import check_output_file
from tao_engine.serve.config import ServeConfig

API_KEY_ENV = "TAO_ENGINE_API_KEY"
SERVE = DataclassFlags(ServeConfig, ("host", "port", "api_key", "served_model_name", "max_tokens_cap",
                                     "max_request_bytes", "enable_reload_endpoint"),
                       names={"enable_reload_endpoint": "--enable-reload"})
ENGINE = DataclassFlags(EngineConfig, ("max_num_seqs", "max_model_len", "dtype"))


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="HF-layout model directory")
    p.add_argument("--table", default="infer.sqlite", help="SQLite inference table, created if missing")
    SERVE.add_to(p)
    ENGINE.add_to(p)
    p.epilog = f"--api-key not given: ${API_KEY_ENV} when set"


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
    from tao_engine.engine.prompts import has_chat_template
    from tao_engine.serve import InferenceServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = SERVE.build(args, api_key=args.api_key or os.environ.get(API_KEY_ENV) or None)
    engine_config = ENGINE.build(args)
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
