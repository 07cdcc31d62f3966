"""The ASGI entry of the service: the two hot endpoints skip FastAPI's stack.

`POST /v1/evaluate` and `POST /v1/chat/completions` are served straight from the ASGI
call: no middleware chain (server errors, exception handlers, async exit stack, body
limit, telemetry), no route matching over every registered route, no dependency solving.
Measured with benchmarks/api_bench.py (benchmarks/service.md, "Second pass"): this, with two
smaller changes, took evaluate from 0.67-0.70 to 0.44 ms of CPU per request on one core.
Everything else (the documented twins of these routes in the OpenAPI schema included) goes
through FastAPI unchanged.

The handlers raise the same errors as everywhere else and get the same bodies (through
`policyengine.api.errors.to_response`); an unexpected exception becomes a 500 with an
OpenAI-shaped body and a logged traceback, as Starlette's `ServerErrorMiddleware` would give.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from policyengine.api.errors import internal_error, to_response
from policyengine.errors import PolicyEngineError

log = logging.getLogger("policyengine.api")

Handler = Callable[[Request], Awaitable[Response]]


class PolicyEngineApp(FastAPI):
    """FastAPI, plus a dictionary of hot POST routes served without the middleware stack."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hot_routes: dict[str, Handler] = {}

    def add_hot_route(self, path: str, handler: Handler) -> None:
        """Serve POST `path` with `handler`, ahead of FastAPI's routing."""
        self.hot_routes[path] = handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root):]
            handler = self.hot_routes.get(path)
            if handler is not None:
                scope["app"] = self
                await self._serve(handler, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _serve(self, handler: Handler, scope: Any, receive: Any, send: Any) -> None:
        try:
            response = await handler(Request(scope, receive))
        except PolicyEngineError as exc:
            response = to_response(exc)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            response = internal_error()
        # An error while the body is being sent (the client went away, a stream broke) reaches
        # uvicorn, which logs it and closes the connection: there is nothing left to answer.
        await response(scope, receive, send)
