"""Serve a model over an OpenAI-compatible HTTP API and log every request to the inference table (a tuning round's
data). The HTTP layer is FastAPI on uvicorn, the `serve` extra (`pip install 'tao-engine[serve]'`), imported only
when a server starts; see server.py for the pieces and inference_table.py for the table's schema."""

from typing import Any

from tao_engine.serve.config import ServeConfig
from tao_engine.serve.inference_table import InferenceRecord, InferenceRow, InferenceTable, UnusedPrompt
from tao_engine.serve.prompt_hash import prompt_hash
from tao_engine.serve.table_writer import TableWriter


def __getattr__(name: str) -> Any:
    # The server needs the serve extra (pydantic for the request models); the table and its prompts do not, so that
    # a tuning round reads the inference table without it.
    if name == "InferenceServer":
        from tao_engine.serve.server import InferenceServer

        return InferenceServer
    raise AttributeError(f"module 'tao_engine.serve' has no attribute {name!r}")


__all__ = [
    "InferenceRecord",
    "InferenceRow",
    "InferenceServer",
    "InferenceTable",
    "ServeConfig",
    "TableWriter",
    "UnusedPrompt",
    "prompt_hash",
]
