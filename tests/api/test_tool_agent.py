"""examples/tool_agent: the whole loop of a tool-calling agent through the gateway, against a real service
serving the example's own policy directory and a simulated model.

The model proposes refund(£150); the gateway holds it; a reviewer decides through the signed review link
(the page a notification links to) or the REST API with an edit; the agent runs the approved refund exactly
once, after the approval, and the model gets the result back for its final answer. A rejection means the
refund never runs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from policyengine.client import PolicyEngineClient, UnjudgedToolCalls, tool_verdicts
from policyengine.simulate.server import SimServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tool_agent"
QUESTION = "Order A1 arrived broken. Please refund the £150 I paid."
REFUND_150 = ("refund", {"order_id": "A1", "amount": 150, "currency": "GBP"})
FINAL = "I have refunded your order A1."

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _load_agent():
    spec = importlib.util.spec_from_file_location("tool_agent_example", EXAMPLE / "agent.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["tool_agent_example"] = mod
    spec.loader.exec_module(mod)
    return mod


agent_mod = _load_agent()


class Model(SimServer):
    """The simulated model: answers with its tool plan while tools are offered, and writes its final answer
    once the last message is a tool result (as a model does when it has what it asked for)."""

    def _plan(self, body: dict):
        msgs = body.get("messages") or []
        if msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "tool":
            return FINAL, None, None
        return super()._plan(body)


@pytest.fixture
async def world(service_factory, db_url, monkeypatch):
    """(service, model): the service with the example's policy directory, its one model simulated."""
    model = Model("assistant", flavour="vllm")
    await model.start()
    monkeypatch.setenv("AGENT_MODEL_URL", model.url)
    try:
        async with service_factory(db_url, policy_dir=EXAMPLE) as svc:
            yield svc, model
    finally:
        await model.stop()


