"""Errors real servers send that a status code alone misreads: in-band errors inside HTTP 200
streams, context-length wordings of newer runtimes, a request larger than the TPM limit, spend
caps, safety blocks sent as a 200, a model lacking a capability.

Every fixture names where its wording comes from (the server's source at a commit, its API
reference, or a public issue quoting the server's answer). Bodies are short paraphrases of the
envelope with the server's own message text; nothing here is copied beyond the message.
Classification is unit-tested; where the path matters (streams, 200 bodies) a real aiohttp
server on 127.0.0.1 sends the bytes and the dispatcher acts on them.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from aiohttp import web
from policyengine.adapters import classify_error

from policyengine.dispatch import DispatchError
from policyengine.simulate.testing import USER
from policyengine.types import EnvRef, ModelSpec, Provider, Routing

_LLAMA_SERVER_CTX = {"error": {"code": 400, "message": "request (9412 tokens) exceeds the available context size "
                               "(8192 tokens), try increasing it", "type": "exceed_context_size_error",
                               "n_prompt_tokens": 9412, "n_ctx": 8192}}

# (name, source, provider, status, body, class, reason)
FIXTURES: list[tuple[str, str, str, int | None, Any, str, str]] = [
    # ---- in-band errors inside a 200 stream (status None: there is no HTTP error status) ----
    ("tgi-openai-event-overloaded",
     "huggingface/text-generation-inference@db931fcf router/src/infer/mod.rs InferError::into_openai_event "
     "(APIError{message, http_status_code: 422}; #[error(\"Model is overloaded\")])",
     "tgi", None, 'data: {"error":{"message":"Model is overloaded","http_status_code":422}}', "retry", "overloaded"),
    ("tgi-generate-stream-overloaded",
     "huggingface/text-generation-inference@db931fcf router/src/server.rs impl From<InferError> for Event "
     "(ErrorResponse{error, error_type}; error_type() -> \"overloaded\")",
     "tgi", None, 'data: {"error":"Model is overloaded","error_type":"overloaded"}', "retry", "overloaded"),
    ("tgi-openai-event-generation",
     "huggingface/text-generation-inference@db931fcf router/src/infer/mod.rs "
     "(#[error(\"Request failed during generation: {0}\")])",
     "tgi", None, {"error": {"message": "Request failed during generation: Server error: CUDA out of memory. "
                             "Tried to allocate 2.00 GiB", "http_status_code": 422}}, "failover", "engine_crashed"),
    ("responses-failed-server-error",
     "OpenAI API reference, Responses streaming events: response.failed "
     "(platform.openai.com/docs/api-reference/responses-streaming/response/failed)",
     "openai", None, {"type": "response.failed", "sequence_number": 7, "response": {
         "id": "resp_1", "object": "response", "status": "failed",
         "error": {"code": "server_error", "message": "The model failed to generate a response."}}},
     "failover", "server_error"),
    ("responses-failed-rate-limit",
     "OpenAI API reference, Responses object: error.code values (rate_limit_exceeded)",
     "openai", None, {"type": "response.failed", "response": {"status": "failed", "error": {
         "code": "rate_limit_exceeded", "message": "Rate limit reached for gpt-4o"}}}, "retry", "rate_limited"),
    ("openai-sse-error-event-overloaded",
     "OpenRouter API reference, errors: mid-stream errors are sent as an SSE data event with HTTP 200 "
     "(openrouter.ai/docs/api-reference/errors)",
     "openai", None, {"id": "cmpl-1", "object": "chat.completion.chunk", "error": {
         "code": "server_error", "message": "The server is overloaded, please try again later"},
         "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]}, "retry", "overloaded"),
    # ---- context length in newer runtimes' wording (failover, never retry) ----
    ("ollama-llama-server-context",
     "ollama/ollama@fb307609 llm/llama_server.go statusErrorMessage relays llama-server's body as the error "
     "string; llama.cpp tools/server exceed_context_size_error (\"exceeds the available context size\")",
     "ollama", 400, {"error": json.dumps(_LLAMA_SERVER_CTX)}, "failover", "context_length_exceeded"),
    ("ollama-v1-llama-server-context",
     "ollama/ollama@fb307609 (same body behind /v1: openai.NewError wraps the message)",
     "ollama", 400, {"error": {"message": json.dumps(_LLAMA_SERVER_CTX), "type": "api_error", "param": None,
                               "code": None}}, "failover", "context_length_exceeded"),
    ("ollama-runner-keep-exceeds-context",
     "ollama/ollama@v0.19.0 runner/ollamarunner/cache.go ShiftCacheSlot "
     "(\"unable to shift context - keep exceeds context (keep: %v context: %v)\")",
     "ollama", 500, {"error": "unable to shift context - keep exceeds context (keep: 5000 context: 4096)"},
     "failover", "context_length_exceeded"),
    ("llama-cpp-context",
     "llama.cpp tools/server error type exceed_context_size_error (quoted in Ollama's isEmbeddingInputLimitError)",
     "lmstudio", 400, _LLAMA_SERVER_CTX, "failover", "context_length_exceeded"),
    ("lmstudio-n-keep",
     "anomalyco/opencode#11141 quoting LM Studio 0.4.6: \"Cannot truncate prompt with n_keep (15028) >= n_ctx (7424)\"",
     "lmstudio", 400, {"error": {"message": "Cannot truncate prompt with n_keep (15028) >= n_ctx (7424)",
                                 "type": "invalid_request_error", "param": None, "code": None}},
     "failover", "context_length_exceeded"),
    # ---- one request larger than the tokens-per-minute limit: failover, not retry ----
    ("openai-request-over-tpm",
     "Aider-AI/aider#1880 quoting OpenAI's 429 body (type tokens, code rate_limit_exceeded)",
     "openai", 429, {"error": {"message": "Request too large for gpt-4o in organization org-x on tokens per min "
                               "(TPM): Limit 30000, Requested 36278. The input or output tokens must be reduced in "
                               "order to run successfully.", "type": "tokens", "param": None,
                               "code": "rate_limit_exceeded"}}, "failover", "request_too_large"),
    ("groq-request-over-tpm",
     "cottongeeks/podscript#20 quoting Groq's 413 body",
     "openai", 413, {"error": {"message": "Request too large for model `llama-3.3-70b-versatile` in organization "
                               "`org_01` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested "
                               "10338, please reduce your message size and try again.", "type": "tokens",
                               "code": "rate_limit_exceeded"}}, "failover", "request_too_large"),
    ("openai-ordinary-tpm-still-retries",
     "OpenAI rate-limit guide: an ordinary TPM 429 (Rate limit reached ... Please try again in 2s)",
     "openai", 429, {"error": {"message": "Rate limit reached for gpt-4o on tokens per min (TPM): Limit 30000, "
                               "Used 29000, Requested 2000. Please try again in 2s.", "type": "tokens",
                               "code": "rate_limit_exceeded"}}, "retry", "rate_limited"),
    # ---- spend / usage caps: failover ----
    ("litellm-budget",
     "BerriAI/litellm#14144 and #22726 (proxy BudgetExceededError: \"Budget has been exceeded! Current cost\")",
     "openai", 400, {"error": {"message": "Budget has been exceeded! Current cost: 26.075, Max budget: 0.25",
                               "type": "budget_exceeded", "param": None, "code": "400"}}, "failover", "quota_exhausted"),
    ("litellm-budget-429",
     "BerriAI/litellm PR #37000 (budget errors return 429 with error.type budget_exceeded)",
     "openai", 429, {"error": {"message": "ExceededBudget: End User=u1 over budget. Spend=0.0009, Budget=0.0001",
                               "type": "budget_exceeded", "param": None, "code": "429"}}, "failover", "quota_exhausted"),
    ("anthropic-usage-limit",
     "anthropics/claude-code#2127 quoting the API's 400 invalid_request_error",
     "openai", 400, {"type": "error", "error": {"type": "invalid_request_error", "message": "You have reached your "
                     "specified API usage limits. You will regain access on 2025-07-01 at 00:00 UTC."}},
     "failover", "quota_exhausted"),
    ("openrouter-402",
     "OpenRouter API reference, errors: 402 when the account or API key has insufficient credits",
     "openai", 402, {"error": {"code": 402, "message": "This request requires more credits, or fewer max_tokens. "
                               "You requested up to 4096 tokens, but can only afford 1200."}}, "failover", "quota_exhausted"),
    # ---- a model lacking a requested capability: failover ----
    ("ollama-no-tools",
     "ollama/ollama@fb307609 server/images.go CheckCapabilities (errCapabilities \"does not support\" + "
     "errCapabilityTools \"tools\")",
     "ollama", 400, {"error": "registry.ollama.ai/library/gemma:2b does not support tools"},
     "failover", "capability_missing"),
    ("ollama-v1-no-tools",
     "ollama/ollama@fb307609 (the same through /v1, api_error envelope)",
     "ollama", 400, {"error": {"message": "registry.ollama.ai/library/llama3:latest does not support tools",
                               "type": "api_error", "param": None, "code": None}}, "failover", "capability_missing"),
    ("ollama-no-thinking",
     "ollama/ollama@fb307609 server/routes.go ChatHandler (\"%q does not support thinking\")",
     "ollama", 400, {"error": '"gemma3:4b" does not support thinking'}, "failover", "capability_missing"),
    ("vllm-auto-tool-choice",
     "vLLM OpenAI server: \"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set",
     "vllm", 400, {"error": {"message": '"auto" tool choice requires --enable-auto-tool-choice and '
                             "--tool-call-parser to be set", "type": "BadRequestError", "param": None, "code": 400}},
     "failover", "capability_missing"),
    # ---- a safety block sent as HTTP 200 with no candidates: fatal ----
    ("gemini-prompt-blocked",
     "Vertex AI docs, process blocked responses: promptFeedback set, candidates not set; vercel/ai#4235 body",
     "vertex", 200, {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                     "usageMetadata": {"promptTokenCount": 12559, "totalTokenCount": 12559},
                     "modelVersion": "gemini-1.5-flash-002"}, "fatal", "content_filter"),
    # ---- unchanged: a generic 500 is a failover after one more try, a crash at once ----
    ("openai-generic-500",
     "OpenAI error codes guide: 500 \"The server had an error while processing your request\"",
     "openai", 500, {"error": {"message": "The server had an error while processing your request. Sorry about that!",
                               "type": "server_error", "param": None, "code": None}}, "failover", "server_error"),
]


@pytest.mark.parametrize(("name", "source", "provider", "status", "body", "cls", "reason"), FIXTURES,
                         ids=[f[0] for f in FIXTURES])
def test_real_error_bodies(name, source, provider, status, body, cls, reason):
    assert source  # every fixture says where its wording comes from
    raw = body if isinstance(body, str) else orjson.dumps(body)
    got = classify_error(status, {}, raw, provider)
    assert (got.error_class, got.reason) == (cls, reason), got


def test_generic_500_is_retried_once_crash_is_not():
    generic = classify_error(500, {}, orjson.dumps({"error": {"message": "The server had an error", "type": "server_error"}}))
    assert (generic.error_class, generic.retries) == ("failover", 1)
    assert classify_error(500, {}, b"").retries == 1
    crash = classify_error(500, {}, orjson.dumps({"error": "llama runner process has terminated: signal: killed"}))
    assert (crash.reason, crash.retries) == ("engine_crashed", 0)
    assert classify_error(502, {}, b"").retries == 0  # a bad gateway is not a generic 500


# ---------------------------------------------------------------------------- real servers


class Scripted:
    """A real aiohttp server on 127.0.0.1: each POST takes the next scripted answer of its route
    (a list of SSE `(event, data)` pairs, or a `(status, json)` plain answer); the last one repeats."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Any]] = {}
        self.calls: dict[str, int] = {}
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Scripted:
        app = web.Application()
        app.router.add_post("/{name}/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def base(self, name: str, *script: Any) -> str:
        self.scripts[name] = list(script)
        self.calls[name] = 0
        return f"{self.url}/{name}/v1"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        await request.read()
        n = self.calls[name]
        self.calls[name] = n + 1
        step = self.scripts[name][min(n, len(self.scripts[name]) - 1)]
        if isinstance(step, tuple):
            return web.json_response(step[1], status=step[0])
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for event, data in step:
            head = f"event: {event}\n".encode() if event else b""
            await resp.write(head + b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data)) + b"\n\n")
        await resp.write_eof()
        return resp


