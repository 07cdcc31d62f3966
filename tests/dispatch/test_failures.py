"""Each failure the issue lists, reproduced by a real HTTP server on 127.0.0.1.

Every test asserts what the caller got and what the upstreams saw: how many
requests, with which key, and how far apart (no hammering, no blind retries).
"""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from policyengine.dispatch import DispatchError
from policyengine.simulate import DEFAULT_ANSWER, Fault
from policyengine.simulate.testing import USER
from policyengine.types import Routing

CHAIN = Routing(chain=["primary", "fallback"])
# the policy chose to wait out a short rate limit on the primary (`on rate_limit wait up to 2s`)
WAITING = Routing(chain=["primary", "fallback"], rate_limit_wait=2.0)


def gaps(reqs) -> list[float]:
    return [b.t - a.t for a, b in itertools.pairwise(reqs)]


class _CeilingJitter:
    """Stands in for the dispatcher's `random`: every backoff draw is its ceiling, and recorded."""

    def __init__(self) -> None:
        self.draws: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.draws.append((a, b))
        return b


@pytest.fixture
def jitter(monkeypatch) -> _CeilingJitter:
    j = _CeilingJitter()
    monkeypatch.setattr("policyengine.dispatch.dispatcher.random", j)
    return j


async def two(fleet, pflavour="vllm", fflavour="ollama", **pkw):
    p = await fleet.add("primary", pflavour, **pkw)
    f = await fleet.add("fallback", fflavour)
    return p, f


async def test_429_with_retry_after_and_a_healthy_fallback_moves_on_at_once(fleet, make_dispatcher):
    """The default: waiting is not worth it while a healthy fallback can answer now. The primary
    cools down for its Retry-After, so the requests after this one skip it without a call."""
    p, f = await two(fleet)
    p.add_fault(Fault(kind="rate_limit", retry_after=1, times=None))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    r = await d.complete(USER, CHAIN)
    assert r.model == "fallback"
    assert [(a.status, a.reason) for a in r.attempts] == [(429, "rate_limited"), (200, None)]
    assert len(p.seen()) == 1 and len(f.seen()) == 1  # no retry on the primary, no wait
    assert f.seen()[0].t - p.seen()[0].t < 0.9  # well within the 1 s it asked for
    r2 = await d.complete(USER, CHAIN)
    assert r2.model == "fallback" and len(p.seen()) == 1
    assert r2.attempts[0].skipped and r2.attempts[0].reason == "cooldown:rate_limited"


async def test_a_retry_after_longer_than_the_policy_waits_moves_on(fleet, make_dispatcher):
    p, f = await two(fleet)
    p.add_fault(Fault(kind="rate_limit", retry_after=1))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    r = await d.complete(USER, Routing(chain=["primary", "fallback"], rate_limit_wait=0.2))
    assert r.model == "fallback" and len(p.seen()) == 1 and len(f.seen()) == 1


async def test_429_with_retry_after_waits_when_the_fallback_is_cooling_down(fleet, make_dispatcher):
    """No healthy fallback: waiting the Retry-After out is the only way to an answer."""
    p, f = await two(fleet)
    p.add_fault(Fault(kind="rate_limit", retry_after=0.4))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    await d.state.set_cooldown("model:fallback", 30, "rate_limited")
    r = await d.complete(USER, CHAIN)
    assert r.model == "primary" and f.seen() == []
    assert len(p.seen()) == 2 and gaps(p.seen())[0] >= 0.4
    r = await d.complete(USER, Routing(chain=["primary"]))  # and with no fallback at all
    assert r.model == "primary"


async def test_429_with_retry_after_waits_then_same_model(fleet, make_dispatcher):
    p, f = await two(fleet)
    p.add_fault(Fault(kind="rate_limit", retry_after=0.4))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    r = await d.complete(USER, WAITING)
    assert r.model == "primary"
    assert [(a.status, a.error_class, a.reason) for a in r.attempts] == [(429, "retry", "rate_limited"), (200, None, None)]
    assert len(p.seen()) == 2 and f.seen() == []
    assert gaps(p.seen())[0] >= 0.4  # honoured Retry-After, no earlier retry


