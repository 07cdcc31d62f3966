"""A simulated OpenAI-compatible model server (vLLM / Ollama / TGI / LM Studio / OpenAI flavours).

SIMULATED: it generates canned text, not model output. It exists so that tests,
benchmarks and `policyengine demo` can exercise failover against real HTTP on
127.0.0.1. Every answer is labelled (`system_fingerprint: "simulated"`).

Python API::

    sim = SimServer("qwen-72b", flavour="vllm", keys=["k1"], context=8192)
    await sim.start()                 # sim.url -> "http://127.0.0.1:PORT/v1"
    sim.add_fault(Fault(kind="rate_limit", retry_after=1))
    sim.down(60)                      # refuse connections for 60 s, then recover
    sim.requests                      # what it saw: time, key, body, status, fault
    await sim.stop()

HTTP admin API (for subprocess use): GET /_sim/requests, POST /_sim/faults
(a Fault or a list), POST /_sim/down {"seconds": N}, POST /_sim/keys
{"valid": [...], "expired": [...]}, POST /_sim/reset, GET /_sim/state.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import math
import socket
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, Field

from .faults import Fault, Flavour, error_body

DEFAULT_ANSWER = (
    "Simulated answer: the control layer routed this request to a simulated model. "
    "It keeps the session warm, respects cooldowns and fails over when a model breaks."
)


class RecordedRequest(BaseModel):
    t: float  # time.monotonic() when the request arrived
    wall: float  # epoch seconds
    path: str
    key: str | None  # bearer token the client sent (a test secret; never a real key)
    model: str | None
    stream: bool
    body: dict = Field(default_factory=dict)
    status: int | None = None  # what we answered (None: reset / hung / refused)
    fault: str | None = None
    prefill: str | None = None  # assistant prefix the request asked to continue


def _words(text: str) -> list[str]:
    out, cur = [], ""
    for ch in text:
        cur += ch
        if ch == " ":
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS has just handed out on `host` (bound and released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _Counted(Protocol):
    times: int | None


_F = TypeVar("_F", bound=_Counted)


def take_fault(faults: list[_F], skip: Callable[[_F], bool]) -> _F | None:
    """The first fault in `faults` that `skip` lets through; a fault with `times` counts
    down and is removed once used up."""
    for f in faults:
        if skip(f):
            continue
        if f.times is not None:
            f.times -= 1
            if f.times <= 0:
                faults.remove(f)
        return f
    return None


class LocalSim:
    """Runs one aiohttp app on a free 127.0.0.1 port (the provider simulators)."""

    port: int
    _runner: web.AppRunner | None

    async def _serve(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class SimServer:
    """One simulated model endpoint on 127.0.0.1."""

    def __init__(self, model: str, *, flavour: Flavour = "vllm", host: str = "127.0.0.1", port: int = 0,
                 keys: list[str] | None = None, context: int | None = None, answer: str = DEFAULT_ANSWER,
                 chunk_delay: float = 0.0, latency: float = 0.0, served_model: str | None = None,
                 vllm_envelope: str = "flat") -> None:
        self.model = model
        self.served_model = served_model or model
        self.flavour: Flavour = flavour
        self.host, self.port = host, port
        self.valid_keys: set[str] | None = set(keys) if keys else None  # None: no auth
        self.expired_keys: set[str] = set()
        self.context = context
        self.answer = answer
        # the tool calls to answer with when the request offers tools: [(name, arguments), ...]
        # (several: parallel calls); None: call the first tool offered with {"query": ...}
        self.tool_plan: list[tuple[str, dict[str, Any] | str]] | None = None
        self.chunk_delay = chunk_delay
        self.latency = latency
        self.vllm_envelope = vllm_envelope
        # an upstream that reports no token usage (a stream without the usage chunk, an answer without `usage`)
        self.omit_usage = False
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self._down_until = 0.0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._reopen: asyncio.TimerHandle | None = None
        self._hung: set[asyncio.Future] = set()
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ lifecycle
    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL (…/v1) to put in ModelSpec.base_url."""
        return f"{self.base}/v1"

    async def start(self) -> SimServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/_sim/requests", self._admin_requests)
        app.router.add_get("/_sim/state", self._admin_state)
        app.router.add_post("/_sim/faults", self._admin_faults)
        app.router.add_post("/_sim/down", self._admin_down)
        app.router.add_post("/_sim/keys", self._admin_keys)
        app.router.add_post("/_sim/reset", self._admin_reset)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        if self.port == 0:
            self.port = free_port(self.host)
        await self._open()
        return self

    async def _open(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()

    async def stop(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
        for f in list(self._hung):
            f.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ------------------------------------------------------------------ control
    def add_fault(self, fault: Fault | dict | str, **kw: Any) -> Fault:
        if isinstance(fault, str):
            fault = Fault(kind=fault, **kw)
        elif isinstance(fault, dict):
            fault = Fault.model_validate(fault)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def down(self, seconds: float) -> None:
        """Crash: refuse new connections and reset open ones for `seconds`, then recover."""
        self._down_until = time.monotonic() + seconds
        loop = asyncio.get_running_loop()
        if self._site is not None:
            site, self._site = self._site, None
            self._tasks.add(t := loop.create_task(site.stop()))
            t.add_done_callback(self._tasks.discard)
        if self._reopen is not None:
            self._reopen.cancel()
        self._reopen = loop.call_later(seconds, self._schedule_recover)

    def _schedule_recover(self) -> None:
        t = asyncio.get_running_loop().create_task(self._recover())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _recover(self) -> None:
        self._reopen = None
        self._down_until = 0.0
        if self._site is None and self._runner is not None:
            await self._open()

    def expire_key(self, key: str) -> None:
        self.expired_keys.add(key)

    def reset(self) -> None:
        self.faults.clear()
        self.requests.clear()
        self.expired_keys.clear()

    def seen(self, *, stream: bool | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions") and (stream is None or r.stream == stream)]

    # ------------------------------------------------------------------ helpers
    def _take_fault(self, stream: bool) -> Fault | None:
        return take_fault(self.faults, lambda f: f.only_stream is not None and f.only_stream != stream)

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        if isinstance(body, str):
            return web.Response(status=status, text=body, headers=headers)
        if self.flavour == "vllm" and self.vllm_envelope == "nested" and isinstance(body, dict) and body.get("object") == "error":
            body = {"error": {k: v for k, v in body.items() if k != "object"}}
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)

    @staticmethod
    def _reset(request: web.Request) -> web.StreamResponse:
        tr = request.transport
        if tr is not None:
            sock = tr.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            tr.abort()
        raise asyncio.CancelledError  # aiohttp drops the handler quietly

    async def _sleep(self, seconds: float | None) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._hung.add(fut)
        try:
            if seconds is None:
                await fut
            else:
                await asyncio.wait_for(asyncio.shield(fut), seconds)
        except (TimeoutError, asyncio.CancelledError):
            pass
        finally:
            self._hung.discard(fut)

    def _prompt_tokens(self, body: dict) -> int:
        chars = sum(len(m.get("content") or "") if isinstance(m.get("content"), str) else 0
                    for m in body.get("messages") or () if isinstance(m, dict))
        return math.ceil(chars / 4)

    def _plan(self, body: dict) -> tuple[str, str | None, list[dict] | None]:
        """(text to send, prefill prefix, tool calls)."""
        msgs = body.get("messages") or []
        prefix = None
        if msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
            prefix = msgs[-1].get("content") or ""
        if body.get("tools") and body.get("tool_choice") != "none" and not prefix and self.tool_plan is not None:
            return "", None, [{"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                               "function": {"name": name, "arguments": args if isinstance(args, str)
                                            else orjson.dumps(args).decode()}} for name, args in self.tool_plan]
        if body.get("tools") and body.get("tool_choice") != "none" and not prefix:
            tool = body["tools"][0].get("function", {})
            last = next((m.get("content") for m in reversed(msgs) if m.get("role") == "user"), "") or ""
            return "", None, [{"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                               "function": {"name": tool.get("name", "tool"),
                                            "arguments": orjson.dumps({"query": str(last)[:40]}).decode()}}]
        text = self.answer
        if prefix is not None:
            text = text[len(prefix):] if text.startswith(prefix) else " (continued) " + text
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int) and max_tokens > 0:
            words = _words(text)
            text = "".join(words[:max_tokens])
        return text, prefix, None

    # ------------------------------------------------------------------ handlers
    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "simulated": True})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.served_model, "object": "model", "owned_by": f"simulated-{self.flavour}", "created": 0,
             "max_model_len": self.context}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        auth = request.headers.get("authorization", "")
        key = auth[7:] if auth.lower().startswith("bearer ") else None
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            rec = RecordedRequest(t=now, wall=time.time(), path=request.path, key=key, model=None, stream=False, status=400)
            self.requests.append(rec)
            return self._json(400, {"object": "error", "message": "Invalid JSON body", "type": "BadRequestError",
                                    "param": None, "code": 400})
        stream = bool(body.get("stream"))
        rec = RecordedRequest(t=now, wall=time.time(), path=request.path, key=key, model=body.get("model"),
                              stream=stream, body=body)
        self.requests.append(rec)
        if self._down_until and now < self._down_until:  # a crashed engine behind a kept-alive socket
            rec.fault = "down"
            self._reset(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        # auth
        if self.valid_keys is not None and (key not in self.valid_keys or key in self.expired_keys):
            status, err = error_body(self.flavour, "expired_key", model=self.served_model)
            rec.status, rec.fault = status, "auth"
            return self._json(status, err)
        if body.get("model") not in (self.served_model, self.model):
            status, err = error_body(self.flavour, "model_not_found", model=str(body.get("model")))
            rec.status = status
            return self._json(status, err)
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            rec.status = 400
            return self._json(400, {"object": "error", "message": "messages must be a non-empty list",
                                    "type": "BadRequestError", "param": None, "code": 400})
        prompt_tokens = self._prompt_tokens(body)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
        fault = self._take_fault(stream)
        if fault is None and self.context is not None and prompt_tokens + max_tokens > self.context:
            fault = Fault(kind="context_exceeded")
        if fault is not None:
            rec.fault = fault.kind
            resp = await self._apply_fault(request, fault, rec, prompt_tokens, max_tokens)
            if resp is not None:
                return resp
        text, prefix, tools = self._plan(body)
        rec.prefill = prefix
        if stream:
            return await self._stream(request, body, text, tools, prompt_tokens, fault, rec)
        rec.status = 200
        msg: dict[str, Any] = {"role": "assistant", "content": text if not tools else None}
        if tools:
            msg["tool_calls"] = tools
        completion_tokens = len(_words(text)) + (8 if tools else 0)
        return self._json(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": self.served_model, "system_fingerprint": "simulated",
            "choices": [{"index": 0, "message": msg, "logprobs": None,
                         "finish_reason": "tool_calls" if tools else ("length" if max_tokens and completion_tokens >= max_tokens else "stop")}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}})

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's embeddings endpoint: a deterministic unit vector of `dimensions` (default 8)
        floats per input (the same text always gets the same vector), as floats or base64 float32;
        auth, the served model name and non-stream faults are checked as on the chat endpoint."""
        now = time.monotonic()
        auth = request.headers.get("authorization", "")
        key = auth[7:] if auth.lower().startswith("bearer ") else None
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return self._json(400, {"object": "error", "message": "Invalid JSON body", "type": "BadRequestError",
                                    "param": None, "code": 400})
        rec = RecordedRequest(t=now, wall=time.time(), path=request.path, key=key, model=body.get("model"),
                              stream=False, body=body)
        self.requests.append(rec)
        if self.valid_keys is not None and (key not in self.valid_keys or key in self.expired_keys):
            status, err = error_body(self.flavour, "expired_key", model=self.served_model)
            rec.status, rec.fault = status, "auth"
            return self._json(status, err)
        if body.get("model") not in (self.served_model, self.model):
            status, err = error_body(self.flavour, "model_not_found", model=str(body.get("model")))
            rec.status = status
            return self._json(status, err)
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            rec.status = 400
            return self._json(400, {"object": "error", "message": "input must be a string or a non-empty list",
                                    "type": "BadRequestError", "param": None, "code": 400})
        fault = self._take_fault(False)
        if fault is not None:
            rec.fault = fault.kind
            resp = await self._apply_fault(request, fault, rec, 0, 0)
            if resp is not None:
                return resp
        dims = body.get("dimensions") if isinstance(body.get("dimensions"), int) and body["dimensions"] > 0 else 8
        data, tokens = [], 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(str(t) for t in item)
            tokens += max(1, math.ceil(len(text) / 4))
            digest = hashlib.sha256(text.encode()).digest() * (dims // 32 + 1)
            vec = [b / 255.0 - 0.5 for b in digest[:dims]]
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            vec = [v / norm for v in vec]
            emb: Any = (base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
                        if body.get("encoding_format") == "base64" else vec)
            data.append({"object": "embedding", "index": i, "embedding": emb})
        rec.status = 200
        return self._json(200, {"object": "list", "data": data, "model": self.served_model,
                                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _apply_fault(self, request: web.Request, f: Fault, rec: RecordedRequest,
                           prompt_tokens: int, max_tokens: int) -> web.StreamResponse | None:
        k = f.kind
        if k == "reset":
            self._reset(request)
        if k == "hang":
            await self._sleep(f.delay)
            self._reset(request)
        if k == "slow_first_token":
            await asyncio.sleep(f.delay or 1.0)
            return None
        if k in ("stream_cut", "stall", "malformed", "no_done", "stream_error"):
            return None  # applied while streaming (a plain request answers normally)
        headers: dict[str, str] = {}
        if f.retry_after is not None:
            headers["Retry-After"] = (email.utils.formatdate(time.time() + f.retry_after, usegmt=True)
                                      if f.retry_after_http_date else f"{f.retry_after:g}")
        if f.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{f.retry_after_ms:g}"
        kind = {"error": "error"}.get(k, k)
        status, body = error_body(self.flavour, kind, model=self.served_model, status=f.status,
                                  context=self.context or 4096, prompt_tokens=prompt_tokens, max_tokens=max_tokens)
        if f.status is not None:
            status = f.status
        if f.body is not None:
            body = f.body
        rec.status = status
        return self._json(status, body, headers)

    async def _stream(self, request: web.Request, body: dict, text: str, tools: list[dict] | None,
                      prompt_tokens: int, fault: Fault | None, rec: RecordedRequest) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        rec.status = 200
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            return b"data: " + orjson.dumps({
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": self.served_model,
                "system_fingerprint": "simulated",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}) + b"\n\n"

        events: list[bytes] = [chunk({"role": "assistant", "content": ""})]
        pieces = _words(text)
        if tools:
            for i, tc in enumerate(tools):
                events.append(chunk({"tool_calls": [{"index": i, "id": tc["id"], "type": "function",
                                                     "function": {"name": tc["function"]["name"], "arguments": ""}}]}))
                args = tc["function"]["arguments"]  # in pieces, as real servers stream them
                events += [chunk({"tool_calls": [{"index": i, "function": {"arguments": args[j:j + 12]}}]})
                           for j in range(0, len(args), 12)]
        else:
            events += [chunk({"content": p}) for p in pieces]
        completion_tokens = len(pieces) + (8 if tools else 0)
        events.append(chunk({}, "tool_calls" if tools else "stop"))
        so = body.get("stream_options") or {}
        if so.get("include_usage") and not self.omit_usage:
            events.append(b"data: " + orjson.dumps({
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": self.served_model,
                "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                         "total_tokens": prompt_tokens + completion_tokens}}) + b"\n\n")
        done = b"data: [DONE]\n\n"
        cut_at = (fault.after_chunks + 1) if fault is not None else None  # +1: the role chunk
        try:
            for i, ev in enumerate(events):
                if fault is not None and i == cut_at:
                    k = fault.kind
                    if k == "stream_cut":
                        self._reset(request)
                    if k == "stall":
                        await self._sleep(fault.delay)
                        self._reset(request)
                    if k == "malformed":
                        await resp.write(b'data: {"id": "' + cid.encode() + b'", "choices": [{"delta": {"content": "tru\n\n')
                        await resp.write_eof()
                        return resp
                    if k == "stream_error":
                        err = {"error": {"object": "error", "message": "EngineCore encountered an issue. See stack "
                                         "trace (above) for the root cause.", "type": "InternalServerError",
                                         "param": None, "code": 500}}
                        await resp.write(b"data: " + orjson.dumps(err) + b"\n\n")
                        await resp.write_eof()
                        return resp
                await resp.write(ev)
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
            if fault is not None and fault.kind == "no_done":
                if fault.hold:
                    await self._sleep(fault.delay if fault.delay is not None else 30.0)
                await resp.write_eof()
                return resp
            await resp.write(done)
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        return resp

    # ------------------------------------------------------------------ admin
    async def _admin_requests(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps([r.model_dump() for r in self.requests]), content_type="application/json")

    async def _admin_state(self, request: web.Request) -> web.Response:
        return web.json_response({"model": self.model, "flavour": self.flavour, "simulated": True,
                                  "faults": [f.model_dump() for f in self.faults],
                                  "down_for": max(0.0, self._down_until - time.monotonic()) if self._down_until else 0.0,
                                  "requests": len(self.requests)})

    async def _admin_faults(self, request: web.Request) -> web.Response:
        data = await request.json()
        items = data if isinstance(data, list) else [data]
        try:
            added = [self.add_fault(Fault.model_validate(x)) for x in items]
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=422)
        return web.json_response({"added": len(added)})

    async def _admin_down(self, request: web.Request) -> web.Response:
        data = await request.json()
        seconds = float(data.get("seconds", 0))
        if seconds <= 0:
            return web.json_response({"error": "seconds must be > 0"}, status=422)
        asyncio.get_running_loop().call_later(0.05, self.down, seconds)  # after this response is sent
        return web.json_response({"down_for": seconds})

    async def _admin_keys(self, request: web.Request) -> web.Response:
        data = await request.json()
        if "valid" in data:
            self.valid_keys = set(data["valid"]) if data["valid"] else None
        for k in data.get("expired", []):
            self.expired_keys.add(k)
        return web.json_response({"ok": True})

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})