def _chunk(text: str | None = None, finish: str | None = None) -> dict:
    delta = {"content": text} if text is not None else {}
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


GOOD = [(None, _chunk("Hello")), (None, _chunk(" there.", "stop")), (None, b"[DONE]")]


@pytest.fixture
async def scripted():
    s = await Scripted().start()
    yield s
    await s.stop()


def _spec(name: str, base: str, provider: Provider = Provider.openai) -> ModelSpec:
    return ModelSpec(name=name, provider=provider, base_url=base)


async def _text(stream) -> str:
    out = ""
    async for c in stream:
        if c.get("choices"):
            out += c["choices"][0]["delta"].get("content") or ""
    return out


async def test_in_band_overload_before_the_first_token_is_retried_on_the_same_model(scripted, make_dispatcher):
    """Classified like a 503 overload: retried on the same model when the route waits for it..."""
    tgi = scripted.base("tgi", [(None, {"error": {"message": "Model is overloaded", "http_status_code": 422}})], GOOD)
    spare = scripted.base("spare", GOOD)
    d = make_dispatcher([_spec("tgi", tgi, Provider.tgi), _spec("spare", spare)])
    s = d.stream(USER, Routing(chain=["tgi", "spare"], rate_limit_wait=2.0))
    assert await _text(s) == "Hello there."
    assert s.result.model == "tgi" and scripted.calls["spare"] == 0
    assert [(a.error_class, a.reason) for a in s.result.attempts] == [("retry", "overloaded"), (None, None)]


