"""Errors as HTTP responses: the one place a `PolicyEngineError` becomes a status and a body.

The gateway speaks OpenAI's error shape everywhere:

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

so the OpenAI SDKs raise a typed error with a readable message. Errors carry
`x-should-retry: false` when retrying cannot help (the SDKs honour it), because the gateway
already retried and failed over upstream. An error raised after a decision was made carries
the decision's `X-PolicyEngine-*` headers and its `decision_id` in the body.

`ApiError` and `AuthError` are the HTTP layer's own errors (a body that is not JSON, a
missing key); every other error comes from the engine and is mapped by `to_response`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from policyengine.approvals.errors import ApprovalError
from policyengine.dispatch.explain import short as short_attempt
from policyengine.errors import PolicyEngineError, describe_validation
from policyengine.gateway.errors import (
    ApprovalRefused,
    ApprovalRequired,
    ApprovalsUnavailable,
    DecisionLogUnavailable,
    EvaluationFailed,
    GatewayError,
    InvalidAction,
    LimitExceeded,
    LimitsUnavailable,
    ModelNotAllowed,
    NoRoute,
    PolicyDenied,
    TenantMismatch,
    UntrustedInput,
    UpstreamFailed,
    VerificationFailed,
)
from policyengine.types import Decision

__all__ = ["ApiError", "AuthError", "install_error_handlers", "json_response", "response_headers", "to_response"]

log = logging.getLogger("policyengine.api")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 409: "conflict_error", 410: "invalid_request_error",
          413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 500: "api_error", 502: "upstream_error", 503: "service_unavailable",
          504: "timeout_error"}

# Engine errors by class: (status, OpenAI error type or None for the status's, retrying may help).
_GATEWAY: dict[type[GatewayError], tuple[int, str | None, bool]] = {
    InvalidAction: (422, None, False),
    TenantMismatch: (403, None, False),
    UntrustedInput: (403, None, False),
    EvaluationFailed: (422, None, False),
    PolicyDenied: (403, None, False),
    ModelNotAllowed: (403, None, False),
    ApprovalRequired: (409, "approval_required", False),
    ApprovalRefused: (403, None, False),
    NoRoute: (503, None, False),
    DecisionLogUnavailable: (503, None, True),
    ApprovalsUnavailable: (503, None, True),
    LimitsUnavailable: (503, "service_unavailable", True),
    VerificationFailed: (500, None, False),
}


class ApiError(PolicyEngineError):
    """An HTTP-level refusal: a status, a message, and the OpenAI error fields.

    `retry=False` (the default) adds `x-should-retry: false`; `extra` entries are merged into
    the error object; `headers` are sent with the response.
    """

    code = "api_error"

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 type: str | None = None, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, retry: bool = False) -> None:
        super().__init__(message, code=code)
        self.status, self.param = status, param
        self.type = type or _TYPES.get(status, "api_error")
        self.extra = extra or {}
        self.headers = dict(headers or {})
        if not retry:
            self.headers.setdefault("x-should-retry", "false")

    def body(self) -> dict[str, Any]:
        """The OpenAI-shaped error body."""
        err: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param,
                               "code": self.code}
        err.update(self.extra)
        return {"error": err}


class AuthError(PolicyEngineError):
    """The caller is not authenticated (401) or lacks the role (403)."""

    code = "unauthorized"

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message, code=code)
        self.status = status


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`body` as an `application/json` response (orjson)."""
    return Response(orjson.dumps(body, default=str), status_code=status, headers=headers,
                    media_type="application/json")


def attempts_header(atts: list[dict[str, Any]]) -> str:
    """`model[@deployment][#KEY_ENV]:status:outcome[:reason]` per attempt, e.g.
    `qwen-72b#QWEN_KEY_1:429:retry:rate_limited, kimi-large:-:failover:timeout,
    gemma-9b:skipped:cooldown:rate_limited, gemma-27b:200:ok` (see `policyengine.dispatch.explain`)."""
    return ", ".join(short_attempt(a) for a in atts)


def response_headers(decision_id: str, decision: Decision, model: str | None, atts: list[dict[str, Any]],
                     tags: list[str] | None = None) -> dict[str, str]:
    """The `X-PolicyEngine-*` headers of a response (or error) that carries a decision."""
    h = {"X-PolicyEngine-Decision-Id": decision_id, "X-PolicyEngine-Effect": decision.effect,
         "X-PolicyEngine-Policy-Hash": decision.policy_hash,
         "X-PolicyEngine-Attempts": attempts_header(atts), "X-PolicyEngine-Attempt-Count": str(len(atts))}
    if model:
        h["X-PolicyEngine-Model"] = model
    if tags:
        h["X-PolicyEngine-Tags"] = ",".join(tags)
    return h


