"""`tao-engine serve --model DIR [...]`: run the OpenAI-compatible server until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

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


def run_serve(args: argparse.Namespace) -> int:
    from tao_engine.engine import EngineConfig
    from tao_engine.serve import InferenceServer, ServeConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServeConfig(
        host=args.host, port=args.port, api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        served_model_name=args.served_model_name, max_tokens_cap=args.max_tokens_cap,
        max_request_bytes=args.max_request_bytes, enable_reload_endpoint=args.enable_reload,
    )
    engine_config = EngineConfig(dtype=args.dtype, max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len)
    server = InferenceServer.from_model_dir(args.model, config, table_path=args.table, engine_config=engine_config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print(f"serving {server.served_model_name} (model version {server.model_version}) at {server.url}/v1; "
          f"logging to {args.table}", file=sys.stderr, flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0
