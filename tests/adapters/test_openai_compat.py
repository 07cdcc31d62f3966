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


async def test_server_that_ignores_stream_true(make_dispatcher):
    completion = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole answer"},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}

    async def chat(request: web.Request) -> web.Response:
        return web.json_response(completion)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        d = make_dispatcher([ModelSpec(name="m", provider=Provider.openai, base_url=f"http://127.0.0.1:{port}/v1")])
        s = d.stream(USER, Routing(chain=["m"]))
        chunks = [c async for c in s]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")) == "whole answer"
        assert s.result.complete and s.result.usage["total_tokens"] == 3
    finally:
        await runner.cleanup()
