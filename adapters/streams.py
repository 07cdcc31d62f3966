"""Machinery shared by the translating adapters (Bedrock, Vertex generateContent):
the base of their chunk streams, the request/response plumbing around httpx, and
the adapter shell that holds lazily loaded credentials behind a lock."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from .base import CallOptions, TransportError, UpstreamError, unforeseen
from .http import map_transport_error


@contextmanager
def stream_errors() -> Iterator[None]:
    """Around the body of a chunk stream: adapter errors pass, transport errors are mapped
    as failures after the stream started."""
    try:
        yield
    except (TransportError, UpstreamError):
        raise
    except (httpx.HTTPError, OSError) as exc:
        raise map_transport_error(exc, streaming_started=True) from exc
    except Exception as exc:  # an event the adapter could not translate: a classified failure, not a crash
        raise unforeseen(exc, "stream") from exc


class TranslatedChunkStream:
    """Base of a stream that turns a provider's streaming response into OpenAI chunk dicts.
    Subclasses implement `_iter`."""

    def __init__(self, response: httpx.Response, model: str, include_usage: bool) -> None:
        self._response = response
        self._model = model
        self._include_usage = include_usage
        self.saw_done = False
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._created = int(time.time())

    def __aiter__(self) -> AsyncIterator[dict]:
        return self._iter()

    def _iter(self) -> AsyncIterator[dict]:
        raise NotImplementedError

    def _chunk(self, delta: dict, finish: str | None = None, index: int = 0) -> dict:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

    def _usage_chunk(self, usage: dict) -> dict:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                "model": self._model, "choices": [], "usage": usage}

    async def aclose(self) -> None:
        try:
            await self._response.aclose()
        except Exception:
            pass


def call_timeout(opts: CallOptions) -> httpx.Timeout:
    return httpx.Timeout(connect=opts.connect_timeout, read=None, write=None, pool=None)


async def post(client: httpx.AsyncClient, url: str, payload: bytes, headers: dict, opts: CallOptions) -> bytes:
    """POST and return the body; transport failures are mapped, an HTTP error status raises UpstreamError."""
    try:
        resp = await client.post(url, content=payload, headers=headers, timeout=call_timeout(opts))
        raw = resp.content
    except (httpx.HTTPError, OSError) as exc:
        raise map_transport_error(exc) from exc
    if resp.status_code >= 400:
        raise UpstreamError(resp.status_code, resp.headers, raw)
    return raw


async def open_response(client: httpx.AsyncClient, url: str, payload: bytes, headers: dict,
                        opts: CallOptions) -> httpx.Response:
    """POST with a streamed response; on an HTTP error status the body is read, the response
    closed and UpstreamError raised."""
    req = client.build_request("POST", url, content=payload, headers=headers, timeout=call_timeout(opts))
    try:
        resp = await client.send(req, stream=True)
    except (httpx.HTTPError, OSError) as exc:
        raise map_transport_error(exc) from exc
    if resp.status_code >= 400:
        try:
            raw = await resp.aread()
        finally:
            await resp.aclose()
        raise UpstreamError(resp.status_code, resp.headers, raw)
    return resp


class CredentialedAdapter:
    """An adapter over a shared httpx client whose credentials are loaded lazily, once, under a lock."""

    def __init__(self, client: httpx.AsyncClient, *, environ: Mapping[str, str] | None = None,
                 credentials: Any = None) -> None:
        self._client = client
        self._environ = environ
        self._credentials = credentials
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        return None
