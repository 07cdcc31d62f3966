"""The judge model of dual-model verification: reading its verdict, and verification with a judge
through the real ChainDispatcher against simulated OpenAI-compatible upstreams on 127.0.0.1."""

from __future__ import annotations

import pytest

from policyengine.signals import verify
from policyengine.signals.judge import JUDGE_SYSTEM_PROMPT, ask_judge, judge_request, parse_verdict

BODY = {"messages": [{"role": "system", "content": "You are a bank's assistant."},
                     {"role": "user", "content": "Where will my refund be paid?"}]}


# ---------------------------------------------------------------- reading the verdict


@pytest.mark.parametrize("text, want", [
    ('{"divergent": true, "reason": "different accounts"}', (True, "different accounts")),
    ('```json\n{"divergent": false, "reason": "same facts"}\n```', (False, "same facts")),
    ('Sure! Here is my verdict:\n{"divergent": true, "reason": "A says 3 March, B 5 March"}\nHope that helps.',
     (True, "A says 3 March, B 5 March")),
    ('<think>{"divergent": false} hmm, no: the recipients differ</think>{"divergent": true, "reason": "recipient"}',
     (True, "recipient")),
    ('{"verdict": {"divergent": "yes", "reason": "amounts"}}', (True, "amounts")),
    ('{"Divergent": "False", "reason": ["paraphrase"]}', (False, '["paraphrase"]')),
    ('{"divergent": false}', (False, "")),
    ('{"reason": "no verdict key"} {"divergent": true, "reason": "second object"}', (True, "second object")),
])
def test_parse_verdict_reads_json_wherever_it_is(text, want):
    assert parse_verdict(text) == want


@pytest.mark.parametrize("text", [
    "They look the same to me.", '{"divergent": maybe}', '{"divergent": "perhaps", "reason": "x"}',
    '{"reason": "forgot the verdict"}', "", "{{{{", '["divergent", true]',
])
def test_parse_verdict_refuses_what_holds_no_verdict(text):
    assert parse_verdict(text) is None


def test_the_request_is_fixed_bounded_and_shows_both_answers():
    req = judge_request(BODY, "Paid to the card ending 4411.", "Paid to your bank account.")
    assert req["messages"][0] == {"role": "system", "content": JUDGE_SYSTEM_PROMPT}
    user = req["messages"][1]["content"]
    assert "Where will my refund be paid?" in user and "card ending 4411" in user and "bank account" in user
    assert req["temperature"] == 0 and req["max_tokens"] > 0
    for what in ("recipient", "address", "account", "decision", "amount", "date", "contradicts", "paraphrase"):
        assert what in JUDGE_SYSTEM_PROMPT
    long = judge_request(BODY, "a" * 50_000, "b")["messages"][1]["content"]
    assert len(long) < 10_000 and "characters cut" in long
    assert judge_request(BODY, "x", "y") == judge_request(BODY, "x", "y")  # deterministic


# ---------------------------------------------------------------- the real dispatcher over HTTP

dispatch = pytest.importorskip("policyengine.dispatch")
simulate = pytest.importorskip("policyengine.simulate")
Fault = pytest.importorskip("policyengine.simulate.faults").Fault

SAME_A = "Your refund of £50 will be paid back to the card you used, within 5 working days."
SAME_B = "We'll return the £50 to your original card in five working days."
DIFF_B = "Your refund of £500 has been refused and will not be paid."


@pytest.fixture
async def fleet():
    f = simulate.SimFleet()
    await f.start()
    await f.add("qwen-72b", "vllm", answer=SAME_A)
    await f.add("gemma-27b", "ollama", answer=SAME_B)
    await f.add("llama-70b", "vllm", answer='{"divergent": false, "reason": "same"}')
    await f.add("mistral-large", "openai", answer='{"divergent": false, "reason": "same (fallback)"}')
    yield f
    await f.stop()


@pytest.fixture
async def dispatcher(fleet):
    from policyengine.simulate.testing import fast_settings
    from policyengine.state import MemoryStateStore

    d = dispatch.ChainDispatcher({n: fleet.model_spec(n) for n in ("qwen-72b", "gemma-27b", "llama-70b",
                                                                   "mistral-large")},
                                 MemoryStateStore(), settings=fast_settings(), environ={})
    yield d
    await d.aclose()


async def test_a_divergent_verdict_escalates_with_the_judges_reason(fleet, dispatcher, scorer):
    fleet["llama-70b"].answer = ('```json\n{"divergent": true, "reason": "A pays to the card, B to a bank '
                                 'account"}\n```')
    r = await verify(dispatcher, BODY, ["qwen-72b", "gemma-27b"], 0.25, scorer=scorer, judge="llama-70b")
    assert r.divergence is not None and r.divergence.aligned  # the embedded comparator saw a paraphrase...
    assert r.escalate and not r.aligned and r.tags == []  # ...the judge decided
    assert r.decided_by == "judge" and r.score == 1.0 and r.confidence == 0.0
    assert r.judge is not None and r.judge.status == "ok" and r.judge.divergent is True
    assert r.reasons == ["judge llama-70b: divergent: A pays to the card, B to a bank account"]
    assert r.judge.answered_by == "llama-70b" and r.judge.usage and r.judge.attempts[0].status == 200
    # the judge got the fixed prompt with both answers, after both models answered
    [seen] = fleet["llama-70b"].seen()
    assert seen.body["messages"][0]["content"] == JUDGE_SYSTEM_PROMPT
    assert SAME_A in seen.body["messages"][1]["content"] and SAME_B in seen.body["messages"][1]["content"]


