"""OpenAI-style errors: every failure the API reports is an `APIError`, rendered as
`{"error": {"message", "type", "param", "code"}}` with the matching HTTP status."""

from __future__ import annotations

import re
from typing import Any

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
NOT_FOUND = "not_found_error"
SERVER_ERROR = "server_error"
OVERLOADED = "overloaded_error"

# SamplingParams names a field as "SamplingParams.<field>"; the API reports the request parameter instead.
_FIELD_IN_MESSAGE = re.compile(r"SamplingParams\.(\w+)")


class APIError(Exception):
    """An error the HTTP layer sends as it is: status code plus the OpenAI error object."""

    def __init__(
        self, status: int, message: str, type: str = INVALID_REQUEST, param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, INVALID_REQUEST, param, code)


def from_sampling_error(exc: Exception, renamed: dict[str, str] | None = None) -> APIError:
    """A SamplingParams validation error -> 400 naming the request parameter (e.g. `temperature`)."""
    text = str(exc)
    match = _FIELD_IN_MESSAGE.search(text)
    field = match.group(1) if match else None
    param = (renamed or {}).get(field, field) if field else None
    if field is not None and param is not None:
        text = text.replace(f"SamplingParams.{field}", param)
    return bad_request(text, param=param, code="invalid_value")
