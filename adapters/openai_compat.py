"""OpenAI-compatible servers: vLLM, Ollama (/v1), TGI (Messages API), LM Studio, OpenAI itself.

Chat completions pass through unchanged except for `model` (set to the spec's
upstream id); tool calls, response_format and sampling parameters are the
caller's. Streams are read as SSE and yielded as decoded chunk dicts; an error
event inside the stream (vLLM, TGI) becomes an UpstreamError, a line that is
not JSON a `malformed_chunk` TransportError, a connection that drops a
`stream_cut`.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any

import aiohttp
import httpx
import orjson
from httpx_sse import EventSource
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from policyengine.types import ModelSpec, Provider

from .base import NATIVE_KEY, CallOptions, TransportError, UpstreamError, guarded, unforeseen
from .classify import STREAM_ERROR_EVENTS
from .http import aiohttp_session, aiohttp_timeout, map_transport_error, native_pool

_JSON = {"content-type": "application/json", "accept": "application/json"}
_SSE = {"content-type": "application/json", "accept": "text/event-stream"}
# the fast paths (native, aiohttp) send the same request headers the httpx API would
_JSON_AIO = {**_JSON, "user-agent": f"python-httpx/{httpx.__version__}"}
_SSE_AIO = {**_SSE, "user-agent": _JSON_AIO["user-agent"]}


@lru_cache(maxsize=1024)
def chat_url(base_url: str) -> httpx.URL:
    """The chat completions URL for an OpenAI base URL (parsed once: httpx URL parsing is costly)."""
    url = httpx.URL(base_url)  # keeps a query string, e.g. Azure's ?api-version=...
    path = url.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return url.copy_with(path=path)


@lru_cache(maxsize=1024)
def _url_str(base_url: str) -> str:
    return str(chat_url(base_url))


@lru_cache(maxsize=1024)
def embeddings_url(base_url: str) -> httpx.URL:
    """The embeddings URL for an OpenAI base URL (`.../v1` -> `.../v1/embeddings`)."""
    url = httpx.URL(base_url)
    path = url.path.rstrip("/")
    if path.endswith("/chat/completions"):
        path = path[: -len("/chat/completions")]
    if not path.endswith("/embeddings"):
        path += "/embeddings"
    return url.copy_with(path=path)


@lru_cache(maxsize=64)
def _timeout(connect: float) -> httpx.Timeout:
    return httpx.Timeout(connect=connect, read=None, write=None, pool=None)


def prepare_body(spec: ModelSpec, body: dict, opts: CallOptions, *, stream: bool) -> dict:
    out = dict(body)
    out.pop(NATIVE_KEY, None)  # another dialect's original request: only its own adapter reads it
    out["model"] = spec.upstream_model
    if stream:
        out["stream"] = True
        # TGI only gets stream_options when the caller sent them (older releases reject unknown fields)
        if opts.include_usage and (spec.provider != Provider.tgi or "stream_options" in body):
            so = dict(out.get("stream_options") or {})
            so.setdefault("include_usage", True)
            out["stream_options"] = so
    else:
        out.pop("stream", None)
        out.pop("stream_options", None)
    if opts.prefill and spec.provider == Provider.vllm:
        # vLLM continues a trailing assistant message only when told to.
        out["continue_final_message"] = True
        out["add_generation_prompt"] = False
    return out


def _headers(base: dict[str, str], opts: CallOptions) -> dict[str, str]:
    h = dict(base)
    h.update(opts.extra_headers)
    if opts.key:
        h["authorization"] = f"Bearer {opts.key}"
    return h


def _error_status(err: Any) -> int | None:
    code = err.get("code") if isinstance(err, dict) else None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return None


def _is_error_event(chunk: dict, event: str | None) -> bool:
    """An error sent inside a 200 event stream instead of a chunk: a non-null `error` (OpenAI,
    vLLM, TGI, OpenRouter), a flat `{"object": "error"}` (vLLM), an SSE `event: error`, or a
    Responses-style `{"type": "error"}` / `{"type": "response.failed"}` event."""
    return (chunk.get("error") is not None or chunk.get("object") == "error" or event in STREAM_ERROR_EVENTS
            or chunk.get("type") in STREAM_ERROR_EVENTS)


def _withheld(data: dict) -> bool:
    """A 200 answer that is a safety block: no choices but a Gemini-style `promptFeedback`, or
    every choice stopped by the content filter with nothing in it."""
    choices = data.get("choices")
    if not choices:
        return bool((data.get("promptFeedback") or {}).get("blockReason"))
    return all(isinstance(c, dict) and c.get("finish_reason") == "content_filter"
               and not (c.get("message") or {}).get("content") and not (c.get("message") or {}).get("tool_calls")
               for c in choices)


_WITHHELD = orjson.dumps({"error": {"code": "content_filter", "type": "content_filter",
                                    "message": "the answer was withheld by the server's content filter "
                                               "(HTTP 200 with no content)"}})


class OpenAIChunkStream:
    """SSE chunks from an OpenAI-compatible server, decoded."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.saw_done = False
        self._closed = False

    def __aiter__(self) -> AsyncIterator[dict]:
        return self._iter()

    def _events(self) -> AsyncIterator[Any]:
        return EventSource(self._response).aiter_sse()

    async def _iter(self) -> AsyncIterator[dict]:
        loads = orjson.loads
        try:
            async for sse in self._events():
                data = sse.data
                if not data:
                    continue
                if data == "[DONE]":
                    self.saw_done = True
                    return
                try:
                    chunk = loads(data)
                except orjson.JSONDecodeError:
                    raise TransportError("malformed_chunk", f"not JSON: {data[:80]!r}") from None
                if not isinstance(chunk, dict):
                    raise TransportError("malformed_chunk", "chunk is not a JSON object")
                if _is_error_event(chunk, sse.event):
                    err = chunk.get("error") or chunk
                    raise UpstreamError(_error_status(err), {}, chunk, in_stream=True)
                yield chunk
        except (TransportError, UpstreamError):
            raise
        except (httpx.HTTPError, aiohttp.ClientError, OSError) as exc:
            raise map_transport_error(exc, streaming_started=True) from exc
        except Exception as exc:  # a chunk the adapter could not handle: a classified failure, not a crash
            raise unforeseen(exc, f"{type(self).__name__} stream") from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                await self._response.aclose()
            except Exception:
                pass