async def test_in_band_overload_before_the_first_token_moves_to_a_healthy_fallback(scripted, make_dispatcher):
    """...and by default, while a healthy fallback can answer now, sent there at once."""
    tgi = scripted.base("tgi", [(None, {"error": {"message": "Model is overloaded", "http_status_code": 422}})], GOOD)
    spare = scripted.base("spare", GOOD)
    d = make_dispatcher([_spec("tgi", tgi, Provider.tgi), _spec("spare", spare)])
    s = d.stream(USER, Routing(chain=["tgi", "spare"]))
    assert await _text(s) == "Hello there."
    assert s.result.model == "spare" and scripted.calls["spare"] == 1
    assert [(a.error_class, a.reason) for a in s.result.attempts] == [("retry", "overloaded"), (None, None)]


async def test_sse_error_event_with_context_error_fails_over(scripted, make_dispatcher):
    ctx = {"error": {"message": "Cannot truncate prompt with n_keep (15028) >= n_ctx (7424)",
                     "type": "invalid_request_error"}}
    lm = scripted.base("lm", [("error", ctx)])
    spare = scripted.base("spare", GOOD)
    d = make_dispatcher([_spec("lm", lm, Provider.lmstudio), _spec("spare", spare)])
    s = d.stream(USER, Routing(chain=["lm", "spare"]))
    assert await _text(s) == "Hello there."
    assert s.result.model == "spare" and scripted.calls["lm"] == 1
    assert s.result.attempts[0].reason == "context_length_exceeded"


