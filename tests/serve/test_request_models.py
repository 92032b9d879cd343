"""The request models are generated from the one table of OpenAI parameters (issue 23 item 9): each endpoint's
model has exactly its parameters, the OpenAPI schema the server publishes carries them, and importing the inference
table (what a tuning round reads) needs neither FastAPI nor pydantic."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tao_engine.serve.request_models import (
    CHAT,
    COMPLETION,
    PARAMETERS,
    ChatCompletionRequest,
    CompletionRequest,
)


def test_each_endpoint_model_has_exactly_its_parameters():
    for model, endpoint in ((ChatCompletionRequest, CHAT), (CompletionRequest, COMPLETION)):
        assert set(model.model_fields) == {name for name, p in PARAMETERS.items() if endpoint in p.endpoints}
    assert "messages" in ChatCompletionRequest.model_fields and "prompt" not in ChatCompletionRequest.model_fields
    assert ChatCompletionRequest.model_config["extra"] == "forbid"


def test_the_openapi_schema_publishes_the_request_bodies(start_server):
    server = start_server(table=False)
    schema = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    chat = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"messages", "temperature", "stream_options", "max_completion_tokens"} <= set(chat["properties"])
    assert chat["additionalProperties"] is False


def test_the_inference_table_imports_without_the_serve_extra():
    code = ("import sys; import tao_engine.serve, tao_engine.flywheel.rounds; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'pydantic', 'starlette') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
