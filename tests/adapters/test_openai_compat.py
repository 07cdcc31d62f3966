"""OpenAI-compatible adapter details: URLs, request preparation, odd server behaviour."""

from __future__ import annotations

from aiohttp import web
from policyengine.adapters.base import CallOptions
from policyengine.adapters.openai_compat import chat_url, prepare_body

from policyengine.simulate.testing import USER
from policyengine.types import ModelSpec, Provider, Routing


def test_chat_url_keeps_query_and_is_idempotent():
    assert str(chat_url("https://x.openai.azure.com/openai/deployments/gpt4o?api-version=2024-06-01")) == \
        "https://x.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-06-01"
    assert str(chat_url("http://h:8000/v1/")) == "http://h:8000/v1/chat/completions"
    assert str(chat_url("http://h/v1/chat/completions")) == "http://h/v1/chat/completions"


def test_prepare_body():
    vllm = ModelSpec(name="qwen", provider=Provider.vllm, model_id="Qwen/Qwen2.5-72B-Instruct")
    tgi = ModelSpec(name="llama", provider=Provider.tgi)
    body = {**USER, "model": "auto", "tools": [{"type": "function", "function": {"name": "f"}}]}
    out = prepare_body(vllm, body, CallOptions(include_usage=True, prefill=True), stream=True)
    assert out["model"] == "Qwen/Qwen2.5-72B-Instruct" and out["stream"] is True
    assert out["stream_options"] == {"include_usage": True} and out["tools"] == body["tools"]
    assert out["continue_final_message"] is True and out["add_generation_prompt"] is False
    assert "stream_options" not in prepare_body(tgi, body, CallOptions(include_usage=True), stream=True)
    plain = prepare_body(vllm, {**body, "stream": True}, CallOptions(), stream=False)
    assert "stream" not in plain and "continue_final_message" not in plain
    assert body["model"] == "auto"  # the caller's dict is not modified


async def _serve(route: str, handler) -> tuple[web.AppRunner, str]:
    """A real aiohttp server on a free loopback port answering POST `route`; (runner, base URL)."""
    app = web.Application()
    app.router.add_post(route, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


async def test_server_that_ignores_stream_true(make_dispatcher):
    completion = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole answer"},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}

    async def chat(request: web.Request) -> web.Response:
        return web.json_response(completion)

    runner, base = await _serve("/v1/chat/completions", chat)
    try:
        d = make_dispatcher([ModelSpec(name="m", provider=Provider.openai, base_url=f"{base}/v1")])
        s = d.stream(USER, Routing(chain=["m"]))
        chunks = [c async for c in s]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")) == "whole answer"
        assert s.result.complete and s.result.usage["total_tokens"] == 3
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------- the three transports

_COMPLETION = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}


def _sse(*events: bytes) -> bytes:
    return b"".join(b"data: " + e + b"\n\n" for e in events)


async def _upstream(seen: list[dict[str, str]]) -> tuple[web.AppRunner, str]:
    """One endpoint per scenario, chosen by the base URL's last path segment."""
    chunk = b'{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"caf\xc3\xa9"}}]}'

    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        body = await request.json()
        case = request.match_info["case"]
        if case == "ok":
            if body.get("stream"):
                resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8"})
                resp.enable_chunked_encoding()
                await resp.prepare(request)
                await resp.write(_sse(chunk)[:30])  # an event split across reads
                await resp.write(_sse(chunk)[30:] + _sse(b"[DONE]"))
                await resp.write_eof()
                return resp
            return web.json_response(_COMPLETION)
        if case == "limited":
            return web.json_response({"error": {"message": "slow down", "code": 429}}, status=429,
                                     headers={"Retry-After": "3", "X-Request-Id": "r1"})
        if case == "json":  # stream=true answered with a whole completion
            return web.json_response(_COMPLETION)
        if case == "html":
            return web.Response(text="<html>oops</html>", content_type="text/html")
        if case == "error200":
            return web.json_response({"object": "error", "message": "bad", "code": 400})
        if case == "in_stream_error":
            return web.Response(body=_sse(b'{"error": {"message": "engine died", "code": 500}}'),
                                content_type="text/event-stream")
        if case == "malformed":
            return web.Response(body=_sse(b'{"choices": [tru'), content_type="text/event-stream")
        if case == "latin1":
            return web.Response(body=b'data: {"choices": [], "x": "caf\xe9"}\n\ndata: [DONE]\n\n',
                                headers={"content-type": "text/event-stream; charset=iso-8859-1"})
        raise AssertionError(case)

    return await _serve("/{case}/chat/completions", chat)


