"""The OpenAI-compatible gateway driven by the real `openai` SDK against simulated upstreams on loopback."""

from __future__ import annotations

import asyncio

import openai
import pytest

from policyengine.simulate.faults import Fault

MSG = [{"role": "user", "content": "Summarise my last three tickets please."}]


def sdk(service, who: str = "app") -> openai.AsyncOpenAI:
    return service.sdk(who)


async def _decision(service, decision_id: str) -> dict:
    async with service.client() as c:
        r = await c.get(f"/v1/decisions/{decision_id}")
    assert r.status_code == 200, r.text
    return r.json()


async def _with_outcome(service, decision_id: str) -> dict:
    """The decision once its outcome row (a follow-up, written after the answer) is in the log."""
    for _ in range(100):
        rec = await _decision(service, decision_id)
        if "outcome_row" in rec:
            return rec
        await asyncio.sleep(0.05)
    raise AssertionError(f"no outcome row for decision {decision_id}")


async def test_plain_chat_is_routed_logged_and_named(service):
    raw = await sdk(service).chat.completions.with_raw_response.create(model="auto", messages=MSG)
    completion = raw.parse()
    assert completion.model == "qwen-72b"  # the policy's name for the model that answered
    assert completion.choices[0].message.content
    did = raw.headers["x-policyengine-decision-id"]
    assert raw.headers["x-policyengine-model"] == "qwen-72b"
    assert raw.headers["x-policyengine-attempts"].startswith("qwen-72b#PE_T_QWEN_KEY_1:200:ok")
    rec = await _with_outcome(service, did)
    assert rec["tenant"] == "acme" and rec["effect"] == "allow" and rec["model"] == "qwen-72b"
    assert rec["record"]["routing"]["chain"] == ["qwen-72b", "gemma-27b", "kimi-large"]
    # the decision row committed while the model was called; the outcome row names the answer
    assert rec["record"]["extra"]["outcome"] == "dispatched" and rec["outcome"] == "ok"
    assert rec["outcome_row"]["record"]["attempts"][0]["status"] == 200
    assert rec["outcome_row"]["record"]["follows"] == did
    assert rec["policy_hash"] == service.runtime.policies.current.hash
    assert any("answered by qwen-72b" in line for line in rec["explanation"])
    # the upstream never saw the gateway-only metadata, and got its own model id
    seen = service.sims["qwen-72b"].seen()[-1]
    assert "metadata" not in seen.body


async def test_streaming_relays_chunks_and_logs_before_first_byte(service):
    client = sdk(service)
    async with client.chat.completions.with_streaming_response.create(
            model="auto", messages=MSG, stream=True, stream_options={"include_usage": True}) as resp:
        did = resp.headers["x-policyengine-decision-id"]
        assert resp.headers["x-policyengine-model"] == "qwen-72b"
        # the decision row is committed before the stream starts
        assert (await _decision(service, did))["effect"] == "allow"
        text, models = "", set()
        async for chunk in await resp.parse():
            models.add(chunk.model)
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
    assert text.startswith("Simulated answer")
    assert models == {"qwen-72b"}
    # the outcome row (final model, attempts, usage) follows through the same group commit
    async with service.client() as c:
        for _ in range(100):
            rows = (await c.get("/v1/decisions", params={"kind": "chat_outcome"})).json()["data"]
            if rows:
                break
            await asyncio.sleep(0.05)
    assert rows and rows[0]["model"] == "qwen-72b"
    explained = await _decision(service, did)
    outcome = explained["outcome_row"]["record"]
    assert outcome["extra"]["outcome"] == "ok" and outcome["follows"] == did
    # the outcome row records the outcome only: the request and the rules are in the decision row
    assert "request" not in outcome and "rules" not in outcome
    assert outcome["attempts"][0]["model"] == "qwen-72b" and outcome["extra"]["usage"]
    assert explained["record"]["request"]["action"] == "chat"
    from policyengine.store import make_sync_engine, verify_chain

    engine = make_sync_engine(service.settings.database_url)
    try:
        assert verify_chain(engine).ok  # the follow-up row is on the same hash chain
    finally:
        engine.dispose()