async def test_429_retry_after_ms_and_http_date(fleet, make_dispatcher):
    p, f = await two(fleet, "openai")
    p.add_fault(Fault(kind="rate_limit", retry_after_ms=300))
    p.add_fault(Fault(kind="rate_limit", retry_after=1, retry_after_http_date=True))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    r = await d.complete(USER, WAITING)
    assert r.model == "primary" and len(p.seen()) == 3
    g = gaps(p.seen())
    assert g[0] >= 0.3
    # an HTTP date has 1 s resolution: the date sent is at least the next whole second after the
    # 429 arrived, and the retry waits until then (never earlier), but no longer than 1 s
    assert p.seen()[2].wall >= math.floor(p.seen()[1].wall + 1) - 0.01
    assert g[1] < 1.5
    assert f.seen() == []


async def test_429_without_retry_after_backs_off_then_cools_down(fleet, make_dispatcher, jitter):
    p, _f = await two(fleet)
    p.add_fault(Fault(kind="rate_limit", times=None))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    r = await d.complete(USER, WAITING)
    assert r.model == "fallback"
    assert len(p.seen()) == 3  # max_attempts, then move on
    # full jitter under an exponential ceiling (backoff_base 0.05, doubling): one draw per 429
    assert jitter.draws == [(0, 0.05), (0, 0.1), (0, 0.2)]
    g = gaps(p.seen())
    assert g[0] >= 0.05 and g[1] >= 0.1
    # the primary is now cooling down: the next request does not touch it
    r2 = await d.complete(USER, CHAIN)
    assert r2.model == "fallback" and len(p.seen()) == 3
    assert r2.attempts[0].skipped and r2.attempts[0].reason == "cooldown:rate_limited"
    status = await d.status()
    assert [(c["scope"], c["reason"]) for c in status["cooldowns"]] == [("model:primary", "rate_limited")]


async def test_500_once_fails_over_and_primary_stays_in_use(fleet, make_dispatcher):
    p, f = await two(fleet)
    p.add_fault(Fault(kind="error", status=500))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    r = await d.complete(USER, CHAIN)
    assert r.model == "fallback"
    assert (r.attempts[0].status, r.attempts[0].error_class) == (500, "failover")
    assert len(p.seen()) == 1 and len(f.seen()) == 1  # a crash is not retried on the same model
    r2 = await d.complete(USER, CHAIN)
    assert r2.model == "primary"


async def test_generic_500_is_retried_once_on_the_same_model(fleet, make_dispatcher):
    """A 500 with no engine-crash marker (OpenAI's "The server had an error ...", an empty body)
    is tried once more on the same model; a second one fails over; a crash body fails over at once."""
    p, f = await two(fleet, "openai", "vllm")
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    p.add_fault(Fault(kind="error", status=500, times=1))
    r = await d.complete(USER, CHAIN)
    assert r.model == "primary" and len(p.seen()) == 2 and f.seen() == []
    assert [(a.status, a.error_class, a.reason) for a in r.attempts] == [(500, "retry", "server_error"),
                                                                        (200, None, None)]
    p.add_fault(Fault(kind="error", status=500, times=2, body=""))  # no body at all: still generic
    r = await d.complete(USER, CHAIN)
    assert r.model == "fallback" and len(p.seen()) == 4
    assert [(a.status, a.error_class) for a in r.attempts] == [(500, "retry"), (500, "failover"), (200, None)]
    # streams take the same path when the error comes before the first chunk
    p.add_fault(Fault(kind="error", status=500, times=1))
    s = d.stream(USER, CHAIN)
    text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in s if c.get("choices")])
    assert text and s.result.model == "primary"
    crash = {"error": {"message": "EngineCore encountered an issue. See stack trace (above) for the root cause.",
                       "type": "InternalServerError", "param": None, "code": 500}}
    p.add_fault(Fault(kind="error", status=500, times=1, body=crash))
    n = len(p.seen())
    r = await d.complete(USER, CHAIN)
    assert r.model == "fallback" and len(p.seen()) == n + 1  # a crashed engine is not asked again
    assert (r.attempts[0].error_class, r.attempts[0].reason) == ("failover", "engine_crashed")


async def test_503_with_a_healthy_fallback_moves_on_at_once(fleet, make_dispatcher):
    """An overload is of the retry class like a rate limit: while a healthy fallback can answer now,
    backing off on the overloaded model is not the default. One attempt, no backoff, and the
    model cools down (`cooldown_default`), so the requests after it skip it without a call."""
    p, f = await two(fleet, "ollama", "vllm")
    p.add_fault(Fault(kind="unavailable", times=None))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    r = await d.complete(USER, CHAIN)
    assert r.model == "fallback"
    assert [(a.status, a.reason) for a in r.attempts] == [(503, "overloaded"), (200, None)]
    assert len(p.seen()) == 1 and len(f.seen()) == 1  # no second try, so no backoff slept on the primary
    for _ in range(3):
        r = await d.complete(USER, CHAIN)
        assert r.model == "fallback" and r.attempts[0].reason == "cooldown:overloaded"
    assert len(p.seen()) == 1  # cooled down: not hammered