async def test_responses_style_failure_mid_stream_is_never_relayed_as_a_chunk(scripted, make_dispatcher):
    failed = {"type": "response.failed", "response": {"status": "failed", "error": {
        "code": "server_error", "message": "The model failed to generate a response."}}}
    up = scripted.base("up", [(None, _chunk("Hel")), ("response.failed", failed)])
    d = make_dispatcher([_spec("up", up)])
    chunks = [c async for c in d.stream(USER, Routing(chain=["up"]))]
    assert not any(c.get("type") == "response.failed" for c in chunks)  # never passed on as if it were a chunk
    assert chunks[-1]["error"]["code"] == "server_error" and chunks[-1]["error"]["type"] == "stream_interrupted"


async def test_null_error_field_is_not_an_error(scripted, make_dispatcher):
    ok = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "error": None,
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}]}
    up = scripted.base("up", (200, ok))
    d = make_dispatcher([_spec("up", up)])
    assert (await d.complete(USER, Routing(chain=["up"]))).response["choices"][0]["message"]["content"] == "fine"


async def test_safety_block_sent_as_200_is_fatal(scripted, make_dispatcher):
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9}}
    withheld = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}]}
    gem = scripted.base("gem", (200, blocked))
    azure = scripted.base("azure", (200, withheld))
    spare = scripted.base("spare", (200, withheld))
    d = make_dispatcher([_spec("gem", gem), _spec("azure", azure), _spec("spare", spare)])
    for first in ("gem", "azure"):
        with pytest.raises(DispatchError) as exc:
            await d.complete(USER, Routing(chain=[first, "spare"]))
        assert (exc.value.error_class, exc.value.reason) == ("fatal", "content_filter")
    assert scripted.calls["spare"] == 0  # no other model is asked the same thing


