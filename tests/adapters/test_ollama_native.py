"""Ollama's native chat API (`provider ollama` + `api native`) against a local server speaking it.

The server below is written from Ollama's own documentation and source (ollama/ollama
docs/api.md "Generate a chat completion"; api/types.go ChatRequest `options`, `truncate`,
`shift`; server/images.go CheckCapabilities; runner "the input length exceeds the context
length"): `POST /api/chat` answers one JSON object, or with `"stream": true` NDJSON lines ending
with `"done": true`, `done_reason`, `prompt_eval_count` and `eval_count`; errors are
`{"error": "..."}` with a status, or a line inside the stream. Like Ollama it loads the model
with `options.num_ctx` and, when asked not to truncate, refuses a longer prompt (one token per
word here) instead of dropping its start, which is what its `/v1` endpoint does silently.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web

from policyengine.dispatch import DispatchError
from policyengine.dsl import compile_sources
from policyengine.simulate.testing import USER
from policyengine.types import ModelSpec, Provider, Routing

DEFAULT_CTX = 2048  # Ollama's default num_ctx when none is given


class OllamaNative:
    """A real aiohttp server on 127.0.0.1 that answers `/api/chat` and `/api/tags` like Ollama."""

    def __init__(self, models: tuple[str, ...] = ("llama3.2",), tools: bool = True) -> None:
        self.models = models
        self.tools = tools
        self.seen: list[dict] = []
        self.fail_mid_stream = False
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> OllamaNative:
        app = web.Application()
        app.router.add_post("/api/chat", self.chat)
        app.router.add_get("/api/tags", self.tags)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": m, "model": m} for m in self.models]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(body)
        model = body.get("model")
        if model not in self.models:
            return web.json_response({"error": f'model "{model}" not found, try pulling it first'}, status=404)
        if body.get("tools") and not self.tools:
            return web.json_response({"error": f"registry.ollama.ai/library/{model} does not support tools"},
                                     status=400)
        opts = body.get("options") or {}
        num_ctx = opts.get("num_ctx", DEFAULT_CTX)
        prompt = sum(len(str(m.get("content", "")).split()) + 4 for m in body["messages"])
        if prompt > num_ctx:
            if body.get("truncate") is False:
                return web.json_response({"error": "the input length exceeds the context length"}, status=400)
            prompt = num_ctx  # /v1 and the default: the start of the prompt is silently dropped
        words = ["Hello", " from", " Ollama", "."][: opts.get("num_predict", 4)]
        done = {"model": model, "created_at": "2025-07-07T20:43:37.688511Z", "done": True,
                "done_reason": "length" if len(words) < 4 else "stop", "total_duration": 890771750,
                "prompt_eval_count": prompt, "eval_count": len(words)}
        if body.get("stream") is False:
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(words)}
            if body.get("tools"):
                msg = {"role": "assistant", "content": "",
                       "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Toronto"}}}]}
            return web.json_response({**done, "message": msg})
        resp = web.StreamResponse(headers={"content-type": "application/x-ndjson"})
        await resp.prepare(request)
        for i, w in enumerate(words):
            if self.fail_mid_stream and i == 2:
                await resp.write(orjson.dumps({"error": "llama runner process has terminated: signal: killed"}) + b"\n")
                await resp.write_eof()
                return resp
            await resp.write(orjson.dumps({"model": model, "created_at": "2023-08-04T08:52:19.385406455-07:00",
                                           "message": {"role": "assistant", "content": w}, "done": False}) + b"\n")
        await resp.write(orjson.dumps({**done, "message": {"role": "assistant", "content": ""}}) + b"\n")
        await resp.write_eof()
        return resp


@pytest.fixture
async def ollama():
    s = await OllamaNative().start()
    yield s
    await s.stop()


def native(url: str, **kw) -> ModelSpec:
    return ModelSpec(name="local", provider=Provider.ollama, api="native", base_url=url,
                     **{"model_id": "llama3.2", "context": 8192, **kw})


async def test_plain_call_sets_num_ctx_refuses_truncation_and_maps_usage(ollama, make_dispatcher):
    d = make_dispatcher([native(ollama.url)])
    r = await d.complete({**USER, "temperature": 0.2, "max_tokens": 3, "stop": "\n"}, Routing(chain=["local"]))
    sent = ollama.seen[-1]
    assert sent["stream"] is False and sent["truncate"] is False and sent["shift"] is False
    assert sent["options"] == {"num_ctx": 8192, "temperature": 0.2, "num_predict": 3, "stop": ["\n"]}
    assert r.response["choices"][0]["message"]["content"] == "Hello from Ollama"
    assert r.finish_reason == "length"
    words = len(USER["messages"][0]["content"].split()) + 4  # the server's prompt_eval_count
    assert r.usage == {"prompt_tokens": words, "completion_tokens": 3, "total_tokens": words + 3}


async def test_stream_is_ndjson_with_final_usage(ollama, make_dispatcher):
    d = make_dispatcher([native(ollama.url)])
    s = d.stream({**USER, "stream_options": {"include_usage": True}}, Routing(chain=["local"]))
    chunks = [c async for c in s]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")) == \
        "Hello from Ollama."
    assert ollama.seen[-1]["stream"] is True and ollama.seen[-1]["options"]["num_ctx"] == 8192
    assert s.result.complete and s.result.finish_reason == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 4


async def test_tools_and_tool_results_in_ollamas_shape(ollama, make_dispatcher):
    d = make_dispatcher([native(ollama.url)])
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    r = await d.complete({**USER, "tools": tools}, Routing(chain=["local"]))
    call = r.response["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Toronto"}'}
    assert r.finish_reason == "tool_calls"
    history = {"messages": [*USER["messages"],
                            {"role": "assistant", "content": None, "tool_calls": [call]},
                            {"role": "tool", "tool_call_id": call["id"], "name": "get_weather", "content": "11 C"}],
               "tools": tools}
    await d.complete(history, Routing(chain=["local"]))
    sent = ollama.seen[-1]["messages"]
    assert sent[-2]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Toronto"}}}]
    assert sent[-1] == {"role": "tool", "content": "11 C", "tool_name": "get_weather"}


async def test_prompt_beyond_the_context_is_an_error_and_fails_over(ollama, fleet, make_dispatcher):
    await fleet.add("big", "vllm")
    d = make_dispatcher([native(ollama.url, context=16), fleet.model_spec("big")])
    long = {"messages": [{"role": "user", "content": "word " * 40}]}
    r = await d.complete(long, Routing(chain=["local", "big"]))
    assert r.model == "big"
    assert (r.attempts[0].status, r.attempts[0].reason) == (400, "context_length_exceeded")
    # what /v1 would have done: the same server, asked to truncate, answers from a cut prompt
    assert ollama.seen[-1]["truncate"] is False


async def test_native_errors_are_classified(ollama, fleet, make_dispatcher):
    await fleet.add("spare", "vllm")
    d = make_dispatcher([native(ollama.url, model_id="missing"), fleet.model_spec("spare")])
    r = await d.complete(USER, Routing(chain=["local", "spare"]))
    assert r.model == "spare" and (r.attempts[0].status, r.attempts[0].reason) == (404, "model_not_found")
    ollama.tools = False
    d2 = make_dispatcher([native(ollama.url), fleet.model_spec("spare")])
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    r = await d2.complete({**USER, "tools": tools}, Routing(chain=["local", "spare"]))
    assert r.model == "spare" and r.attempts[0].reason == "capability_missing"
    # a line {"error": ...} inside the stream breaks it: classified, and the stream ends cleanly
    ollama.fail_mid_stream = True
    chunks = [c async for c in d2.stream(USER, Routing(chain=["local"]))]
    assert chunks[-1]["error"]["code"] == "engine_crashed" and chunks[-1]["error"]["type"] == "stream_interrupted"


def test_the_language_declares_it():
    src = '''policy "p" version 1
model local {
  provider ollama
  api native
  base_url "http://127.0.0.1:11434"
  context 8192
  cost 0
}
route default -> local
'''
    p = compile_sources({"p.policy": src})
    assert p.models["local"].api == "native" and p.models["local"].context == 8192
    with pytest.raises(ValueError, match="api native is only for provider ollama"):
        ModelSpec(name="x", provider=Provider.vllm, api="native")


async def test_health_probe_uses_api_tags(ollama, make_dispatcher):
    d = make_dispatcher([native(ollama.url)], health_interval=60)
    from policyengine.dispatch.health import HealthMonitor

    mon = HealthMonitor(d, interval=60)
    tgt = d.targets("local")[0]
    assert await mon.probe(tgt, ollama.url) is True
    with pytest.raises(DispatchError):  # nothing else listens: a refused call, never a crash
        await make_dispatcher([native("http://127.0.0.1:9")]).complete(USER, Routing(chain=["local"]))