@pytest.mark.parametrize("routing", [WAITING, Routing(chain=["primary"])], ids=["the route waits", "no fallback"])
async def test_503_persisting_retries_with_backoff_then_fails_over(fleet, make_dispatcher, jitter, routing):
    """A route that waits (`on rate_limit wait up to`), or a chain with nowhere else to go: the
    overloaded model is tried again after a backoff with full jitter, then cooled down."""
    p, _f = await two(fleet, "ollama", "vllm")
    p.add_fault(Fault(kind="unavailable", times=None))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    if routing.chain == ["primary"]:
        with pytest.raises(DispatchError):
            await d.complete(USER, routing)
    else:
        assert (await d.complete(USER, routing)).model == "fallback"
    assert jitter.draws == [(0, 0.05), (0, 0.1), (0, 0.2)]
    g = gaps(p.seen())
    assert len(p.seen()) == 3 and g[0] >= 0.05 and g[1] >= 0.1
    for _ in range(3):
        assert (await d.complete(USER, CHAIN)).model == "fallback"
    assert len(p.seen()) == 3  # cooled down: not hammered


async def test_tcp_reset_before_headers(fleet, make_dispatcher):
    p, f = await two(fleet)
    p.add_fault(Fault(kind="reset"))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    r = await d.complete(USER, CHAIN)
    assert r.model == "fallback"
    assert r.attempts[0].reason == "connection_reset" and r.attempts[0].status is None
    assert len(p.seen()) == 1 and len(f.seen()) == 1


async def test_no_response_at_all_is_bounded_by_the_attempt_budget(fleet, make_dispatcher):
    p, _f = await two(fleet)
    p.add_fault(Fault(kind="hang", times=None))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")], attempt_timeout=0.5)
    r = await d.complete(USER, CHAIN)
    assert r.model == "fallback"
    assert r.attempts[0].reason == "timeout" and r.attempts[0].latency_ms >= 500
    assert len(p.seen()) == 1


async def test_everything_silent_ends_at_the_deadline(fleet, make_dispatcher):
    p, f = await two(fleet)
    for s in (p, f):
        s.add_fault(Fault(kind="hang", times=None))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")], attempt_timeout=5, deadline=0.8)
    with pytest.raises(DispatchError) as ei:
        await d.complete(USER, CHAIN)
    # the primary's attempt is clipped to the deadline, so it times out exactly there: the
    # fallback is never called and the run ends with deadline_exceeded
    assert ei.value.error_class == "failover" and ei.value.reason == "deadline_exceeded"
    assert [(a.model, a.reason) for a in ei.value.attempts] == [("primary", "timeout")]
    assert len(p.seen()) == 1 and f.seen() == []


async def test_slow_first_token_streams_from_fallback(fleet, make_dispatcher):
    p, _f = await two(fleet)
    p.add_fault(Fault(kind="slow_first_token", delay=5.0))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")], first_token_timeout=1.0)
    s = d.stream(USER, CHAIN)
    chunks = [c async for c in s]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert text == DEFAULT_ANSWER
    assert s.result.model == "fallback" and s.result.complete
    assert s.result.attempts[0].reason == "first_token_timeout"
    assert len(p.seen()) == 1