class _DecodedChunkStream(OpenAIChunkStream):
    """A stream read straight from a fast-path response (aiohttp's, or the native client's):
    httpx-sse's own line and event decoders over the body's text (charset from the
    content type, utf-8 by default, undecodable bytes replaced, as httpx decodes it)."""

    def __init__(self, response: Any) -> None:  # type: ignore[override]
        self._response = response
        self.saw_done = False
        self._closed = False

    @property
    def content_type(self) -> str:
        raise NotImplementedError

    def _chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive."""
        raise NotImplementedError

    async def _events(self) -> AsyncIterator[Any]:
        text = codecs.getincrementaldecoder(self._response.charset or "utf-8")(errors="replace")
        lines, events = SSELineDecoder(), SSEDecoder()
        async for raw in self._chunks():
            for line in lines.decode(text.decode(raw)):
                sse = events.decode(line.rstrip("\n"))
                if sse is not None:
                    yield sse
        for line in lines.decode(text.decode(b"", True)) + lines.flush():
            sse = events.decode(line.rstrip("\n"))
            if sse is not None:
                yield sse


class AiohttpChunkStream(_DecodedChunkStream):
    """The stream read from an aiohttp response (the aiohttp fast path of open_stream)."""

    @property
    def content_type(self) -> str:
        return self._response.headers.get("content-type", "")

    def _chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                await self._response.__aexit__(None, None, None)  # what httpx-aiohttp does on close
            except Exception:
                pass


class NativeChunkStream(_DecodedChunkStream):
    """The stream read from an `H1Response` (the native fast path of open_stream)."""

    @property
    def content_type(self) -> str:
        return self._response.content_type

    def _chunks(self) -> AsyncIterator[bytes]:
        return self._response.iter_bytes()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._response.aclose()  # an unfinished response closes its connection


def _json_instead_of_stream(raw: bytes, ctype: str, headers: httpx.Headers) -> CompletionAsStream:
    """A server answered stream=true with plain JSON: a whole completion, or an error."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise TransportError("protocol_error", f"expected an event stream, got {ctype or 'no content type'}") from None
    if isinstance(data, dict) and data.get("error") is None and _withheld(data):
        raise UpstreamError(None, headers, raw if data.get("promptFeedback") else _WITHHELD, in_stream=True)
    if isinstance(data, dict) and data.get("choices") and data.get("error") is None:
        return CompletionAsStream(data)
    raise UpstreamError(_error_status(data.get("error", data)) if isinstance(data, dict) else None,
                        headers, raw, in_stream=True)


