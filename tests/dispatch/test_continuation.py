"""A cut stream rescued on a model that cannot continue from an assistant prefill.

The primary is a simulated vLLM that cuts its stream; the fallback is a real aiohttp server on
127.0.0.1 that speaks OpenAI chat completions and answers the follow-up turn ("continue from
where it stopped") the ways real models do: cleanly, repeating the tail, starting over, or
with a preamble. It may also refuse a trailing assistant message the way servers without
prefill do (a 400). The client must see one answer, nothing repeated, never a preamble.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web

from policyengine.dispatch.splice import CONTINUE_INSTRUCTION, needs_more, splice
from policyengine.simulate import DEFAULT_ANSWER, Fault
from policyengine.simulate.testing import USER
from policyengine.types import Capabilities, ModelSpec, Provider, Routing

CHAIN = Routing(chain=["primary", "fallback"])
CUT = 4  # content chunks the primary sends before its connection drops (one word each)
SENT = "".join(w + " " for w in DEFAULT_ANSWER.split(" ")[:CUT])
REST = DEFAULT_ANSWER[len(SENT):]


class Continuer:
    """Answers the continuation request in `mode`; records every request body it got."""

    def __init__(self, mode: str, *, reject_prefill: bool = False) -> None:
        self.mode = mode
        self.reject_prefill = reject_prefill
        self.seen: list[dict] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> Continuer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def answer(self, partial: str) -> str:
        return {"clean": REST, "overlap": partial[-14:] + REST, "restart": partial + REST,
                "preamble": "Sure! Here is the rest of the answer: " + REST,
                "different": "Simulated answer: something else entirely, said another way. " + REST}[self.mode]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(body)
        msgs = body["messages"]
        if msgs[-1]["role"] == "assistant" and self.reject_prefill:
            return web.json_response({"error": {"message": "This model does not support assistant message prefill.",
                                                "type": "invalid_request_error", "code": None}}, status=400)
        partial = next(m["content"] for m in reversed(msgs) if m["role"] == "assistant")
        text = self.answer(partial)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "fb",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")

        await send({"role": "assistant", "content": ""})
        for i in range(0, len(text), 7):  # small pieces: the head is judged across several chunks
            await send({"content": text[i:i + 7]})
        await send({}, "stop")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


async def _run(fleet, make_dispatcher, mode: str, *, prefill: bool = False, reject: bool = False):
    p = await fleet.add("primary", "vllm")
    p.add_fault(Fault(kind="stream_cut", after_chunks=CUT))
    fb = await Continuer(mode, reject_prefill=reject).start()
    spec = ModelSpec(name="fallback", provider=Provider.openai, base_url=fb.url,
                     capabilities=Capabilities(prefill=prefill))
    d = make_dispatcher([fleet.model_spec("primary"), spec])
    s = d.stream(USER, CHAIN)
    try:
        chunks = [c async for c in s]
    finally:
        await fb.stop()
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    return s, chunks, text, fb


@pytest.mark.parametrize("mode", ["clean", "overlap", "restart"])
async def test_rescued_by_instruction_without_repeating_anything(fleet, make_dispatcher, mode):
    s, chunks, text, fb = await _run(fleet, make_dispatcher, mode)
    assert text == DEFAULT_ANSWER  # nothing lost, nothing said twice
    assert not any("error" in c for c in chunks) and s.result.complete
    assert s.result.model == "fallback" and s.result.continued_from == ["primary"]
    assert s.continuations == ["instruction"]
    # asked in an ordinary follow-up turn: the partial answer, then the instruction (no prefill)
    sent = fb.seen[0]["messages"]
    assert sent[-2] == {"role": "assistant", "content": SENT}
    assert sent[-1] == {"role": "user", "content": CONTINUE_INSTRUCTION}
    assert len({c["id"] for c in chunks if c.get("choices")}) == 1  # one stream for the client
    assert any(a.reason == "no_prefill_support" and a.skipped for a in s.result.attempts)


async def test_fallback_that_refuses_prefill_is_asked_the_other_way(fleet, make_dispatcher):
    s, _chunks, text, fb = await _run(fleet, make_dispatcher, "clean", prefill=True, reject=True)
    assert text == DEFAULT_ANSWER and s.result.complete and s.continuations == ["instruction"]
    assert fb.seen[0]["messages"][-1]["role"] == "assistant"  # prefill tried first, refused (400)
    assert fb.seen[1]["messages"][-1]["content"] == CONTINUE_INSTRUCTION
    assert [(a.model, a.status, a.error_class) for a in s.result.attempts[2:]] == [
        ("fallback", 400, "failover"), ("fallback", 200, None)]


@pytest.mark.parametrize("mode", ["preamble", "different"])
async def test_a_reply_that_does_not_continue_the_text_ends_with_a_clean_error(fleet, make_dispatcher, mode):
    s, chunks, text, _fb = await _run(fleet, make_dispatcher, mode)
    assert text == SENT  # none of the reply reached the client
    assert chunks[-1]["error"]["type"] == "stream_interrupted" and chunks[-1]["error"]["code"] == "stream_cut"
    assert "did not continue the text" in chunks[-1]["error"]["message"]
    assert s.result.complete is False and s.result.finish_reason is None
    assert s.result.attempts[-1].reason == "continuation_rejected"


async def test_prefill_model_is_still_preferred(fleet, make_dispatcher):
    s, _chunks, text, fb = await _run(fleet, make_dispatcher, "clean", prefill=True)
    assert text == DEFAULT_ANSWER and s.continuations == ["prefill"] and len(fb.seen) == 1
    assert fb.seen[0]["messages"][-1] == {"role": "assistant", "content": SENT}


def test_splice_rules():
    sent = "The quick brown fox jumps over "
    assert splice(sent, "the lazy dog.") == "the lazy dog."
    assert splice(sent, "jumps over the lazy dog.") == "the lazy dog."  # a repeated tail is dropped
    assert splice(sent, sent + "the lazy dog.") == "the lazy dog."  # started over: the repeat is dropped
    assert splice(sent, "The quick brown fox leaps across a dog.") is None  # a different answer
    assert splice(sent, "Sure, here is the rest: the lazy dog.") is None
    assert splice(sent, "over ") == "over "  # under MIN_OVERLAP: kept as it is
    assert needs_more(sent, "the") and not needs_more("ab", "the lazy")
    assert needs_more(sent, sent[:30])  # looks like a restart: wait until it is past the partial text