def _from_gateway(exc: GatewayError) -> ApiError:
    extra: dict[str, Any] = {}
    if exc.decision_id is not None:
        extra["decision_id"] = exc.decision_id
    headers: dict[str, str] = {}
    if exc.decision is not None and exc.decision_id is not None:
        headers.update(response_headers(exc.decision_id, exc.decision, None, exc.attempts,
                                        exc.decision.tags if isinstance(exc, ApprovalRequired) else None))
    if isinstance(exc, LimitExceeded):  # OpenAI's shape for a rate limit: 429, type requests/tokens
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        extra.update(exc.extra)
        kind = (exc.extra.get("limit") or {}).get("kind", "requests")
        return ApiError(429, exc.message, code=exc.code, extra=extra, headers=headers,
                        type="insufficient_quota" if kind == "spend" else kind, retry=True)
    if isinstance(exc, UpstreamFailed):
        extra.update(error_class=exc.error_class, reason=exc.reason, attempts=exc.attempts)
        if exc.error_class == "fatal":  # the upstream's own 4xx, unchanged in status and message
            status = exc.status if isinstance(exc.status, int) and 400 <= exc.status < 500 else 400
            extra.update(upstream=exc.upstream, upstream_model=exc.upstream_model)
            return ApiError(status, exc.message, code=exc.code, extra=extra, headers=headers)
        if exc.error_class == "retry":
            if exc.retry_after:
                headers["Retry-After"] = str(max(1, round(exc.retry_after)))
            return ApiError(503, exc.message, code=exc.code, extra=extra, headers=headers,
                            type="service_unavailable")
        return ApiError(502, exc.message, code=exc.code, extra=extra, headers=headers, type="upstream_error")
    status, type_, retry = next((v for cls, v in _GATEWAY.items() if isinstance(exc, cls)), (500, None, False))
    extra.update(exc.extra)
    message = exc.message
    if isinstance(exc, ApprovalsUnavailable):  # the cause is logged where it happened, never sent
        effect = f" ({exc.decision.effect})" if exc.decision is not None else ""
        message = (f"the decision {exc.decision_id} was recorded{effect} but its approval could not be created; "
                   "retry later")
    return ApiError(status, message, code=exc.code, param=exc.param, type=type_, extra=extra,
                    headers=headers, retry=retry)


def to_api_error(exc: PolicyEngineError) -> ApiError:
    """The HTTP form of any engine error (the one mapping)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, AuthError):
        return ApiError(exc.status, exc.message, code=exc.code,
                        headers={"www-authenticate": "Bearer"} if exc.status == 401 else None)
    if isinstance(exc, GatewayError):
        return _from_gateway(exc)
    if isinstance(exc, ApprovalError):
        return ApiError(exc.status_code, exc.message, code=exc.code)
    log.error("unmapped engine error %s: %s", exc.code, exc.message)
    return ApiError(500, exc.message, code=exc.code, retry=True)


def to_response(exc: PolicyEngineError) -> Response:
    """The JSON error response for `exc`."""
    err = to_api_error(exc)
    return json_response(err.body(), err.status, err.headers)


def internal_error() -> Response:
    """The response for an unexpected exception (already logged by the caller): no detail leaks."""
    return to_response(ApiError(500, "internal server error", code="internal_error", retry=True))


def install_error_handlers(app: FastAPI) -> None:
    """Route FastAPI's exceptions (and ours raised in FastAPI routes) through `to_response`."""

    @app.exception_handler(PolicyEngineError)
    async def _engine(_: Request, exc: PolicyEngineError) -> Response:
        return to_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        msg, param = describe_validation(list(exc.errors()))
        return to_response(ApiError(422, f"invalid request: {msg}", code="invalid_request", param=param))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Starlette's last resort answers in plain text; this answers in the OpenAI shape, without
        # the exception's class or message (logged here; Starlette re-raises it for the server log)
        log.error("unhandled error in %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return internal_error()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return to_response(ApiError(exc.status_code, str(exc.detail), code="http_error",
                                    headers=getattr(exc, "headers", None)))