async def test_tool_calls_pass_through(service):
    tools = [{"type": "function", "function": {"name": "lookup_order", "parameters": {
        "type": "object", "properties": {"query": {"type": "string"}}}}}]
    completion = await sdk(service).chat.completions.create(model="auto", messages=MSG, tools=tools)
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup_order"
    stream = await sdk(service).chat.completions.create(model="auto", messages=MSG, tools=tools, stream=True)
    names = [tc.function.name async for ch in stream if ch.choices and ch.choices[0].delta.tool_calls
             for tc in ch.choices[0].delta.tool_calls if tc.function and tc.function.name]
    assert names == ["lookup_order"]


async def test_failover_and_use_case_routing(service):
    service.sims["qwen-72b"].add_fault(Fault(kind="error", status=500, times=None))
    raw = await sdk(service).chat.completions.with_raw_response.create(model="auto", messages=MSG)
    assert raw.parse().model == "gemma-27b"
    assert "qwen-72b#PE_T_QWEN_KEY_1:500:failover" in raw.headers["x-policyengine-attempts"]
    service.sims["qwen-72b"].clear_faults()
    raw = await sdk(service).chat.completions.with_raw_response.create(
        model="auto", messages=MSG, extra_headers={"X-PolicyEngine-Use-Case": "summarisation"})
    assert raw.parse().model == "gemma-27b"
    completion = await sdk(service).chat.completions.create(
        model="auto", messages=MSG, metadata={"use_case": "summarisation"})
    assert completion.model == "gemma-27b"


async def test_user_switchable_models_checked_against_allowlist(service):
    models = await sdk(service, "power").models.list()
    assert {m.id for m in models.data} == {"auto", "qwen-72b", "gemma-27b"}
    assert {m.id for m in (await sdk(service).models.list()).data} == {"auto"}
    completion = await sdk(service, "power").chat.completions.create(model="gemma-27b", messages=MSG)
    assert completion.model == "gemma-27b"
    with pytest.raises(openai.PermissionDeniedError) as exc:
        await sdk(service).chat.completions.create(model="gemma-27b", messages=MSG)
    assert exc.value.code == "model_not_allowed"
    assert "not on this caller's allowlist" in exc.value.message


async def test_naming_the_routes_own_primary_is_served(service):
    """What OpenAI SDK users do: name the model the route would pick anyway. The evaluator allows
    it (docs/language.md, `policyengine eval`), so the gateway serves it, plain and streamed, for a
    caller with no allowlist; another model of the chain is still refused, as the evaluator says."""
    from policyengine.types import Action

    policy = service.runtime.policies.current
    assert policy.evaluate(Action(action="chat", tenant="acme", requested_model="qwen-72b")).effect == "allow"
    raw = await sdk(service).chat.completions.with_raw_response.create(model="qwen-72b", messages=MSG)
    assert raw.parse().model == "qwen-72b" and raw.headers["x-policyengine-model"] == "qwen-72b"
    stream = await sdk(service).chat.completions.create(model="qwen-72b", messages=MSG, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]).startswith("Simulated")
    # the summarisation route's primary is gemma-27b: naming it there is no choice either
    completion = await sdk(service).chat.completions.create(
        model="gemma-27b", messages=MSG, extra_headers={"X-PolicyEngine-Use-Case": "summarisation"})
    assert completion.model == "gemma-27b"
    assert policy.evaluate(Action(action="chat", tenant="acme", requested_model="kimi-large")).effect == "deny"
    with pytest.raises(openai.PermissionDeniedError) as exc:
        await sdk(service).chat.completions.create(model="kimi-large", messages=MSG)
    assert exc.value.code == "model_not_allowed"


