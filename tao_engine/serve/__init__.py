"""Serve a model over an OpenAI-compatible HTTP API and log every request to the inference table (a tuning round's
data). Standard library HTTP only; see server.py for the pieces and inference_table.py for the table's schema."""

from tao_engine.serve.config import ServeConfig
from tao_engine.serve.inference_table import InferenceRecord, InferenceRow, InferenceTable, UnusedPrompt
from tao_engine.serve.prompt_hash import prompt_hash
from tao_engine.serve.server import InferenceServer
from tao_engine.serve.table_writer import TableWriter

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