class Run:
    """The example agent running in a task, with a hook that sees each held call before the agent waits."""

    def __init__(self, service, **kw) -> None:
        self.shop = agent_mod.Shop()
        self.held: asyncio.Queue = asyncio.Queue()
        self.refunds_when_held: list[int] = []
        self.lines: list[str] = []
        self.pe = PolicyEngineClient(service.url, api_key=service.tokens["app"], max_wait_per_poll_s=5)
        self.agent = agent_mod.ToolAgent(service.sdk(), self.pe, self.shop, on_held=self._on_held,
                                         log=self.lines.append, **kw)

    def _on_held(self, verdict) -> None:
        self.refunds_when_held.append(len(self.shop.refunds))
        self.held.put_nowait(verdict)

    async def __aenter__(self) -> Run:
        self.task = asyncio.create_task(self.agent.run(QUESTION))
        return self

    async def next_held(self):
        getter = asyncio.ensure_future(self.held.get())
        done, _ = await asyncio.wait({getter, self.task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            if self.task.done():
                self.task.result()  # the agent failed: show why
            raise AssertionError("no call was held")
        return getter.result()

    async def answer(self) -> str:
        return await asyncio.wait_for(self.task, 60)

    async def __aexit__(self, *exc) -> None:
        if not self.task.done():
            self.task.cancel()
        await self.pe.aclose()


async def _approve_by_link(service, approval_id: str, *, decision: str = "approve", reason: str = "") -> None:
    """A reviewer opens the signed link of the notification and decides on the review page."""
    url = service.runtime.approvals.issue_link(approval_id, "email:rita@acme.example")
    path = urlsplit(url).path
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as c:
        page = await c.get(path)
        assert page.status_code == 200 and "refund" in page.text and "150" in page.text
        done = await c.post(path, data={"decision": decision, "reason": reason})
    assert done.status_code == 200, done.text


def _last_turn(model) -> list[dict]:
    return model.seen()[-1].body["messages"]


@SQLITE
async def test_a_held_refund_runs_once_after_the_reviewer_approves_by_link(world):
    service, model = world
    model.tool_plan = [REFUND_150]
    async with Run(service) as run:
        held = await run.next_held()
        assert held.name == "refund" and held.effect == "require_approval" and held.approval_id
        assert held.arguments == {"order_id": "A1", "amount": 150, "currency": "GBP"}
        assert "amount 150 GBP > 100 GBP" in held.reason
        assert any(held.approval_id in line for line in run.lines)  # the agent says what it waits for
        await asyncio.sleep(0.3)
        assert run.shop.refunds == [] and not run.task.done()  # waiting, nothing paid
        approved_at = time.monotonic()
        await _approve_by_link(service, held.approval_id)
        answer = await run.answer()
    assert answer == FINAL
    assert run.refunds_when_held == [0]
    assert len(run.shop.refunds) == 1  # exactly once
    ref = run.shop.refunds[0]
    assert (ref["order_id"], ref["amount"], ref["currency"]) == ("A1", Decimal(150), "GBP")
    assert ref["at"] > approved_at  # after the approval
    # the model was asked twice: the proposal, then the final answer with the refund's result in the history
    assert len(model.seen()) == 2
    history = _last_turn(model)
    assistant, tool = history[-2], history[-1]
    assert [(tc["function"]["name"], json.loads(tc["function"]["arguments"])) for tc in assistant["tool_calls"]] \
        == [("refund", {"order_id": "A1", "amount": 150, "currency": "GBP"})]
    assert not (assistant["content"] or "").startswith("[policyengine]")  # the gateway's note is not history
    assert tool["role"] == "tool" and tool["tool_call_id"] == assistant["tool_calls"][0]["id"]
    assert json.loads(tool["content"])["status"] == "refunded"


@SQLITE
async def test_a_rejected_refund_never_runs_and_the_model_is_told(world):
    service, model = world
    model.tool_plan = [REFUND_150, ("lookup_order", {"order_id": "A1"})]
    async with Run(service) as run:
        held = await run.next_held()
        assert run.shop.lookups == ["A1"]  # the allowed call did not wait for the held one
        await _approve_by_link(service, held.approval_id, decision="reject", reason="no photo of the damage")
        await run.answer()
    assert run.shop.refunds == []
    tool, lookup = _last_turn(model)[-2:]  # in the model's order
    assert tool["role"] == "tool" and json.loads(lookup["content"])["order_id"] == "A1"
    body = json.loads(tool["content"])
    assert body["error"] == "not run: not approved" and "rejected" in body["reason"]
    assert "no photo of the damage" in body["reason"]


@SQLITE
async def test_an_agent_that_stops_waiting_withdraws_the_approval(world):
    service, model = world
    model.tool_plan = [REFUND_150]
    async with Run(service, approval_timeout=1) as run:
        held = await run.next_held()
        await run.answer()
    assert run.shop.refunds == []
    body = json.loads(_last_turn(model)[-1]["content"])
    assert "no reviewer decided in time" in body["reason"]
    async with service.client("reviewer") as rev:
        apr = (await rev.get(f"/v1/approvals/{held.approval_id}")).json()
        assert apr["state"] == "cancelled"
        late = await rev.post(f"/v1/approvals/{held.approval_id}/approve", json={})
    assert late.status_code == 409  # nobody can approve what will not run


@SQLITE
async def test_a_reviewer_edit_is_what_runs(world):
    service, model = world
    model.tool_plan = [REFUND_150]
    async with Run(service) as run:
        held = await run.next_held()
        async with service.client("reviewer") as rev:
            shown = (await rev.get(f"/v1/approvals/{held.approval_id}")).json()["action"]["fields"]
            # the reviewer sees the money as the policy read it, and edits it to a partial refund
            assert shown["amount"] == {"amount": 150, "currency": "GBP"}
            r = await rev.post(f"/v1/approvals/{held.approval_id}/approve", json={
                "reason": "partial: the lid is fine",
                "action": {"fields": {**shown, "amount": {"amount": 90, "currency": "GBP"}}}})
        assert r.status_code == 200, r.text
        assert r.json()["edited"] is True
        await run.answer()
    assert [(x["order_id"], x["amount"], x["currency"]) for x in run.shop.refunds] == [("A1", Decimal(90), "GBP")]
    assistant = _last_turn(model)[-2]
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {
        "order_id": "A1", "amount": 90, "currency": "GBP"}  # the history shows the call as it was run
    assert any("edited to" in line for line in run.lines)


@SQLITE
async def test_allowed_calls_run_at_once_and_denied_ones_never(world):
    service, model = world
    model.tool_plan = [("lookup_order", {"order_id": "A1"}), ("refund", {"order_id": "A1", "amount": 40,
                                                                         "currency": "GBP"}),
                       ("delete_account", {"user": "u-9"})]
    async with Run(service) as run:
        assert await run.answer() == FINAL
    assert run.held.empty()  # nothing waited for a reviewer
    assert [(x["order_id"], x["amount"]) for x in run.shop.refunds] == [("A1", Decimal(40))]
    history = _last_turn(model)
    names = [tc["function"]["name"] for tc in history[-4]["tool_calls"]]
    assert names == ["lookup_order", "refund", "delete_account"]  # every call, each with its tool message
    results = [json.loads(m["content"]) for m in history[-3:]]
    assert results[0]["item"] == "espresso machine" and results[1]["status"] == "refunded"
    assert results[2]["error"] == "not run: denied by policy" and "delete_account" in results[2]["reason"]


async def test_tool_calls_without_verdicts_are_refused():
    plain = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "refund", "arguments": "{}"}}]}}]}
    with pytest.raises(UnjudgedToolCalls):
        tool_verdicts(plain)
    assert tool_verdicts({"choices": [{"message": {"role": "assistant", "content": "hi"}}]}) == []


