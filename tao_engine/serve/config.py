"""`ServeConfig`: how `tao-engine serve` listens, authenticates and bounds requests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tao_engine.config_checks import check_positive_ints
from tao_engine.config_dict import dataclass_from_dict


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # loopback by default: exposing the API is an explicit choice
    port: int = 8000  # 0 = any free port (see InferenceServer.port)
    api_key: str | None = None  # when set, every /v1 call needs `Authorization: Bearer <api_key>`
    served_model_name: str | None = None  # the `model` clients name; default: the model directory's name
    max_request_bytes: int = 1 << 20  # larger bodies get 413 before they are read
    max_tokens_cap: int = 4096  # max_tokens above this is refused; the default when a chat request gives none
    completion_default_max_tokens: int = 16  # /v1/completions without max_tokens, as OpenAI's legacy API
    max_n: int = 16  # choices per request
    max_queued_requests: int = 1024  # requests admitted but unfinished; beyond this new ones get 503
    enable_reload_endpoint: bool = False  # POST /admin/reload {"model": DIR} swaps weights in (needs the API key)
    disconnect_poll_s: float = 0.05  # how often a waiting handler checks that its client is still there
    idle_timeout_s: float = 60.0  # an idle keep-alive connection is closed after this

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"ServeConfig.host must be a non-empty string, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"ServeConfig.port must be an int in [0, 65535] (0 = any free port), got {self.port!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key.strip()):
            raise ValueError("ServeConfig.api_key must be a non-empty string or None (no authentication)")
        check_positive_ints(self, ("max_request_bytes", "max_tokens_cap", "completion_default_max_tokens", "max_n",
                                   "max_queued_requests"))
        if self.completion_default_max_tokens > self.max_tokens_cap:
            raise ValueError(
                f"ServeConfig.completion_default_max_tokens={self.completion_default_max_tokens} is above "
                f"max_tokens_cap={self.max_tokens_cap}; lower it or raise the cap"
            )
        for name in ("disconnect_poll_s", "idle_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"ServeConfig.{name} must be a number > 0, got {value!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServeConfig:
        return dataclass_from_dict(cls, d)
