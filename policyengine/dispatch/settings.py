"""ChainDispatcher configuration: every field has a production default and can be set from the
environment as `POLICYENGINE_DISPATCH_<FIELD>` (nested: `POLICYENGINE_DISPATCH_BREAKER__THRESHOLD=5`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from policyengine.state import BreakerConfig


class DispatchSettings(BaseSettings):
    """How a ChainDispatcher retries, fails over, cools down and times out. Unknown fields are
    refused; values are range-checked and `backoff_cap >= backoff_base`."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix="POLICYENGINE_DISPATCH_",
                                      env_nested_delimiter="__", env_ignore_empty=True)

    # retry (same model): bounded attempts, exponential backoff with full jitter
    max_attempts: int = Field(3, ge=1, le=20, description="tries per model/key for retry-class errors")
    backoff_base: float = Field(0.25, gt=0, description="first backoff ceiling, seconds")
    backoff_cap: float = Field(8.0, gt=0, description="largest backoff ceiling, seconds")
    max_retry_wait: float = Field(
        10.0, ge=0, description="a Retry-After longer than this cools the model/key down and moves on instead of waiting")
    # cooldowns
    cooldown_default: float = Field(10.0, ge=0, description="cooldown after retries run out and no Retry-After was given")
    auth_cooldown: float = Field(300.0, ge=0, description="a key rejected as invalid/expired is skipped this long")
    quota_cooldown: float = Field(900.0, ge=0, description="a key whose quota/credit ran out is skipped this long")
    # circuit breaker (per model)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    # time budgets (seconds); a ModelSpec's own Timeouts win over these
    deadline: float = Field(120.0, gt=0, description="total budget for one request across all attempts "
                            "(for a stream: until its first token)")
    stream_deadline: float = Field(900.0, gt=0, description="total budget for a streamed answer, once it has started")
    connect_timeout: float = Field(3.0, gt=0)
    first_token_timeout: float = Field(30.0, gt=0, description="streaming: until the first content token")
    idle_timeout: float = Field(15.0, gt=0, description="streaming: largest gap between chunks")
    attempt_timeout: float = Field(90.0, gt=0, description="one attempt, end to end")
    done_grace: float = Field(0.5, gt=0, description="after finish_reason, how long to wait for usage/[DONE]")
    # streaming
    stream_include_usage: bool = Field(True, description="ask servers for a final usage chunk (stream_options.include_usage)")
    continue_broken_streams: bool = Field(True, description="continue a broken stream on a prefill-capable model")
    continue_without_prefill: bool = Field(
        True, description="when no model can continue from an assistant prefill, ask one in a follow-up turn to "
        "write the rest, and check that it continues the text before streaming it (see dispatch/splice.py)")
    # deployments: draining and active health checks (see dispatch/health.py)
    drain_cooldown: float = Field(30.0, ge=0, description="a deployment whose connection went away is skipped this long")
    health_interval: float | None = Field(None, gt=0, description="seconds between active health checks of every "
                                          "deployment (None: no active checks)")
    health_timeout: float = Field(2.0, gt=0, description="one health check's time limit")
    # stickiness
    sticky_ttl: float = Field(3600.0, gt=0)
    # context-window estimate when the caller gives no prompt_tokens: ceil(chars / chars_per_token)
    chars_per_token: float = Field(4.0, gt=0)
    # upstream HTTP client (see adapters/http.py and benchmarks/dispatch.md): "native" = the lean
    # HTTP/1.1 client of adapters/h1.py for OpenAI-compatible servers (others on aiohttp);
    # "aiohttp" = aiohttp for all; "httpx" = httpx's stock transport
    transport: Literal["native", "aiohttp", "httpx"] = Field(
        "native", description="upstream HTTP client: native (adapters/h1.py), aiohttp or httpx")
    max_connections: int = Field(512, ge=1)
    classifier_rules_file: Path | None = Field(None, description="YAML/JSON with extra ClassifierRule entries")

    @model_validator(mode="after")
    def _check(self) -> DispatchSettings:
        if self.backoff_cap < self.backoff_base:
            raise ValueError("backoff_cap must be >= backoff_base")
        return self