async def _outcomes(transport: str, base: str) -> dict[str, object]:
    from policyengine.adapters.base import CallOptions, TransportError, UpstreamError
    from policyengine.adapters.http import aiohttp_session, make_client, native_pool
    from policyengine.adapters.openai_compat import OpenAICompatAdapter

    client = make_client(transport)  # type: ignore[arg-type]
    assert (native_pool(client) is not None) == (transport == "native")
    assert (aiohttp_session(client) is not None) == (transport == "aiohttp")
    adapter = OpenAICompatAdapter(client)
    spec = ModelSpec(name="m", provider=Provider.vllm)
    out: dict[str, object] = {}

    async def record(name: str, call) -> None:
        try:
            out[name] = await call()
        except UpstreamError as e:
            headers = {k: v for k, v in e.headers.items() if k not in ("date", "server")}
            out[name] = ("UpstreamError", e.status, headers, e.body, e.in_stream)
        except TransportError as e:
            out[name] = ("TransportError", e.reason, e.detail)

    async def stream(case: str):
        s = await adapter.open_stream(spec, dict(USER), CallOptions(base_url=f"{base}/{case}/"))
        try:
            return [c async for c in s], s.saw_done
        finally:
            await s.aclose()

    try:
        for case in ("ok", "limited", "error200", "html"):
            await record(f"complete {case}", lambda case=case: adapter.complete(
                spec, dict(USER), CallOptions(base_url=f"{base}/{case}")))
        for case in ("ok", "limited", "json", "html", "in_stream_error", "malformed", "latin1"):
            await record(f"stream {case}", lambda case=case: stream(case))
    finally:
        await client.aclose()
    assert native_pool(client) is None  # closed with the client
    return out


async def test_same_outcomes_on_every_transport():
    """The native client, the aiohttp fast path and the httpx API give the same results and errors."""
    seen: list[dict[str, str]] = []
    runner, base = await _upstream(seen)
    try:
        by_transport = {}
        for transport in ("native", "aiohttp", "httpx"):
            seen.clear()
            by_transport[transport] = await _outcomes(transport, base)
            by_transport[transport]["request headers"] = seen[0]
    finally:
        await runner.cleanup()
    native, aio, plain = by_transport["native"], by_transport["aiohttp"], by_transport["httpx"]
    assert native["complete ok"] == _COMPLETION
    assert native["complete limited"][:2] == ("UpstreamError", 429)  # type: ignore[index]
    assert native["complete limited"][2]["retry-after"] == "3"  # type: ignore[index]
    assert native["stream ok"][1] is True  # type: ignore[index]
    assert native["stream malformed"][:2] == ("TransportError", "malformed_chunk")  # type: ignore[index]
    nh, ah = dict(native.pop("request headers")), dict(aio.pop("request headers"))  # type: ignore[arg-type]
    plain.pop("request headers")
    # the native client does not ask for compression (it decodes gzip/deflate if a server sends it anyway)
    assert ah.pop("accept-encoding") and "accept-encoding" not in nh
    assert nh == ah
    assert native == aio == plain


async def test_dispatcher_uses_the_native_client_by_default(make_dispatcher):
    from policyengine.adapters.http import native_pool

    seen: list[dict[str, str]] = []
    runner, base = await _upstream(seen)
    try:
        d = make_dispatcher([ModelSpec(name="m", provider=Provider.vllm, base_url=f"{base}/ok")])
        r = await d.complete(USER, Routing(chain=["m"]))
        assert r.response["choices"][0]["message"]["content"] == "hi"
        pool = native_pool(d._client)
        assert pool is not None and pool.stats()["open"] == 1
        await d.aclose()
        assert pool.closed
    finally:
        await runner.cleanup()
