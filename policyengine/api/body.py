"""Reading request bodies: size-limited, JSON objects only, with clear errors."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from policyengine.api.errors import ApiError


def headers(request: Request) -> dict[str, str]:
    """The request's headers as a plain dict (lower-case names), built once per request.

    Starlette's `request.headers.get` scans the raw header list on every call; the hot paths
    read a dozen headers per request.
    """
    h = request.scope.get("pe.headers")
    if h is None:
        h = request.scope["pe.headers"] = {k.decode("latin-1").lower(): v.decode("latin-1")
                                           for k, v in request.scope.get("headers", ())}
    return h


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, read with a running size count against
    `max_body_bytes`. Raises `ApiError` 413 (too large), 415 (not JSON), 400 (empty, invalid
    JSON, not an object)."""
    hdrs = headers(request)
    ctype = hdrs.get("content-type", "")
    if ctype and "json" not in ctype:
        raise ApiError(415, f"Content-Type must be application/json, got {ctype!r}", code="unsupported_media_type")
    limit = request.app.state.runtime.settings.max_body_bytes
    declared = hdrs.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit}", code="body_too_large")
    # read with a running count: a body sent without Content-Length (chunked) is refused as soon as
    # it passes the limit, not after all of it has been buffered
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes", code="body_too_large")
        parts.append(part)
    raw = b"".join(parts)
    if not raw.strip():
        raise ApiError(400, "request body is empty: send a JSON object", code="empty_body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json")
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}", code="invalid_body")
    return data