class CompletionAsStream:
    """A whole chat.completion (from a server that ignored stream=true) as chunks."""

    def __init__(self, completion: dict) -> None:
        self._c = completion
        self.saw_done = True

    def __aiter__(self) -> AsyncIterator[dict]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[dict]:
        c = self._c
        base = {"id": c.get("id"), "object": "chat.completion.chunk", "created": c.get("created", 0),
                "model": c.get("model")}
        for ch in c.get("choices") or ():
            msg = ch.get("message") or {}
            delta: dict[str, Any] = {"role": "assistant", "content": msg.get("content") or ""}
            if msg.get("tool_calls"):
                delta["tool_calls"] = [{"index": i, **tc} for i, tc in enumerate(msg["tool_calls"])]
            yield {**base, "choices": [{"index": ch.get("index", 0), "delta": delta, "finish_reason": None}]}
            yield {**base, "choices": [{"index": ch.get("index", 0), "delta": {}, "finish_reason": ch.get("finish_reason") or "stop"}]}
        if c.get("usage"):
            yield {**base, "choices": [], "usage": c["usage"]}

    async def aclose(self) -> None:
        return None


class OpenAICompatAdapter:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @guarded
    async def complete(self, spec: ModelSpec, body: dict, opts: CallOptions) -> dict:
        if not opts.base_url:
            raise TransportError("config", f"model {spec.name} has no base_url")
        payload = orjson.dumps(prepare_body(spec, body, opts, stream=False))
        pool = native_pool(self._client)
        session = aiohttp_session(self._client) if pool is None else None
        r: Any = None
        headers: Any = None
        if pool is not None:
            # hot path: the lean HTTP/1.1 client (adapters/h1.py) carried by the httpx client
            try:
                r = await pool.request("POST", _url_str(opts.base_url), _headers(_JSON_AIO, opts), payload,
                                       opts.connect_timeout)
                raw = await r.read()
            except OSError as exc:
                raise map_transport_error(exc) from exc
            status = r.status
            if status >= 400:
                raise UpstreamError(status, r.headers, raw)
        elif session is not None:
            # straight to the aiohttp session under the httpx client (same pool)
            try:
                async with session.post(_url_str(opts.base_url), data=payload, headers=_headers(_JSON_AIO, opts),
                                        allow_redirects=False, timeout=aiohttp_timeout(opts.connect_timeout)) as r:
                    raw = await r.read()
                    status = r.status
            except (aiohttp.ClientError, OSError) as exc:
                raise map_transport_error(exc) from exc
            if status >= 400:
                raise UpstreamError(status, httpx.Headers(r.raw_headers), raw)
        else:
            try:
                resp = await self._client.post(chat_url(opts.base_url), content=payload,
                                               headers=_headers(_JSON, opts), timeout=_timeout(opts.connect_timeout))
                raw = resp.content
            except httpx.HTTPError as exc:
                raise map_transport_error(exc) from exc
            except OSError as exc:
                raise map_transport_error(exc) from exc
            status, headers = resp.status_code, resp.headers
            if status >= 400:
                raise UpstreamError(status, headers, raw)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise TransportError("protocol_error", f"response is not JSON: {raw[:80]!r}") from None
        if not isinstance(data, dict) or data.get("error") is not None or data.get("object") == "error":
            err = (data.get("error") or data) if isinstance(data, dict) else data
            if headers is None:  # a fast path: headers are only built for errors
                headers = httpx.Headers(r.raw_headers)
            raise UpstreamError(_error_status(err) or status, headers, raw)
        if _withheld(data):  # a safety block sent as a 200: fatal, not an empty answer
            raise UpstreamError(None, {}, raw if data.get("promptFeedback") else _WITHHELD)
        if not data.get("choices"):
            raise TransportError("protocol_error", "response has no choices")
        return data

    @guarded
    async def embed(self, spec: ModelSpec, body: dict, opts: CallOptions) -> dict:
        """An OpenAI embeddings call (`POST {base_url}/embeddings`), `model` set to the spec's upstream
        id; the answer is the server's embeddings list, checked to hold `data`."""
        if not opts.base_url:
            raise TransportError("config", f"model {spec.name} has no base_url")
        payload = orjson.dumps({**body, "model": spec.upstream_model})
        try:
            resp = await self._client.post(embeddings_url(opts.base_url), content=payload,
                                           headers=_headers(_JSON, opts), timeout=_timeout(opts.connect_timeout))
        except (httpx.HTTPError, OSError) as exc:
            raise map_transport_error(exc) from exc
        raw = resp.content
        if resp.status_code >= 400:
            raise UpstreamError(resp.status_code, resp.headers, raw)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise TransportError("protocol_error", f"response is not JSON: {raw[:80]!r}") from None
        if not isinstance(data, dict) or "error" in data:
            raise UpstreamError(resp.status_code if resp.status_code >= 400 else 500, resp.headers, raw)
        if not isinstance(data.get("data"), list):
            raise TransportError("protocol_error", "embeddings response has no data list")
        return data

    @guarded
    async def open_stream(self, spec: ModelSpec, body: dict, opts: CallOptions) -> OpenAIChunkStream:
        if not opts.base_url:
            raise TransportError("config", f"model {spec.name} has no base_url")
        payload = orjson.dumps(prepare_body(spec, body, opts, stream=True))
        pool = native_pool(self._client)
        if pool is not None:
            try:
                nresp = await pool.request("POST", _url_str(opts.base_url), _headers(_SSE_AIO, opts), payload,
                                           opts.connect_timeout)
            except OSError as exc:
                raise map_transport_error(exc) from exc
            return await self._open_fast(NativeChunkStream(nresp))
        session = aiohttp_session(self._client)
        if session is not None:
            try:
                aresp = await session.post(_url_str(opts.base_url), data=payload, headers=_headers(_SSE_AIO, opts),
                                           allow_redirects=False, timeout=aiohttp_timeout(opts.connect_timeout))
            except (aiohttp.ClientError, OSError) as exc:
                raise map_transport_error(exc) from exc
            return await self._open_fast(AiohttpChunkStream(aresp))
        req = self._client.build_request("POST", chat_url(opts.base_url), content=payload,
                                         headers=_headers(_SSE, opts), timeout=_timeout(opts.connect_timeout))
        try:
            resp = await self._client.send(req, stream=True)
        except httpx.HTTPError as exc:
            raise map_transport_error(exc) from exc
        except OSError as exc:
            raise map_transport_error(exc) from exc
        if resp.status_code >= 400:
            try:
                raw = await resp.aread()
            except httpx.HTTPError:
                raw = b""
            finally:
                await resp.aclose()
            raise UpstreamError(resp.status_code, resp.headers, raw)
        ctype = resp.headers.get("content-type", "")
        if "text/event-stream" not in ctype:
            # Some servers ignore stream=true (or report an error) with plain JSON.
            try:
                raw = await resp.aread()
            except httpx.HTTPError as exc:
                raise map_transport_error(exc) from exc
            finally:
                await resp.aclose()
            return _json_instead_of_stream(raw, ctype, resp.headers)
        return OpenAIChunkStream(resp)

    async def _open_fast(self, stream: _DecodedChunkStream) -> OpenAIChunkStream | CompletionAsStream:
        """The rest of open_stream on a fast path (native or aiohttp): same outcomes as the httpx API."""
        resp = stream._response
        if resp.status >= 400:
            try:
                raw = await resp.read()
            except (aiohttp.ClientError, OSError, TransportError):
                raw = b""
            finally:
                await stream.aclose()
            raise UpstreamError(resp.status, httpx.Headers(resp.raw_headers), raw)
        ctype = stream.content_type
        if "text/event-stream" not in ctype:
            # Some servers ignore stream=true (or report an error) with plain JSON.
            try:
                raw = await resp.read()
            except (aiohttp.ClientError, OSError) as exc:
                raise map_transport_error(exc) from exc
            finally:
                await stream.aclose()
            return _json_instead_of_stream(raw, ctype, httpx.Headers(resp.raw_headers))
        return stream

    async def aclose(self) -> None:
        return None