def _pe_answering(approval: dict) -> PolicyEngineClient:
    """A client whose service answers every approval request with `approval` (its hash filled in)."""
    from policyengine.approvals.hashing import action_hash

    body = {"id": "apr_1", "released": approval["state"] == "approved", "action_hash": action_hash(approval["action"]),
            **approval}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    return PolicyEngineClient("http://pe.test", http=httpx.AsyncClient(base_url="http://pe.test", transport=transport))


def _held_refund() -> object:
    completion = {"choices": [{"message": {"role": "assistant", "content": None}}], "policyengine": {"tool_calls": [
        {"index": 0, "id": "c1", "name": "refund", "effect": "require_approval", "decision_id": "d1",
         "reason": "amount 150 GBP > 100 GBP", "approval": {"approval_id": "apr_1", "state": "pending"},
         "arguments": {"order_id": "A1", "amount": 150, "currency": "GBP"}}]}}
    [v] = tool_verdicts(completion)
    return v


async def test_the_released_call_is_checked_against_the_verdict():
    from policyengine.client import ApprovalNotGranted, ApprovalTampered

    v = _held_refund()
    money = {"order_id": "A1", "amount": {"amount": 120, "currency": "GBP"}, "currency": "GBP"}
    ok = _pe_answering({"state": "approved", "action": {"action": "refund", "fields": money}, "edited": True})
    call = await ok.wait_for_tool_call(v, timeout=5)
    assert (call.call_id, call.name, call.arguments, call.edited) == (
        "c1", "refund", {"order_id": "A1", "amount": 120, "currency": "GBP"}, True)
    other_tool = _pe_answering({"state": "approved", "action": {"action": "delete_account", "fields": {}}})
    with pytest.raises(ApprovalTampered):
        await other_tool.wait_for_tool_call(v, timeout=5)
    mixed = {**money, "amount": {"amount": 120, "currency": "EUR"}}
    ambiguous = _pe_answering({"state": "approved", "action": {"action": "refund", "fields": mixed}})
    with pytest.raises(ApprovalTampered, match="ambiguous"):
        await ambiguous.wait_for_tool_call(v, timeout=5)
    rejected = _pe_answering({"state": "rejected", "action": {"action": "refund", "fields": money}, "reason": "no"})
    with pytest.raises(ApprovalNotGranted):
        await rejected.wait_for_tool_call(v, timeout=5)
    with pytest.raises(ValueError):
        await ok.wait_for_tool_call(tool_verdicts({"choices": [], "policyengine": {"tool_calls": [
            {"index": 0, "name": "x", "effect": "deny", "reason": "no"}]}})[0])


@SQLITE
async def test_verdicts_of_a_stream(world):
    service, model = world
    model.tool_plan = [("lookup_order", {"order_id": "A1"}), REFUND_150]
    stream = await service.sdk().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": QUESTION}], tools=agent_mod.TOOLS, stream=True)
    calls: dict[int, dict] = {}
    last = None
    async for chunk in stream:
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                acc = calls.setdefault(tc.index, {"id": None, "function": {"name": "", "arguments": ""}})
                acc["id"] = tc.id or acc["id"]
                acc["function"]["name"] += tc.function.name or ""
                acc["function"]["arguments"] += tc.function.arguments or ""
        last = chunk
    lookup, refund = tool_verdicts(last, tool_calls=[calls[i] for i in sorted(calls)])
    assert lookup.allowed and lookup.call().arguments == {"order_id": "A1"}
    assert lookup.call_id == calls[0]["id"]
    assert refund.held and refund.approval_id and refund.arguments["amount"] == 150
