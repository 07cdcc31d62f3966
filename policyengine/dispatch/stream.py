"""Streaming dispatch.

Before the first content token reaches the client, a stream fails over exactly
like a plain call (role-only chunks are held back, so a model that dies after
announcing itself costs nothing). After that, a broken stream (cut, stalled
past the idle budget, malformed event, error event) continues on the next
model that declares assistant-prefill support, from the text already sent;
when none can (none declares it, or each refused it), a model is asked in a
follow-up turn to write the rest, and its first characters are checked to
continue the text (repeats dropped, a preamble or a different answer refused:
dispatch/splice.py) before any of it is sent; otherwise the stream ends with an
in-band error event. A truncated answer is
never finished with a finish_reason. A stream whose upstream sent its
finish_reason but no `[DONE]` is finalised after `done_grace` seconds.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from policyengine.adapters.base import CallOptions, ChunkStream, TransportError, UpstreamError
from policyengine.types import ModelSpec

from .chain import Budget, Call, ChainRunner, Run
from .results import Attempt, DispatchError, DispatchResult
from .splice import CONTINUE_INSTRUCTION, needs_more, splice
from .step import END, finish, ready_or_pending


def _has_payload(chunk: dict) -> bool:
    for ch in chunk.get("choices") or ():
        d = ch.get("delta") or {}
        if d.get("content") or d.get("tool_calls") or d.get("reasoning_content") or ch.get("finish_reason"):
            return True
    return False


def _content(chunk: dict) -> str:
    for ch in chunk.get("choices") or ():
        if ch.get("index", 0) == 0:
            return (ch.get("delta") or {}).get("content") or ""
    return ""


def _finish(chunk: dict) -> bool:
    return any(ch.get("finish_reason") for ch in chunk.get("choices") or ())


def _with_content(chunk: dict, content: str | None) -> dict:
    """`chunk` with choice 0's delta content replaced (None: removed)."""
    choices = []
    for ch in chunk.get("choices") or ():
        if ch.get("index", 0) == 0:
            delta = {k: v for k, v in (ch.get("delta") or {}).items() if k != "content"}
            if content is not None:
                delta["content"] = content
            ch = {**ch, "delta": delta}
        choices.append(ch)
    return {**chunk, "choices": choices}


@dataclass
class _Opened:
    stream: ChunkStream
    iterator: AsyncIterator[dict]
    held: list[dict]  # chunks read before (and including) the first content chunk
    ended: bool = False  # upstream finished while we were reading ahead


@dataclass
class _Acc:
    """What the client has been sent so far."""

    id: str | None = None
    created: int | None = None
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: dict | None = None
    upstream_model: str | None = None
    sent_any: bool = False

    def add(self, chunk: dict) -> None:
        self.upstream_model = chunk.get("model", self.upstream_model)
        for ch in chunk.get("choices") or ():
            if ch.get("index", 0) != 0:
                continue
            d = ch.get("delta") or {}
            if d.get("content"):
                self.text.append(d["content"])
            if d.get("reasoning_content"):
                self.reasoning.append(d["reasoning_content"])
            for tc in d.get("tool_calls") or ():
                slot = self.tool_calls.setdefault(tc.get("index", 0), {"id": None, "type": "function",
                                                                        "function": {"name": "", "arguments": ""}})
                if tc.get("id"):
                    slot["id"] = tc["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    slot["function"]["name"] += fn["name"]
                if fn.get("arguments"):
                    slot["function"]["arguments"] += fn["arguments"]
            if ch.get("finish_reason"):
                self.finish_reason = ch["finish_reason"]

    def completion(self) -> dict:
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(self.text)}
        if self.reasoning:
            msg["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            msg["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.upstream_model,
                "choices": [{"index": 0, "message": msg, "finish_reason": self.finish_reason}],
                "usage": self.usage}