async def test_escalation_holds_the_answer(service):
    with pytest.raises(openai.ConflictError) as exc:
        await sdk(service).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "I am going to sue you, my solicitor says so"}])
    body = exc.value.body
    assert exc.value.code == "approval_required" and body["effect"] == "escalate"
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert service.runtime.approvals is not None  # the approvals plugin runs in every service
    assert body["approval"]["approval_id"]
    rec = await _decision(service, body["decision_id"])
    assert rec["effect"] == "escalate"
    assert service.sims["qwen-72b"].seen() == []  # no model was called for a held request


async def test_upstream_errors_are_classified(service):
    # fatal: the upstream's 4xx and message come back unchanged, no other model is touched
    service.sims["qwen-72b"].add_fault(Fault(kind="content_filter", times=None))
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk(service).chat.completions.create(model="auto", messages=MSG)
    assert exc.value.body["error_class"] == "fatal"
    assert service.sims["gemma-27b"].seen() == []
    service.sims["qwen-72b"].clear_faults()
    # every model failing: 502 with the classified reason, decision logged with every attempt
    # (each simulated 500 is a crashed engine: failover class, so the chain ends in 502, not 503)
    for sim in service.sims.values():
        sim.add_fault(Fault(kind="error", status=500, times=None))
    with pytest.raises(openai.APIStatusError) as exc:
        await sdk(service).chat.completions.create(model="auto", messages=MSG)
    assert exc.value.status_code == 502
    body = exc.value.body
    assert body["error_class"] == "failover" and body["reason"] == "engine_crashed"
    rec = await _with_outcome(service, body["decision_id"])
    assert rec["outcome"] == "upstream_failed"
    assert {a["model"] for a in rec["outcome_row"]["record"]["attempts"]} >= {"qwen-72b", "gemma-27b", "kimi-large"}


