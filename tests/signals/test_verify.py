"""Dual-model verification through a dispatcher: a tiny fake, then the real ChainDispatcher over real HTTP."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from policyengine.signals import VerificationResult, answer_text, verify
from policyengine.types import Routing

BODY = {"messages": [{"role": "user", "content": "Has my refund been approved?"}]}


def completion(text: str, logprobs: list[float] | None = None) -> dict:
    choice: dict = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                    "logprobs": None}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": "t", "logprob": lp, "top_logprobs": []} for lp in logprobs]}
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "x", "choices": [choice]}


@dataclass
class Result:
    response: dict
    model: str


class FakeCompletionSource:
    """Answers per model; records calls and how many ran at the same time."""

    def __init__(self, answers: dict[str, str | Exception], delay: float = 0.05) -> None:
        self.answers = answers
        self.delay = delay
        self.calls: list[tuple[list[str], str | None]] = []
        self.running = 0
        self.peak = 0

    async def complete(self, body: dict, routing: Routing, session_id: str | None = None) -> Result:
        self.calls.append((routing.chain, session_id))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay)
            for model in routing.chain:
                ans = self.answers.get(model)
                if isinstance(ans, Exception):
                    continue  # "failover" to the next in the chain
                if ans is not None:
                    return Result(completion(ans, [-0.05, -0.1]), model)
            err = self.answers.get(routing.chain[0])
            raise err if isinstance(err, Exception) else RuntimeError("no model")
        finally:
            self.running -= 1


async def test_aligned_answers_are_delivered_with_the_tag(scorer):
    d = FakeCompletionSource({
        "qwen-72b": "Yes, your refund has been approved and will arrive in 3-5 working days.",
        "gemma-27b": "Good news - we approved your refund; expect it within three to five business days.",
    })
    r = await verify(d, BODY, ["qwen-72b", "gemma-27b"], 0.25, scorer=scorer, tag="high-confidence", session_id="s1")
    assert isinstance(r, VerificationResult)
    assert r.aligned and not r.escalate and r.tags == ["high-confidence"]
    assert d.peak == 2  # both models were asked concurrently
    assert sorted(c[0][0] for c in d.calls) == ["gemma-27b", "qwen-72b"] and {c[1] for c in d.calls} == {"s1"}
    assert r.answer.model == "qwen-72b" and r.answers[0].confidence is not None
    assert r.confidence == pytest.approx(1 - r.divergence.divergence)


async def test_divergent_answers_escalate_with_both_attached(scorer):
    d = FakeCompletionSource({"qwen-72b": "Your refund of £50 has been approved.",
                        "gemma-27b": "Your refund of £500 has not been approved."})
    r = await verify(d, BODY, ["qwen-72b", "gemma-27b"], 0.25, scorer=scorer)
    assert r.escalate and not r.aligned and r.tags == []
    assert [a.text for a in r.answers] == ["Your refund of £50 has been approved.",
                                           "Your refund of £500 has not been approved."]
    assert "amounts differ: £50 vs £500" in r.reasons
    assert "polarity: approved vs not approved" in r.reasons


async def test_a_model_that_fails_entirely_escalates_with_its_error(scorer):
    d = FakeCompletionSource({"qwen-72b": "Approved.", "gemma-27b": ConnectionError("connection refused")})
    r = await verify(d, BODY, ["qwen-72b", "gemma-27b"], 0.25, scorer=scorer)
    assert r.escalate and r.divergence is None
    assert r.answers[1].error == "ConnectionError: connection refused"
    assert "gemma-27b gave no answer" in r.reasons[0]


async def test_failover_to_the_same_model_is_not_an_independent_check(scorer):
    d = FakeCompletionSource({"qwen-72b": "Approved.", "gemma-27b": TimeoutError("timeout"), "kimi": "x"})
    r = await verify(d, BODY, ["qwen-72b", "gemma-27b"], 0.25, scorer=scorer,
                     fallbacks={"gemma-27b": ["qwen-72b"]})
    assert [a.model for a in r.answers] == ["qwen-72b", "qwen-72b"]
    assert r.divergence is not None and r.divergence.aligned  # same text...
    assert r.escalate  # ...but from one model, so it proves nothing
    assert any("not an independent check" in x for x in r.reasons)


async def test_bad_arguments(scorer):
    d = FakeCompletionSource({})
    with pytest.raises(ValueError, match="two different models"):
        await verify(d, BODY, ["qwen-72b"], scorer=scorer)
    with pytest.raises(ValueError, match="two different models"):
        await verify(d, BODY, ["qwen-72b", "qwen-72b"], scorer=scorer)
    with pytest.raises(ValueError, match="messages"):
        await verify(d, {"prompt": "hi"}, ["a", "b"], scorer=scorer)
    with pytest.raises(ValueError, match="threshold"):
        await verify(d, BODY, ["a", "b"], 2.0, scorer=scorer)


def test_answer_text_handles_parts_and_tool_calls():
    assert answer_text(completion("hi")) == "hi"
    parts = {"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}]}
    assert answer_text(parts) == "ab"
    tools = {"choices": [{"message": {"content": None, "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "refund", "arguments": "{\"amount\": 50}"}}]}}]}
    assert '"name": "refund"' in answer_text(tools)
    with pytest.raises(ValueError, match=r"chat\.completion"):
        answer_text({"error": "x"})


# ---------------------------------------------------------------- the real dispatcher over HTTP

dispatch = pytest.importorskip("policyengine.dispatch")
simulate = pytest.importorskip("policyengine.simulate")


@pytest.fixture
async def sim_fleet():
    fleet = simulate.SimFleet()
    await fleet.start()
    yield fleet
    await fleet.stop()


def _dispatcher(fleet, names):
    from policyengine.simulate.testing import fast_settings
    from policyengine.state import MemoryStateStore

    return dispatch.ChainDispatcher({n: fleet.model_spec(n) for n in names}, MemoryStateStore(),
                               settings=fast_settings(), environ={})


async def test_real_dispatcher_aligned_and_divergent(sim_fleet, scorer):
    await sim_fleet.add("qwen-72b", "vllm", answer="Yes, your refund of £50 has been approved.")
    await sim_fleet.add("gemma-27b", "ollama", answer="Your £50 refund is approved, yes.")
    await sim_fleet.add("kimi-large", "vllm", answer="Your refund of £50 has not been approved.")
    d = _dispatcher(sim_fleet, ["qwen-72b", "gemma-27b", "kimi-large"])
    try:
        ok = await verify(d, BODY, ["qwen-72b", "gemma-27b"], 0.25, scorer=scorer)
        assert ok.aligned and ok.tags == ["high-confidence"]
        assert [a.model for a in ok.answers] == ["qwen-72b", "gemma-27b"]
        assert ok.answers[0].response["object"] == "chat.completion"
        bad = await verify(d, BODY, ["qwen-72b", "kimi-large"], 0.25, scorer=scorer)
        assert bad.escalate and "polarity: approved vs not approved" in bad.reasons
        assert len(sim_fleet["qwen-72b"].requests) == 2 and len(sim_fleet["kimi-large"].requests) == 1
    finally:
        await d.aclose()


async def test_real_dispatcher_failover_inside_verification(sim_fleet, scorer):
    await sim_fleet.add("qwen-72b", "vllm", answer="The cancellation fee is £25.")
    await sim_fleet.add("gemma-27b", "vllm", answer="The cancellation fee is £25.")
    await sim_fleet.add("kimi-large", "vllm", answer="There is a £25 fee to cancel.")
    sim_fleet["gemma-27b"].down(30)  # connection refused -> failover
    d = _dispatcher(sim_fleet, ["qwen-72b", "gemma-27b", "kimi-large"])
    try:
        r = await verify(d, BODY, ["qwen-72b", "gemma-27b"], 0.25, scorer=scorer,
                         fallbacks={"gemma-27b": ["kimi-large"]})
        assert [a.model for a in r.answers] == ["qwen-72b", "kimi-large"]
        assert r.aligned
        lone = await verify(d, BODY, ["qwen-72b", "gemma-27b"], 0.25, scorer=scorer)
        assert lone.escalate and lone.answers[1].error  # no fallback: gemma's failure is reported
    finally:
        await d.aclose()


async def test_run_verification_takes_the_decisions_obligation(scorer):
    from policyengine.signals import run_verification
    from policyengine.types import Verification

    d = FakeCompletionSource({"qwen-72b": "Take 200mg twice a day.", "gemma-27b": "Take 200 mg two times a day."})
    v = Verification(models=["qwen-72b", "gemma-27b"], threshold=0.25, tag="verified", rule_id="x.policy:3")
    r = await run_verification(d, BODY, v, scorer=scorer)
    assert r.aligned and r.tags == ["verified"]
    d2 = FakeCompletionSource({"qwen-72b": "Take 200mg twice a day.", "gemma-27b": "Take 400mg twice a day."})
    r2 = await run_verification(d2, BODY, v, scorer=scorer)
    assert r2.escalate and r2.reasons == ["mg differ: 200 mg vs 400 mg"]
