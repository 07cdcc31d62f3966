"""What the dispatcher returns: the answer, who gave it, and every attempt on the way."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

ErrorClass = Literal["retry", "failover", "fatal"]
"""The class of a failure: retry (transient, same model later), failover (another key or model
now), fatal (the request itself was refused: stop)."""


class Attempt(BaseModel):
    """One call to one model with one key (or a model skipped without a call: `skipped=True`)."""

    model: str
    key_id: str | None = None  # env var NAME of the key, never the secret
    status: int | None = None
    error_class: ErrorClass | None = None
    reason: str | None = None
    started_at: float  # epoch seconds
    latency_ms: float = 0.0
    skipped: bool = False
    message: str | None = None  # upstream error message (truncated)
    deployment: str | None = None  # the model's deployment that was called (None: its only one)

    def as_json(self) -> dict[str, Any]:
        """`model_dump(mode="json")` without a serialiser run: every field is JSON-native (the tests
        compare the two), and the gateway calls this for every attempt of every request."""
        return dict(self.__dict__)


class DispatchResult(BaseModel):
    """An answer: the OpenAI chat.completion, the policy model (and key id) that gave it, every
    attempt on the way in order, usage and latency. For a stream, `continued_from` names the models
    whose broken answers it continued, and `complete=False` with `error` set marks an answer that
    ended early (it then has no finish_reason)."""

    response: dict  # OpenAI chat.completion; "model" is the upstream model id
    model: str  # the policy's name for the model that answered
    key_id: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    usage: dict | None = None
    latency_ms: float = 0.0
    finish_reason: str | None = None
    continued_from: list[str] = Field(default_factory=list)  # streams continued after a break
    error: dict | None = None  # streams that ended with an in-band error
    complete: bool = True  # False when a stream ended with an in-band error (truncated answer)


class DispatchError(Exception):
    """Every model in the chain failed, or a fatal error stopped the request.

    `error_class` is the class of the last failure: "retry" (transient: rate limit, overload, or
    every model was skipped while cooling down or with its breaker open; the same request may
    succeed later, after `retry_after` seconds when known), "failover" (the last model failed
    for good: server error, timeout, credentials, context window; or the deadline passed),
    "fatal" (a model refused the request itself, e.g. invalid or content-filtered: no other
    model was tried). It carries `reason`, the last upstream `status` and decoded `body`, the
    `model` that failed last, the upstream `message`, and every attempt in order.
    """

    def __init__(self, error_class: ErrorClass, reason: str, *, status: int | None = None,
                 body: Any = None, attempts: list[Attempt] | None = None,
                 retry_after: float | None = None, message: str | None = None,
                 model: str | None = None) -> None:
        self.error_class = error_class
        self.reason = reason
        self.status = status
        self.body = body
        self.attempts = attempts or []
        self.retry_after = retry_after
        self.message = message
        self.model = model
        super().__init__(f"{error_class}: {reason}" + (f" ({message})" if message else ""))