async def test_malformed_chat_requests_get_clear_4xx(service):
    async with service.client() as c:
        cases = [
            (b"{not json", "not valid JSON"),
            (b"[]", "must be a JSON object"),
            (b'{"model": "auto"}', "'messages' is required"),
            (b'{"messages": []}', "non-empty list"),
            (b'{"messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role"),
            (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "'stream' must be"),
            (b'{"messages": [{"role": "user", "content": "x"}], "n": 3}', "n=1"),
        ]
        for raw, needle in cases:
            r = await c.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (raw, r.status_code)
            assert needle in r.json()["error"]["message"], (raw, r.json())
        r = await c.post("/v1/chat/completions", content=b"x", headers={"content-type": "text/plain"})
        assert r.status_code == 415
    async with service.client("reviewer") as c:
        r = await c.post("/v1/chat/completions", json={"messages": MSG})
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"
    async with openai.AsyncOpenAI(base_url=service.url + "/v1", api_key="pe_wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            await bad.chat.completions.create(model="auto", messages=MSG)


async def test_dual_model_verification_tags_aligned_answers(service):
    raw = await sdk(service).chat.completions.with_raw_response.create(
        model="auto", messages=MSG, extra_headers={"X-PolicyEngine-Use-Case": "legal"})
    assert "high-confidence" in raw.headers["x-policyengine-tags"]
    assert float(raw.headers["x-policyengine-divergence"]) <= 0.25
    assert service.sims["qwen-72b"].seen() and service.sims["gemma-27b"].seen()
    # both models' upstream attempts are in the header and in the log (the verdict is the outcome row)
    assert raw.headers["x-policyengine-attempt-count"] == "2"
    assert {a.split("#")[0].split(":")[0] for a in raw.headers["x-policyengine-attempts"].split(", ")} == {
        "qwen-72b", "gemma-27b"}
    rec = await _decision(service, raw.headers["x-policyengine-decision-id"])
    assert rec["record"]["extra"]["outcome"] == "verifying" and rec["outcome"] == "ok"
    logged = rec["outcome_row"]["record"]
    assert sorted(a["model"] for a in logged["attempts"]) == ["gemma-27b", "qwen-72b"]
    assert all(a["status"] == 200 for a in logged["attempts"])
    assert logged["extra"]["verification"]["aligned"] is True
    # diverging answers are held for a human, with both answers attached
    service.sims["gemma-27b"].answer = "No. The refund was refused on 3 March and you owe us 500 GBP."
    with pytest.raises(openai.ConflictError) as exc:
        await sdk(service).chat.completions.create(model="auto", messages=MSG,
                                                   metadata={"use_case": "legal"})
    assert exc.value.body["effect"] == "escalate"


async def test_streaming_fails_over_before_the_first_byte(service):
    service.sims["qwen-72b"].add_fault(Fault(kind="unavailable", times=None))
    async with sdk(service).chat.completions.with_streaming_response.create(
            model="auto", messages=MSG, stream=True) as resp:
        assert resp.headers["x-policyengine-model"] == "gemma-27b"
        assert "qwen-72b" in resp.headers["x-policyengine-attempts"]
        chunks = [c async for c in await resp.parse()]
    assert {c.model for c in chunks} == {"gemma-27b"}
    # nothing answers: a proper HTTP error, not a broken stream
    for sim in service.sims.values():
        sim.add_fault(Fault(kind="error", status=500, times=None))
    with pytest.raises(openai.APIStatusError) as exc:
        await sdk(service).chat.completions.create(model="auto", messages=MSG, stream=True)
    # qwen-72b is cooling down (overloaded); gemma-27b and kimi-large crash: failover, 502
    assert exc.value.status_code == 502 and exc.value.body["decision_id"]
    assert exc.value.body["error_class"] == "failover"
    # the decision row was committed (while the chain was tried) before the error was sent; the
    # outcome row that follows it holds every attempt and the classified failure
    did = exc.value.body["decision_id"]
    assert (await _decision(service, did))["record"]["extra"]["outcome"] == "streaming"
    rec = await _with_outcome(service, did)
    outcome = rec["outcome_row"]["record"]
    assert outcome["extra"]["outcome"] == "upstream_failed" and outcome["extra"]["error_class"]
    assert {a["model"] for a in outcome["attempts"]} >= {"qwen-72b", "gemma-27b", "kimi-large"}
    assert any(line.startswith("attempt kimi-large") for line in rec["explanation"])


async def test_stream_is_closed_unread_when_its_decision_cannot_be_committed(service, monkeypatch):
    """The decision row commits while the upstream is opened: if it fails, nothing is relayed."""
    from policyengine.store import DecisionLogError

    log = service.runtime.log

    def fail(entry):
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(DecisionLogError("disk full"))
        return fut

    before = len(service.sims["qwen-72b"].seen())
    monkeypatch.setattr(log, "submit", fail)
    async with service.client() as c:
        r = await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG, "stream": True})
    assert r.status_code == 503 and r.json()["error"]["code"] == "decision_log_unavailable"
    assert "data:" not in r.text
    assert len(service.sims["qwen-72b"].seen()) == before + 1  # it was opened, then closed unread


async def test_stream_broken_after_first_byte_ends_with_error_not_done(service):
    """No model here declares prefill, and every model cuts its stream (so the follow-up-turn rescue
    breaks too): a cut after text was sent ends with an in-band error, never [DONE]."""
    for sim in service.sims.values():
        sim.add_fault(Fault(kind="stream_cut", after_chunks=2, times=None))
    async with service.client() as c, c.stream(
            "POST", "/v1/chat/completions",
            json={"model": "auto", "messages": MSG, "stream": True}) as resp:
        assert resp.status_code == 200
        did = resp.headers["x-policyengine-decision-id"]
        lines = [line async for line in resp.aiter_lines() if line.startswith("data: ")]
    assert lines, "the stream started"
    assert lines[-1] != "data: [DONE]"
    assert '"error"' in lines[-1] and did in lines[-1]
    assert "data: [DONE]" not in lines
    # and the SDK surfaces it as an error rather than a complete answer
    with pytest.raises(openai.APIError):
        stream = await sdk(service).chat.completions.create(model="auto", messages=MSG, stream=True)
        async for _ in stream:
            pass
