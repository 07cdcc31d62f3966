"""What every provider adapter offers the dispatcher, and the errors it raises.

An adapter speaks one provider's wire protocol and nothing else: it knows
nothing about policies, chains, cooldowns or retries. It turns an OpenAI chat
request into the provider's request and the provider's answer back into an
OpenAI `chat.completion` (or a stream of `chat.completion.chunk` dicts), and it
reports failure as `UpstreamError` (the server answered with an error) or
`TransportError` (no usable answer: refused, reset, timed out, broken stream).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from policyengine.types import ModelSpec

log = logging.getLogger("policyengine.adapters")

R = TypeVar("R")


NATIVE_KEY = "_pe_native"
"""The key of an OpenAI chat request under which a dialect at the edge leaves the caller's
original request for an adapter that speaks that dialect natively (`{"anthropic": {...}}`:
see adapters/anthropic.py). Every other adapter drops it; it is never sent as it is."""


class AdapterError(Exception):
    """Base class for everything an adapter raises about an upstream call."""


class UpstreamError(AdapterError):
    """The upstream answered with an error (HTTP status, or an error event inside a stream)."""

    def __init__(self, status: int | None, headers: Mapping[str, str] | None, body: Any,
                 *, in_stream: bool = False) -> None:
        self.status = status
        self.headers = dict(headers or {})
        self.body = body
        self.in_stream = in_stream
        super().__init__(f"upstream error status={status}")


class TransportError(AdapterError):
    """No usable answer: `reason` is one of connection_refused, connection_reset, connect_timeout,
    timeout, first_token_timeout, idle_timeout, stream_cut, malformed_chunk, protocol_error, config,
    adapter_error (the adapter itself failed, e.g. on an answer it could not translate: see `guarded`)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def guarded(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Wrap an adapter's `complete` / `open_stream` so that an exception it did not mean to raise
    (a bug, or an answer it cannot translate, after the model may already have been called)
    reaches the dispatcher as `TransportError("adapter_error")`: a classified failover, logged
    with its traceback here, instead of an unclassified exception that would bypass the chain
    and the outcome row. `AdapterError`s and timeouts pass through unchanged."""

    @functools.wraps(fn)
    async def call(self: Any, spec: ModelSpec, body: dict, opts: CallOptions) -> R:
        try:
            return await fn(self, spec, body, opts)
        except (AdapterError, TimeoutError):
            raise
        except Exception as exc:
            raise unforeseen(exc, f"{type(self).__name__}.{fn.__name__} (model {spec.name})") from exc

    return call


def unforeseen(exc: Exception, where: str) -> TransportError:
    """The `TransportError("adapter_error")` for an exception an adapter did not mean to raise
    (logged here with its traceback; the client sees only the reason)."""
    log.error("adapter failure in %s", where, exc_info=exc)
    return TransportError("adapter_error", "the adapter could not handle this call (the service log has the detail)")


@dataclass(slots=True)
class CallOptions:
    """Per-attempt settings the dispatcher hands to an adapter."""

    key: str | None = field(default=None, repr=False)  # the secret itself: sent, never logged or shown
    key_id: str | None = None  # the env var name, safe to log
    base_url: str | None = None  # resolved from ModelSpec.base_url
    connect_timeout: float = 5.0
    include_usage: bool = True  # ask streaming servers for a final usage chunk
    prefill: bool = False  # the last assistant message is a prefix to continue
    extra_headers: dict[str, str] = field(default_factory=dict, repr=False)  # may carry keys (Azure api-key)


class ChunkStream(Protocol):
    """An open upstream stream of OpenAI chunk dicts. Ends cleanly only after the upstream
    finished; raises TransportError/UpstreamError when it breaks."""

    def __aiter__(self) -> AsyncIterator[dict]: ...

    @property
    def saw_done(self) -> bool: ...

    async def aclose(self) -> None: ...


class Adapter(Protocol):
    async def complete(self, spec: ModelSpec, body: dict, opts: CallOptions) -> dict: ...

    async def open_stream(self, spec: ModelSpec, body: dict, opts: CallOptions) -> ChunkStream: ...

    async def aclose(self) -> None: ...