async def test_gemini_candidate_stopped_by_safety_with_no_content_is_fatal(make_dispatcher):
    """Gemini API (generateContent): a response blocked after generation has candidates whose
    finishReason is SAFETY and no content (Vertex AI docs, "process blocked responses")."""
    blocked = {"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": [
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]}],
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}}
    seen: list[str] = []

    async def gen(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        if "streamGenerateContent" in request.path:
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"data: " + orjson.dumps(blocked) + b"\r\n\r\n")
            await resp.write_eof()
            return resp
        return web.json_response(blocked)

    app = web.Application()
    app.router.add_post("/generativelanguage/v1beta/models/{tail:.*}", gen)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        spec = ModelSpec(name="gemini", provider=Provider.vertex, model_id="gemini-2.0-flash",
                         base_url=f"http://127.0.0.1:{port}/generativelanguage/v1beta", keys=(EnvRef(name="GK"),))
        d = make_dispatcher([spec], environ={"GK": "AIza-test"})
        with pytest.raises(DispatchError) as exc:
            await d.complete(USER, Routing(chain=["gemini"]))
        assert (exc.value.error_class, exc.value.reason) == ("fatal", "content_filter")
        with pytest.raises(DispatchError) as exc:
            await _text(d.stream(USER, Routing(chain=["gemini"])))
        assert (exc.value.error_class, exc.value.reason) == ("fatal", "content_filter")
        assert len(seen) == 2  # one call each: a fatal error is not retried
    finally:
        await runner.cleanup()


async def test_capability_missing_skips_the_model_without_tripping_its_breaker(scripted, make_dispatcher):
    no_tools = scripted.base("small", (400, {"error": "registry.ollama.ai/library/gemma:2b does not support tools"}))
    spare = scripted.base("spare", (200, {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                                          "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                                       "finish_reason": "stop"}]}))
    d = make_dispatcher([_spec("small", no_tools, Provider.ollama), _spec("spare", spare)])
    body = {**USER, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}
    for _ in range(4):
        r = await d.complete(body, Routing(chain=["small", "spare"]))
        assert r.model == "spare" and r.attempts[0].reason == "capability_missing"
    assert scripted.calls["small"] == 4  # not retried, and no breaker opened on a healthy server
    assert (await d.status())["breakers"] == [] or all(b["state"] == "closed" for b in (await d.status())["breakers"])


async def test_request_over_the_tpm_limit_fails_over_without_waiting(scripted, make_dispatcher):
    big = {"error": {"message": "Request too large for gpt-4o in organization org-x on tokens per min (TPM): "
                     "Limit 30000, Requested 36278. The input or output tokens must be reduced in order to run "
                     "successfully.", "type": "tokens", "param": None, "code": "rate_limit_exceeded"}}
    main = scripted.base("main", (429, big))
    spare = scripted.base("spare", GOOD)
    d = make_dispatcher([_spec("main", main), _spec("spare", spare)])
    s = d.stream(USER, Routing(chain=["main", "spare"]))
    assert await _text(s) == "Hello there."
    assert scripted.calls["main"] == 1 and s.result.attempts[0].reason == "request_too_large"
    assert (await d.status())["cooldowns"] == []  # the model still serves smaller requests
