"""Error bodies. The gateway speaks OpenAI's shape everywhere:

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

so the OpenAI SDKs raise a typed error with a readable message. Errors carry
`x-should-retry: false` when retrying cannot help (the SDKs honour it), because
the gateway already retried and failed over upstream.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from policyengine.api.auth import AuthError

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
          415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
          502: "upstream_error", 503: "service_unavailable", 504: "timeout_error"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 type: str | None = None, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, retry: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.type = type or _TYPES.get(status, "api_error")
        self.extra = extra or {}
        self.headers = dict(headers or {})
        if not retry:
            self.headers.setdefault("x-should-retry", "false")

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param,
                               "code": self.code}
        err.update(self.extra)
        return {"error": err}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, default=str), status_code=status, headers=headers,
                    media_type="application/json")


def error_response(err: ApiError) -> Response:
    return json_response(err.body(), err.status, err.headers)


def auth_error_response(exc: AuthError) -> Response:
    headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
    return error_response(ApiError(exc.status, exc.message, code=exc.code, headers=headers))


def _loc(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    msgs = [f"{_loc(e.get('loc', ()))}: {e.get('msg')}" for e in errors[:5]]
    first = _loc(errors[0].get("loc", ())) if errors else None
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(msgs) + more, first


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError) -> Response:
        return auth_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        msg, param = validation_message(list(exc.errors()))
        return error_response(ApiError(422, f"invalid request: {msg}", code="invalid_request", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return error_response(ApiError(exc.status_code, str(exc.detail), code="http_error",
                                       headers=getattr(exc, "headers", None)))