async def test_a_same_verdict_overrules_the_embedded_score(fleet, dispatcher, scorer):
    fleet["gemma-27b"].answer = DIFF_B
    fleet["llama-70b"].answer = 'Verdict: {"divergent": false, "reason": "both refer the customer to support"}.'
    r = await verify(dispatcher, BODY, ["qwen-72b", "gemma-27b"], 0.25, scorer=scorer, judge="llama-70b")
    assert r.divergence is not None and not r.divergence.aligned  # the embedded comparator would escalate
    assert r.aligned and not r.escalate and r.tags == ["high-confidence"]
    assert r.decided_by == "judge" and r.score == 0.0


@pytest.mark.parametrize("fault, status", [
    (Fault(kind="error", status=500, times=None), "error"),
    (Fault(kind="unavailable", times=None), "error"),
])
async def test_a_failing_judge_leaves_the_decision_to_the_embedded_comparator(fleet, dispatcher, scorer, fault,
                                                                              status):
    fleet["gemma-27b"].answer = DIFF_B
    fleet["llama-70b"].add_fault(fault)
    r = await verify(dispatcher, BODY, ["qwen-72b", "gemma-27b"], 0.25, scorer=scorer, judge="llama-70b")
    assert r.judge is not None and r.judge.status == status and r.judge.divergent is None
    assert r.decided_by == "embedded" and r.score == r.divergence.divergence and r.escalate
    assert r.reasons[-1].startswith(f"judge llama-70b {status} (") and "embedded comparator decided" in r.reasons[-1]
    assert r.judge.attempts and all(a.model == "llama-70b" for a in r.judge.attempts)
    assert any(a.status in (500, 503) for a in r.judge.attempts)


async def test_an_unreadable_verdict_leaves_the_decision_to_the_embedded_comparator(fleet, dispatcher, scorer):
    fleet["llama-70b"].answer = "Honestly they look about the same to me, no big differences."
    r = await verify(dispatcher, BODY, ["qwen-72b", "gemma-27b"], 0.25, scorer=scorer, judge="llama-70b")
    assert r.judge.status == "unparseable" and r.judge.raw.startswith("Honestly")
    assert r.decided_by == "embedded" and r.aligned  # the embedded comparator found a paraphrase


async def test_a_judge_that_hangs_times_out_and_the_embedded_comparator_decides(fleet, dispatcher, scorer):
    fleet["gemma-27b"].answer = DIFF_B
    fleet["llama-70b"].add_fault(Fault(kind="hang", times=None))
    r = await verify(dispatcher, BODY, ["qwen-72b", "gemma-27b"], 0.25, scorer=scorer, judge="llama-70b",
                     judge_timeout=0.5)
    assert r.judge.status == "timeout" and r.judge.error == "no verdict within 0.5s"
    assert r.decided_by == "embedded" and r.escalate
    assert len(fleet["llama-70b"].requests) == 1  # it was called, then given up on


async def test_the_judge_fails_over_along_its_own_chain(fleet, dispatcher, scorer):
    fleet["llama-70b"].down(30)
    r = await verify(dispatcher, BODY, ["qwen-72b", "gemma-27b"], 0.25, scorer=scorer, judge="llama-70b",
                     fallbacks={"llama-70b": ["mistral-large"]})
    assert r.judge.status == "ok" and r.judge.model == "llama-70b" and r.judge.answered_by == "mistral-large"
    assert r.reasons == ["judge mistral-large: same: same (fallback)"]
    assert r.judge.attempts[0].model == "llama-70b" and r.judge.attempts[-1].model == "mistral-large"


async def test_no_judge_call_when_an_answer_is_missing(fleet, dispatcher, scorer):
    fleet["gemma-27b"].add_fault(Fault(kind="error", status=500, times=None))
    r = await verify(dispatcher, BODY, ["qwen-72b", "gemma-27b"], 0.25, scorer=scorer, judge="llama-70b")
    assert r.escalate and r.judge is None and r.decided_by is None
    assert fleet["llama-70b"].seen() == []


async def test_ask_judge_alone_and_bad_arguments(fleet, dispatcher, scorer):
    v = await ask_judge(dispatcher, BODY, SAME_A, SAME_B, "llama-70b", timeout_s=5)
    assert v.ok and v.divergent is False and v.reason == "same" and v.timeout_s == 5
    with pytest.raises(ValueError, match="judge timeout"):
        await ask_judge(dispatcher, BODY, "a", "b", "llama-70b", timeout_s=0)
    with pytest.raises(ValueError, match="cannot be one of the models"):
        await verify(dispatcher, BODY, ["qwen-72b", "gemma-27b"], scorer=scorer, judge="gemma-27b")
    with pytest.raises(ValueError, match="judge timeout"):
        await verify(dispatcher, BODY, ["qwen-72b", "gemma-27b"], scorer=scorer, judge="llama-70b",
                     judge_timeout=301)


def test_the_prompt_is_documented_verbatim():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "signals.md").read_text()
    assert JUDGE_SYSTEM_PROMPT in doc


def test_parse_verdict_is_bounded_on_hostile_input():
    deep = "{" * 100_000 + '{"divergent": true}'
    assert parse_verdict(deep) is None  # past the scanned prefix; no RecursionError
    assert parse_verdict('{"a": ' * 5000 + "1" + "}" * 5000) is None
    assert parse_verdict("<think>" * 2000 + '{"divergent": false, "reason": "r"}') == (False, "r")
    assert parse_verdict('{"x": "' + "y" * 50_000) is None
    assert parse_verdict('<THINKING>{"divergent": true}</THINKING>\n{"divergent": false, "reason": "ok"}') == (
        False, "ok")
