"""Tool calls a model returns are judged as actions: the real `openai` SDK through the gateway, against
simulated upstreams that answer with (parallel) tool calls, plain and streamed."""

from __future__ import annotations

import asyncio
import json

import pytest

MSG = [{"role": "user", "content": "Order A1 arrived broken, please refund me."}]
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
         for n in ("lookup_order", "refund", "delete_account")]
PLAN = [("lookup_order", {"order_id": "A1"}),
        ("refund", {"order_id": "A1", "amount": 150, "currency": "GBP"}),
        ("delete_account", {"user": "u-9"})]


async def _decision(service, decision_id: str) -> dict:
    async with service.client() as c:
        r = await c.get(f"/v1/decisions/{decision_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _verdicts(obj) -> dict[str, dict]:
    return {v["name"]: v for v in obj["policyengine"]["tool_calls"]}


async def test_parallel_tool_calls_are_judged_one_by_one(service):
    service.sims["qwen-72b"].tool_plan = PLAN
    raw = await service.sdk().chat.completions.with_raw_response.create(model="auto", messages=MSG, tools=TOOLS)
    completion = raw.parse()
    msg = completion.choices[0].message
    # only the authorized call is left executable; the others are gone from tool_calls
    assert [tc.function.name for tc in msg.tool_calls] == ["lookup_order"]
    assert json.loads(msg.tool_calls[0].function.arguments) == {"order_id": "A1"}
    assert completion.choices[0].finish_reason == "tool_calls"
    v = _verdicts(completion.model_extra)
    assert v["lookup_order"]["effect"] == "allow"
    assert v["refund"]["effect"] == "require_approval" and v["refund"]["approval"]["approval_id"]
    assert "amount 150 GBP > 100 GBP" in v["refund"]["reason"]
    assert v["delete_account"]["effect"] == "deny"
    # the note the client can show or hand back to the model
    assert "delete_account was not run: denied by policy" in msg.content
    assert "refund is waiting for human approval" in msg.content
    # each verdict is a decision row of its own, linked to the chat's decision
    chat_id = raw.headers["x-policyengine-decision-id"]
    for name, want in (("refund", "require_approval"), ("delete_account", "deny"), ("lookup_order", "allow")):
        rec = await _decision(service, v[name]["decision_id"])
        assert rec["kind"] == "tool_call" and rec["action"] == name and rec["effect"] == want
        assert rec["record"]["extra"]["chat_decision_id"] == chat_id
    # GET of the chat decision shows the chain: each tool call's decision and approval
    for _ in range(100):
        chat = await _decision(service, chat_id)
        if "tool_calls" in chat:
            break
        await asyncio.sleep(0.05)
    assert {t["name"]: t["decision_id"] for t in chat["tool_calls"]} == {n: v[n]["decision_id"] for n in v}
    assert any(line.startswith("tool call refund -> require_approval") and "approval apr_" in line
               for line in chat["explanation"])
    refund = await _decision(service, v["refund"]["decision_id"])
    assert any(f"chat decision {chat_id}" in line for line in refund["explanation"])
    assert refund["record"]["request"]["fields"]["amount"] == {"amount": 150, "currency": "GBP"}
    # the approval is bound to that decision
    async with service.client() as c:
        apr = (await c.get(f"/v1/approvals/{v['refund']['approval']['approval_id']}")).json()
    assert apr["decision_id"] == v["refund"]["decision_id"] and apr["action"]["action"] == "refund"


async def test_allowed_tool_calls_pass_unchanged(service):
    service.sims["qwen-72b"].tool_plan = [("lookup_order", {"order_id": "A1"}), ("lookup_order", {"order_id": "B2"})]
    completion = await service.sdk().chat.completions.create(model="auto", messages=MSG, tools=TOOLS)
    msg = completion.choices[0].message
    assert [json.loads(tc.function.arguments)["order_id"] for tc in msg.tool_calls] == ["A1", "B2"]
    assert msg.content is None  # nothing was removed, so no note
    assert {v["effect"] for v in completion.model_extra["policyengine"]["tool_calls"]} == {"allow"}


async def test_bad_tool_calls_are_denied_with_the_reason(service):
    service.sims["qwen-72b"].tool_plan = [("lookup_order", "{not json"), ("frobnicate", {"x": 1}),
                                         ("lookup_order", "[1, 2]"),
                                         ("lookup_order", json.dumps({"blob": "x" * 70_000}))]
    completion = await service.sdk().chat.completions.create(model="auto", messages=MSG, tools=TOOLS)
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"
    got = completion.model_extra["policyengine"]["tool_calls"]
    assert [v["effect"] for v in got] == ["deny"] * 4
    assert "not valid JSON" in got[0]["reason"]
    assert "default deny" in got[1]["reason"]  # an unknown tool: the policy's default
    assert "must be a JSON object" in got[2]["reason"]
    assert "over the limit of 65536" in got[3]["reason"]


async def test_streamed_tool_calls_are_held_back_until_judged(service):
    service.sims["qwen-72b"].tool_plan = PLAN
    stream = await service.sdk().chat.completions.create(model="auto", messages=MSG, tools=TOOLS, stream=True)
    calls: dict[int, dict] = {}
    content, finish, verdicts = "", None, None
    async for chunk in stream:
        if chunk.model_extra and "policyengine" in chunk.model_extra:
            verdicts = _verdicts(chunk.model_extra)
        for ch in chunk.choices:
            if ch.delta.content:
                content += ch.delta.content
            for tc in ch.delta.tool_calls or []:
                acc = calls.setdefault(tc.index, {"name": "", "arguments": ""})
                acc["name"] += tc.function.name or ""
                acc["arguments"] += tc.function.arguments or ""
            finish = ch.finish_reason or finish
    # what the client received as executable: only the authorized call, whole
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [("lookup_order", {"order_id": "A1"})]
    assert finish == "tool_calls"
    assert verdicts["refund"]["effect"] == "require_approval" and verdicts["delete_account"]["effect"] == "deny"
    assert "delete_account was not run" in content
    rec = await _decision(service, verdicts["refund"]["decision_id"])
    assert rec["kind"] == "tool_call" and rec["effect"] == "require_approval"


async def test_a_denied_streamed_call_never_reaches_the_client(service):
    service.sims["qwen-72b"].tool_plan = [("delete_account", {"user": "u-9"})]
    stream = await service.sdk().chat.completions.create(model="auto", messages=MSG, tools=TOOLS, stream=True)
    names, finish = [], None
    async for chunk in stream:
        for ch in chunk.choices:
            names += [tc.function.name for tc in ch.delta.tool_calls or []]
            finish = ch.finish_reason or finish
    assert names == [] and finish == "stop"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_always_denied_tools_can_be_hidden_from_the_model(service_factory, db_url):
    async with service_factory(db_url, strip_denied_tools=True) as svc:
        svc.sims["qwen-72b"].tool_plan = [("lookup_order", {"order_id": "A1"})]
        await svc.sdk().chat.completions.create(model="auto", messages=MSG, tools=TOOLS)
        offered = [t["function"]["name"] for t in svc.sims["qwen-72b"].seen()[-1].body["tools"]]
    assert offered == ["lookup_order", "refund"]  # delete_account is denied whatever its arguments
