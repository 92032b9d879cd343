"""Ask a running `tao-engine serve` to load new weights: POST <url>/admin/reload {"model": DIR} (standard library
HTTP; the server needs `--enable-reload`, and its API key when it has one)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path


class ReloadError(RuntimeError):
    """The server did not load the new model (unreachable, refused, or the checkpoint did not fit)."""


def request_reload(base_url: str, model_dir: str | Path, api_key: str | None = None, timeout_s: float = 600.0) -> int:
    """Returns the model version the server assigned to `model_dir` (later table rows carry it)."""
    url = base_url.rstrip("/") + "/admin/reload"
    body = json.dumps({"model": str(model_dir)}).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = _error_message(exc)
        hint = " (start the server with --enable-reload)" if exc.code == 404 else ""
        raise ReloadError(f"POST {url} answered {exc.code}: {detail}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ReloadError(f"POST {url} failed: {exc}; is `tao-engine serve` running there?") from None
    version = answer.get("model_version") if isinstance(answer, dict) else None
    if isinstance(version, bool) or not isinstance(version, int):
        raise ReloadError(f"POST {url}: expected {{'model_version': int}} in the answer, got {answer!r}")
    return version


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return exc.reason if isinstance(exc.reason, str) else str(exc)