class DispatchStream:
    """Async iterator of OpenAI `chat.completion.chunk` dicts. `result` is set when it ends.

    Iterating raises `DispatchError` if no model could start the stream (nothing
    was sent yet, so the caller can still answer with an HTTP error). After the
    first chunk, failures end the stream with one `{"error": {...}}` item.

    It walks the chain through `runner` (the dispatcher, seen as a `ChainRunner`) for `run`,
    which it owns from now on.
    """

    def __init__(self, runner: ChainRunner, run: Run) -> None:
        self._d = runner
        self._run = run
        self._gen: AsyncIterator[dict] | None = None
        self._current: _Opened | None = None
        self._last_model: str | None = None
        self.result: DispatchResult | None = None
        #: how each break was continued, in order: "prefill" or "instruction"
        self.continuations: list[str] = []

    @property
    def model(self) -> str | None:
        """The policy model currently (or last) streaming; None before the first chunk."""
        return self._last_model

    @property
    def attempts(self) -> list[Attempt]:
        """Every attempt so far (the final list is also in `result`)."""
        return list(self._run.attempts)

    def __aiter__(self) -> AsyncIterator[dict]:
        # the generator itself: `async for` then steps it directly, one coroutine frame less per chunk
        if self._gen is None:
            self._gen = self._generate()
        return self._gen

    async def __anext__(self) -> dict:
        return await self.__aiter__().__anext__()

    async def aclose(self) -> None:
        """Stop the stream and close its upstream connection (safe to call more than once)."""
        if self._gen is not None:
            await self._gen.aclose()  # type: ignore[attr-defined]
        await self._close_current()

    async def _close_current(self) -> None:
        cur, self._current = self._current, None
        if cur is not None:
            await cur.stream.aclose()

    # ------------------------------------------------------------------ continuation
    def _budgeted(self, body: dict, sent: str) -> dict:
        """`body` with its output budget reduced by the (estimated) tokens already sent."""
        for k in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(k), int):
                body[k] = max(1, body[k] - math.ceil(len(sent) / self._d.settings.chars_per_token))
        return body

    async def _continue(self, sent: str) -> tuple[_Opened, ModelSpec, str | None, str] | str | None:
        """Open the rest of a cut answer whose text so far is `sent`: (stream, model, key id, how)
        with how "prefill" or "instruction", or why not (None: no model could be asked).

        First on a model that declares prefill, from `sent` as a trailing assistant message. When
        none can (none declares it, or each one refused it) and `continue_without_prefill` is on,
        a model is asked in a follow-up turn to write the rest (`splice.CONTINUE_INSTRUCTION`);
        its first characters are read and checked by `splice.splice` before anything is sent
        on: what it repeated is dropped, and an answer that does not continue the text (a
        preamble, a different restart) is refused (recorded as `continuation_rejected`)."""
        d, run = self._d, self._run
        msgs = [*run.body["messages"], {"role": "assistant", "content": sent}]
        run.require_prefill = True
        try:
            opened, spec, key_id = await d.execute(run, self._open_call(self._budgeted({**run.body, "messages": msgs},
                                                                                      sent)))
            return opened, spec, key_id, "prefill"
        except DispatchError as e:
            if e.reason == "content_filter" or not d.settings.continue_without_prefill:
                return None
        finally:
            run.require_prefill = False
        body = self._budgeted({**run.body, "messages": [*msgs, {"role": "user", "content": CONTINUE_INSTRUCTION}]},
                              sent)
        try:
            opened, spec, key_id = await d.execute(run, self._open_call(body))
        except DispatchError:
            return None
        started = time.time()
        try:
            kept = await self._checked_head(opened, sent, d.budget(spec).idle)
        except (TransportError, UpstreamError, TimeoutError) as exc:
            kept, why = None, f"the continuation broke before it could be checked: {exc}"
        else:
            why = "the continuation did not continue the text (a preamble or a different answer)"
        if kept is None:
            await opened.stream.aclose()
            run.exclude.add(spec.name)
            run.attempts.append(Attempt(model=spec.name, key_id=key_id, error_class="failover",
                                        reason="continuation_rejected", started_at=started, message=why[:300]))
            return why
        opened.held = kept
        return opened, spec, key_id, "instruction"

    @staticmethod
    async def _checked_head(opened: _Opened, sent: str, idle: float) -> list[dict] | None:
        """Read the start of a continuation until it can be judged, then: the chunks to send on
        (the repeated text removed, in one content chunk where the text was), or None when it
        does not continue `sent`."""
        chunks = list(opened.held)
        head = "".join(_content(c) for c in chunks)
        finished = any(_finish(c) for c in chunks)
        while not opened.ended and not finished and needs_more(sent, head):
            try:
                async with asyncio.timeout(idle):
                    chunk = await opened.iterator.__anext__()
            except StopAsyncIteration:
                opened.ended = True
                break
            chunks.append(chunk)
            head += _content(chunk)
            finished = _finish(chunk)
        rest = splice(sent, head)
        if rest is None:
            return None
        out: list[dict] = []
        placed = False
        for c in chunks:
            if _content(c):
                if not placed:
                    placed = True
                    if rest:
                        out.append(_with_content(c, rest))
                stripped = _with_content(c, None)
                if _has_payload(stripped):
                    out.append(stripped)
            else:
                out.append(c)
        return out

    # ------------------------------------------------------------------ internals
    def _open_call(self, body: dict) -> Call[_Opened]:
        async def call(spec: ModelSpec, opts: CallOptions, b: Budget) -> _Opened:
            stream: ChunkStream | None = None
            held: list[dict] = []
            try:
                async with asyncio.timeout(b.first_token):
                    stream = await self._d.adapter(spec).open_stream(spec, body, opts)
                    it = stream.__aiter__()
                    while True:
                        try:
                            chunk = await it.__anext__()
                        except StopAsyncIteration:
                            if stream.saw_done or any(_has_payload(c) for c in held):
                                return _Opened(stream, it, held, ended=True)
                            raise TransportError("stream_cut", "stream ended before the first token") from None
                        held.append(chunk)
                        if _has_payload(chunk):
                            return _Opened(stream, it, held)
            except TimeoutError:
                if stream is not None:
                    await stream.aclose()
                raise TransportError("first_token_timeout", f"no token within {b.first_token:.3g}s") from None
            except BaseException:
                if stream is not None:
                    await stream.aclose()
                raise
        return call

    async def _generate(self) -> AsyncIterator[dict]:
        acc = _Acc()
        try:
            d, run = self._d, self._run
            client_wants_usage = bool((run.body.get("stream_options") or {}).get("include_usage"))
            continued_from: list[str] = []
            body = run.body
            opened, spec, key_id = await d.execute(run, self._open_call(body))  # DispatchError propagates
            self._current = opened
            self._last_model = spec.name
            # the answer has started: from now on the stream's own (longer) total budget applies
            run.extend_deadline(d.settings.stream_deadline)
            skip_role = False
            while True:
                budget = d.budget(spec)
                finished = False
                broken: tuple[str, str, int | None, Any] | None = None  # reason, message, status, body
                t_seg, started = time.perf_counter(), time.time()
                try:
                    pending = list(opened.held)
                    while True:
                        if pending:
                            chunk = pending.pop(0)
                        elif opened.ended:
                            break
                        else:
                            # a chunk already buffered is taken without arming the idle timer
                            chunk, waiting = ready_or_pending(opened.iterator)
                            if waiting is not None:
                                wait = d.settings.done_grace if acc.finish_reason else budget.idle
                                wait = min(wait, max(0.001, run.remaining()))
                                try:
                                    async with asyncio.timeout(wait):
                                        chunk = await finish(*waiting)
                                except TimeoutError:
                                    if acc.finish_reason:
                                        break  # finished, but no [DONE]: finalise now
                                    raise TransportError("idle_timeout", f"no chunk for {wait:.3g}s") from None
                            if chunk is END:
                                break
                        if acc.id is None:
                            acc.id, acc.created = chunk.get("id"), chunk.get("created")
                        elif chunk.get("id") != acc.id:
                            chunk = {**chunk, "id": acc.id}
                        if chunk.get("usage"):
                            acc.usage = chunk["usage"]
                        choices = chunk.get("choices")
                        if not choices:
                            if chunk.get("usage") and not client_wants_usage:
                                continue
                            yield chunk
                            continue
                        if skip_role:
                            delta = (choices[0] or {}).get("delta") or {}
                            if not _has_payload(chunk):
                                continue
                            if "role" in delta:
                                chunk = {**chunk, "choices": [{**choices[0], "delta": {k: v for k, v in delta.items() if k != "role"}}]}
                            skip_role = False
                        acc.add(chunk)
                        acc.sent_any = True
                        yield chunk
                    finished = bool(acc.finish_reason) or opened.stream.saw_done
                    if not finished:
                        broken = ("stream_cut", "stream ended without finish_reason or [DONE]", None, None)
                except UpstreamError as e:
                    cls = d.classify(e, spec)
                    broken = (cls.reason, cls.message or "error event in stream", e.status, e.body)
                except TransportError as e:
                    broken = (e.reason, e.detail, None, None)
                finally:
                    await self._close_current()
                if broken is None:
                    # trusted values (the attempts are Attempt objects already): no validation per stream
                    self.result = DispatchResult.model_construct(
                        response=acc.completion(), model=spec.name, key_id=key_id, attempts=run.attempts, usage=acc.usage,
                        finish_reason=acc.finish_reason, latency_ms=(time.perf_counter() - run.t0) * 1000,
                        continued_from=continued_from, error=None, complete=True)
                    return
                reason, message, status, _ = broken
                await d.stream_broken(run, spec, key_id, reason=reason, message=message, status=status,
                                      started=started, latency_ms=(time.perf_counter() - t_seg) * 1000)
                can_continue = (d.settings.continue_broken_streams and not acc.tool_calls
                                and int(run.body.get("n") or 1) == 1 and acc.text)
                rejected: str | None = None
                if can_continue:
                    got = await self._continue("".join(acc.text))
                    if isinstance(got, tuple):
                        opened, spec2, key_id, how = got
                        continued_from.append(spec.name)
                        self.continuations.append(how)
                        spec = spec2
                        self._last_model = spec.name
                        self._current = opened
                        skip_role = True
                        continue
                    rejected = got
                err = {"message": f"the answer from {spec.name} was interrupted ({reason}: {message}) and could not be "
                                  "continued on another model" + (f" ({rejected})" if rejected else "")
                                  + "; the text so far is incomplete",
                       "type": "stream_interrupted", "code": reason, "param": None, "model": spec.name}
                self.result = DispatchResult(response=acc.completion(), model=spec.name, key_id=key_id,
                                             attempts=run.attempts, usage=acc.usage, finish_reason=None,
                                             latency_ms=(time.perf_counter() - run.t0) * 1000,
                                             continued_from=continued_from, error=err, complete=False)
                yield {"error": err}
                return
        except (GeneratorExit, asyncio.CancelledError):  # the client went away mid-stream (closed, cancelled)
            if self.result is None and acc.sent_any:
                self.result = DispatchResult(
                    response=acc.completion(), model=self._last_model or "", attempts=self._run.attempts,
                    usage=acc.usage, finish_reason=None, complete=False,
                    latency_ms=(time.perf_counter() - self._run.t0) * 1000,
                    error={"type": "client_disconnected", "code": "client_disconnected",
                           "message": "the client closed the stream before the answer was complete"})
            raise