@pytest.mark.parametrize(("kind", "reason", "status"), [
    ("stream_cut", "stream_cut_mid_stream", None),
    ("stall", "idle_timeout_mid_stream", None),
    ("malformed", "malformed_chunk_mid_stream", None),
    ("stream_error", "engine_crashed_mid_stream", 500),
], ids=["stream_cut", "stall", "malformed", "stream_error"])
async def test_broken_stream_continues_on_prefill_model(fleet, make_dispatcher, kind, reason, status):
    p, f = await two(fleet)
    p.add_fault(Fault(kind=kind, after_chunks=4, delay=5.0))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback", capabilities={"prefill": True})])
    s = d.stream(USER, CHAIN)
    chunks = [c async for c in s]
    assert not any("error" in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert text == DEFAULT_ANSWER  # nothing lost, nothing repeated
    assert sum(1 for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason")) == 1
    assert s.result.model == "fallback" and s.result.continued_from == ["primary"] and s.result.complete
    assert [(a.model, a.status, a.error_class, a.reason) for a in s.result.attempts] == [
        ("primary", 200, None, None), ("primary", status, "failover", reason), ("fallback", 200, None, None)]
    assert (await d.state.breaker("primary")).failures == 1  # the break counts against the primary
    # the fallback was asked to continue from exactly what the client already had
    sent = "".join(DEFAULT_ANSWER.split(" ")[i] + " " for i in range(4))
    assert f.seen()[0].prefill == sent
    assert len({c["id"] for c in chunks}) == 1  # one stream id for the client


async def test_broken_stream_without_prefill_ends_with_inband_error(fleet, make_dispatcher):
    p, f = await two(fleet)
    p.add_fault(Fault(kind="stream_cut", after_chunks=3))
    # no prefill support, and the instruction rescue (tests/dispatch/test_continuation.py) turned off
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")], continue_without_prefill=False)
    s = d.stream(USER, CHAIN)
    chunks = [c async for c in s]
    assert "error" in chunks[-1] and chunks[-1]["error"]["code"] == "stream_cut"
    assert not any(c.get("choices") and c["choices"][0].get("finish_reason") for c in chunks[:-1])
    assert s.result.complete is False and s.result.finish_reason is None
    assert f.seen() == []  # nothing to continue on: no request wasted


@pytest.mark.parametrize("hold", [True, False], ids=["socket-held-open", "socket-closed"])
async def test_missing_done_is_finalised_promptly(fleet, make_dispatcher, hold):
    p, f = await two(fleet)
    p.add_fault(Fault(kind="no_done", hold=hold, delay=30.0))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    s = d.stream({**USER, "stream_options": {"include_usage": True}}, CHAIN)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    chunks = [c async for c in s]
    assert loop.time() - t0 < 10  # not held for the 30 s the upstream keeps the socket open
    # the simulator sends one token per content chunk
    content_chunks = sum(1 for c in chunks if c.get("choices") and c["choices"][0]["delta"].get("content"))
    assert s.result.complete and s.result.finish_reason == "stop"
    assert content_chunks > 0 and s.result.usage["completion_tokens"] == content_chunks
    assert chunks[-1]["usage"]  # client asked for usage and got it
    assert f.seen() == []


async def test_context_length_exceeded_skips_too_small_models(fleet, make_dispatcher):
    await fleet.add("small", "vllm", context=64)
    await fleet.add("smaller", "tgi", context=32)
    await fleet.add("large", "lmstudio", context=100_000)
    d = make_dispatcher([fleet.model_spec("small"), fleet.model_spec("smaller"), fleet.model_spec("large")])
    body = {"messages": [{"role": "user", "content": "word " * 200}]}
    r = await d.complete(body, Routing(chain=["small", "smaller", "large"]))
    assert r.model == "large"
    assert r.attempts[0].reason == "context_length_exceeded" and r.attempts[0].status == 400
    assert r.attempts[1].skipped and r.attempts[1].reason == "context_too_small"
    assert len(fleet["small"].seen()) == 1 and fleet["smaller"].seen() == []


async def test_known_prompt_tokens_skip_small_windows_upfront(fleet, make_dispatcher):
    await fleet.add("small", "vllm", context=64)
    await fleet.add("large", "vllm", context=100_000)
    d = make_dispatcher([fleet.model_spec("small"), fleet.model_spec("large")])
    r = await d.complete(USER, Routing(chain=["small", "large"]), prompt_tokens=5000)
    assert r.model == "large" and fleet["small"].seen() == []


async def test_content_filter_is_fatal_and_touches_no_other_model(fleet, make_dispatcher):
    p, f = await two(fleet, "openai")
    p.add_fault(Fault(kind="content_filter"))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    with pytest.raises(DispatchError) as ei:
        await d.complete(USER, CHAIN)
    e = ei.value
    assert (e.error_class, e.reason, e.status) == ("fatal", "content_filter", 400)
    assert e.body["error"]["code"] == "content_filter"  # upstream body, unchanged
    assert len(p.seen()) == 1 and f.seen() == []


async def test_invalid_request_is_not_retried(fleet, make_dispatcher):
    p, f = await two(fleet)
    p.add_fault(Fault(kind="error", status=400, body={"object": "error", "message": "temperature must be <= 2",
                                                     "type": "BadRequestError", "param": None, "code": 400}))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    with pytest.raises(DispatchError) as ei:
        await d.complete({**USER, "temperature": 9}, CHAIN)
    assert ei.value.reason == "invalid_request" and ei.value.body["message"] == "temperature must be <= 2"
    assert len(p.seen()) == 1 and f.seen() == []


async def test_expired_key_rotates_to_second_key(fleet, make_dispatcher):
    p, f = await two(fleet, keys=["sk-one", "sk-two"])
    p.expire_key("sk-one")
    env = {"QWEN_KEY_1": "sk-one", "QWEN_KEY_2": "sk-two"}
    d = make_dispatcher([fleet.model_spec("primary", key_envs=("QWEN_KEY_1", "QWEN_KEY_2")),
                         fleet.model_spec("fallback")], environ=env)
    r = await d.complete(USER, CHAIN)
    assert r.model == "primary" and r.key_id == "QWEN_KEY_2"
    assert [(a.key_id, a.status, a.reason) for a in r.attempts] == [("QWEN_KEY_1", 401, "auth_invalid"),
                                                                      ("QWEN_KEY_2", 200, None)]
    assert [q.key for q in p.seen()] == ["sk-one", "sk-two"] and f.seen() == []
    assert "sk-one" not in r.model_dump_json()  # attempts name the env var, never the secret
    r2 = await d.complete(USER, CHAIN)  # the dead key is cooling down: straight to key 2
    assert [q.key for q in p.seen()][-1] == "sk-two" and len(p.seen()) == 3
    assert r2.attempts[0].skipped and r2.attempts[0].key_id == "QWEN_KEY_1"


async def test_all_keys_dead_moves_to_next_model(fleet, make_dispatcher):
    _p, _f = await two(fleet, keys=["sk-valid"])
    env = {"K1": "sk-old", "K2": "sk-older"}
    d = make_dispatcher([fleet.model_spec("primary", key_envs=("K1", "K2", "K3")), fleet.model_spec("fallback")],
                        environ=env)
    r = await d.complete(USER, CHAIN)
    assert r.model == "fallback"
    # K3's variable is unset: skipped before any call; K1 and K2 are rejected, then the next model
    assert [(a.key_id, a.reason) for a in r.attempts[:3]] == [("K3", "key_missing"), ("K1", "auth_invalid"),
                                                              ("K2", "auth_invalid")]


async def test_primary_down_then_recovers_traffic_returns(fleet, make_dispatcher):
    p, _f = await two(fleet)
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    assert (await d.complete(USER, CHAIN)).model == "primary"
    p.down(1.5)  # crash: refuse connections, reset kept-alive sockets
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    end = loop.time() + 1.4
    served, primary_tries = [], 0
    while loop.time() < end:
        r = await d.complete(USER, CHAIN)
        served.append(r.model)
        primary_tries += sum(1 for a in r.attempts if a.model == "primary" and not a.skipped)
        await asyncio.sleep(0.02)
    assert served and set(served) == {"fallback"}  # every request survived the outage
    br = await d.state.breaker("primary")
    # two failures (the threshold) open it for open_for=0.6 s; the one probe after that fails and
    # reopens it for 1.2 s, past the end of the outage loop. A failed probe leaves it open, never
    # half-open, once its request has finished.
    assert br.state == "open" and br.trips == 2
    # the breaker kept traffic off the crashed primary: the threshold plus that one probe
    assert primary_tries == 2 + 1 and primary_tries < len(served)
    await asyncio.sleep(1.0)  # primary is back; breaker half-opens after open_for
    after = []
    for _ in range(30):
        after.append((await d.complete(USER, CHAIN)).model)
        if after[-1] == "primary":
            break
        await asyncio.sleep(0.1)
    assert after[-1] == "primary"
    assert (await d.state.breaker("primary")).state == "closed"
    assert (await d.complete(USER, CHAIN)).model == "primary"


async def test_tool_calls_pass_through(fleet, make_dispatcher):
    await fleet.add("primary", "vllm")
    d = make_dispatcher([fleet.model_spec("primary")])
    tools = [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}]
    r = await d.complete({**USER, "tools": tools}, Routing(chain=["primary"]))
    tc = r.response["choices"][0]["message"]["tool_calls"][0]
    assert tc["function"]["name"] == "lookup_order" and r.finish_reason == "tool_calls"
    assert fleet["primary"].seen()[0].body["tools"] == tools
    s = d.stream({**USER, "tools": tools}, Routing(chain=["primary"]))
    [c async for c in s]
    assert s.result.response["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup_order"


async def test_unknown_model_and_bad_body_are_clear_errors(fleet, make_dispatcher):
    await fleet.add("primary", "vllm")
    d = make_dispatcher([fleet.model_spec("primary")])
    with pytest.raises(ValueError, match="unknown model"):
        await d.complete(USER, Routing(chain=["nope"]))
    with pytest.raises(ValueError, match="messages"):
        await d.complete({"prompt": "hi"}, Routing(chain=["primary"]))


async def test_error_event_before_first_token_fails_over_invisibly(fleet, make_dispatcher):
    p = await fleet.add("primary", "vllm")
    f = await fleet.add("fallback", "vllm")
    p.add_fault(Fault(kind="stream_error", after_chunks=0))  # 200, role chunk, then an error event
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    s = d.stream(USER, CHAIN)
    chunks = [c async for c in s]
    assert not any("error" in c for c in chunks) and s.result.model == "fallback" and s.result.complete
    assert s.result.attempts[0].reason == "engine_crashed" and s.result.attempts[0].error_class == "failover"
    assert len(p.seen()) == 1 and len(f.seen()) == 1


async def test_vllm_continuation_uses_continue_final_message(fleet, make_dispatcher):
    p = await fleet.add("primary", "vllm")
    f = await fleet.add("fallback", "vllm")
    p.add_fault(Fault(kind="stream_cut", after_chunks=2))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback", capabilities={"prefill": True})])
    s = d.stream(USER, CHAIN)
    chunks = [c async for c in s]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")) == DEFAULT_ANSWER
    body = f.seen()[0].body
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][-1]["role"] == "assistant"


async def test_many_concurrent_requests_survive_a_flapping_primary(fleet, make_dispatcher):
    p = await fleet.add("primary", "vllm")
    f = await fleet.add("fallback", "ollama")
    for kind in ("error", "reset", "unavailable", "error", "reset"):
        p.add_fault(Fault(kind=kind, status=500 if kind == "error" else None, times=4))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    results = await asyncio.gather(*(d.complete(USER, CHAIN) for _ in range(120)))
    assert len(results) == 120 and all(r.response["choices"][0]["message"]["content"] for r in results)
    assert {r.model for r in results} == {"primary", "fallback"}  # crashes went over, the rest stayed
    # every failed primary attempt was followed by an answer; nothing was retried blindly on a crash
    for r in results:
        assert r.attempts[-1].status == 200
        crashes = [a for a in r.attempts if a.model == "primary" and a.reason in ("engine_crashed", "connection_reset")]
        assert len(crashes) <= 1
    assert len(p.seen()) <= 120 + 2 * 4  # only the 503s were retried (at most twice each)
    # every fault was served exactly once, each request the primary saw is one recorded attempt,
    # and the fallback answered exactly the requests it was given (it never fails here)
    assert sum(1 for q in p.seen() if q.fault) == 20
    assert len(p.seen()) == sum(1 for r in results for a in r.attempts if a.model == "primary" and not a.skipped)
    assert len(f.seen()) == sum(1 for r in results if r.model == "fallback") >= 4 + 4 + 4 + 4


async def test_continuation_gets_the_remaining_token_budget_and_no_secret_leaks(fleet, make_dispatcher):
    from policyengine.adapters.base import CallOptions

    assert "sk-secret" not in repr(CallOptions(key="sk-secret", extra_headers={"api-key": "sk-secret"}))
    p = await fleet.add("primary", "vllm")
    f = await fleet.add("fallback", "vllm")
    p.add_fault(Fault(kind="stream_cut", after_chunks=4))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback", capabilities={"prefill": True})])
    s = d.stream({**USER, "max_tokens": 100}, CHAIN)
    [c async for c in s]
    assert s.result.complete
    assert p.seen()[0].body["max_tokens"] == 100
    # what was already sent (ceil(chars / chars_per_token=4) tokens) is taken off the budget
    sent = f.seen()[0].body["messages"][-1]["content"]
    assert sent and DEFAULT_ANSWER.startswith(sent)
    assert f.seen()[0].body["max_tokens"] == 100 - math.ceil(len(sent) / 4)
