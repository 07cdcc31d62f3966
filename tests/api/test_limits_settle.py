"""Settling limits on every way a chat can end, through the real service (uvicorn on 127.0.0.1, simulated
upstreams over real HTTP, in-memory counters):

  * a stream the client leaves mid-answer is charged for what was relayed, its reservation given back;
  * a stream the client leaves before the first chunk, and one whose task is cancelled before the
    first chunk (as an ASGI server that cancels on disconnect does), give their reservation back;
  * after a failover the reservation moves to the model that answered (a limit `on model X` is not
    charged when another model answered; a counter `per model` is charged on the answering model's);
  * a threshold first reached by a settlement (the answer was longer than the estimate) sends its notice;
  * a chat held for approval (409) gives back what it reserved: no model was called.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from policyengine.simulate.faults import Fault

pytestmark = pytest.mark.asyncio

POLICY = '''policy "settle-test" version 1
model qwen-72b {
  provider openai
  base_url env("PE_T_QWEN_URL")
  keys [env("PE_T_QWEN_KEY_1")]
  cost 1 GBP per 1k tokens
}
model gemma-27b { provider openai base_url env("PE_T_GEMMA_URL") cost 0 }
model kimi-large { provider openai base_url env("PE_T_KIMI_URL") cost 2 GBP per 1k tokens }

route default -> qwen-72b
route when use_case == "failover" -> kimi-large fallback [qwen-72b]
authorize chat

budget 10 GBP per day per tenant, use_case when use_case == "stream"
limit requests 100 per hour per tenant, use_case when use_case == "stream"
limit tokens 100000 per hour per tenant on model kimi-large when use_case == "failover"
limit tokens 100000 per hour per tenant, model when use_case == "failover"
budget 10 GBP per day per tenant, model when use_case == "failover"
budget 0.05 GBP per day per tenant, use_case when use_case == "notice" {
  at 50% notify webhook "https://hooks.example.com/budget"
}
limit requests 100 per hour per tenant, use_case when use_case == "held"
budget 10 GBP per day per tenant, use_case when use_case == "held"
lexicon litigation ["solicitor"]
escalate when text mentions litigation by words {
  on chat hold
}
'''

MSG = [{"role": "user", "content": "Hello there."}]
HEADERS = {"X-PolicyEngine-Actor": "bob"}


@pytest.fixture
def settle_dir(tmp_path: Path) -> Path:
    d = tmp_path / "pol"
    d.mkdir()
    (d / "settle.policy").write_text(POLICY)
    return d


async def _counters(svc, use_case: str) -> dict[tuple[str, str], dict]:
    """The live counters of this use case, by (kind, scope)."""
    async with svc.client("admin") as c:
        r = await c.get("/v1/usage")
    assert r.status_code == 200, r.text
    failover = ("settle.policy:17", "settle.policy:18", "settle.policy:19")
    return {(u["kind"], u["scope"]): u for u in r.json()["counters"]
            if f"use_case={use_case}" in u["scope"] or (use_case == "failover" and u["rule_id"] in failover)}


async def _released(svc, use_case: str) -> dict[tuple[str, str], dict]:
    """The counters once nothing is reserved on them any more (the server settles after the client left)."""
    for _ in range(200):
        got = await _counters(svc, use_case)
        if got and all(u["reserved"] in ("0", "0 GBP") for u in got.values()):
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"the reservation was never given back: {got}")


async def _outcome(svc, decision_id: str) -> dict:
    async with svc.client() as c:
        for _ in range(200):
            r = await c.get(f"/v1/decisions/{decision_id}")
            if r.status_code == 200 and "outcome_row" in r.json():
                return r.json()["outcome_row"]["record"]["extra"]
            await asyncio.sleep(0.05)
    raise AssertionError(f"no outcome row for {decision_id}")


async def _decision_ids(svc) -> list[str]:
    async with svc.client("admin") as c:
        r = await c.get("/v1/decisions", params={"limit": 50, "kind": "chat"})
    assert r.status_code == 200, r.text
    return [d["id"] for d in r.json()["data"]]


async def test_a_stream_left_mid_answer_is_charged_for_what_was_relayed(service_factory, settle_dir, tmp_path):
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=settle_dir) as svc:
        svc.sims["qwen-72b"].chunk_delay = 0.2  # a slow answer: the client leaves after the first chunk
        async with svc.client() as c, c.stream(
                "POST", "/v1/chat/completions", headers={**HEADERS, "X-PolicyEngine-Use-Case": "stream"},
                json={"model": "auto", "messages": MSG, "max_tokens": 40, "stream": True}) as r:
            assert r.status_code == 200
            did = r.headers["x-policyengine-decision-id"]
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    break  # close the connection with the answer half-sent
        got = await _released(svc, "stream")
        spend = got[("spend", "tenant=acme,use_case=stream")]
        requests = got[("requests", "tenant=acme,use_case=stream")]
        assert requests["used"] == "1"
        extra = await _outcome(svc, did)
        assert extra["outcome"] == "client_disconnected" and extra["complete"] is False
        # what was relayed is charged (the prompt and the text sent so far), not the 44-token estimate
        assert extra["usage"]["total_tokens"] < 44 and extra["usage"]["completion_tokens"] >= 1
        assert spend["used"] == f"{extra['cost']['amount']} GBP" and spend["used"] != "0 GBP"


async def test_a_stream_left_before_its_first_chunk_gives_its_reservation_back(service_factory, settle_dir,
                                                                                tmp_path):
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=settle_dir) as svc:
        svc.sims["qwen-72b"].add_fault(Fault(kind="slow_first_token", delay=1.0))
        svc.sims["qwen-72b"].chunk_delay = 0.1
        async with httpx.AsyncClient(base_url=svc.url, headers={"Authorization": f"Bearer {svc.tokens['app']}"},
                                     timeout=httpx.Timeout(30, read=0.3)) as c:
            with pytest.raises(httpx.ReadTimeout):
                async with c.stream("POST", "/v1/chat/completions",
                                    headers={**HEADERS, "X-PolicyEngine-Use-Case": "stream"},
                                    json={"model": "auto", "messages": MSG, "max_tokens": 40, "stream": True}) as r:
                    await r.aread()
        got = await _released(svc, "stream")
        assert got[("requests", "tenant=acme,use_case=stream")]["used"] == "1"
        [did] = await _decision_ids(svc)
        assert (await _outcome(svc, did))["outcome"] == "client_disconnected"


async def test_a_stream_cancelled_before_its_first_chunk_gives_its_reservation_back(service_factory, settle_dir,
                                                                                     tmp_path):
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=settle_dir) as svc:
        sim = svc.sims["qwen-72b"]
        sim.add_fault(Fault(kind="slow_first_token", delay=30))
        raw = json.dumps({"model": "auto", "messages": MSG, "max_tokens": 40, "stream": True}).encode()
        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "root_path": "",
                 "scheme": "http", "query_string": b"", "http_version": "1.1", "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 2),
                 "headers": [(b"content-type", b"application/json"),
                             (b"authorization", f"Bearer {svc.tokens['app']}".encode()),
                             (b"x-policyengine-use-case", b"stream"), (b"x-policyengine-actor", b"bob"),
                             (b"content-length", str(len(raw)).encode())]}
        sent: list[dict] = []
        first = asyncio.Event()

        async def receive() -> dict:
            if not first.is_set():
                first.set()
                return {"type": "http.request", "body": raw, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        # the app itself, called the way an ASGI server that cancels a request on disconnect calls it
        task = asyncio.create_task(svc.app(scope, receive, send))
        for _ in range(200):
            if sim.requests:
                break
            await asyncio.sleep(0.02)
        assert sim.requests, "the upstream never saw the request"
        before = await _counters(svc, "stream")
        assert before[("spend", "tenant=acme,use_case=stream")]["reserved"] != "0 GBP"  # held while it waits
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not sent  # nothing was answered
        got = await _released(svc, "stream")
        assert got[("spend", "tenant=acme,use_case=stream")]["used"] == "0 GBP"
        assert got[("requests", "tenant=acme,use_case=stream")]["used"] == "1"  # the request was made
        [did] = await _decision_ids(svc)
        assert (await _outcome(svc, did))["outcome"] == "cancelled"


async def test_after_a_failover_the_answering_model_is_charged(service_factory, settle_dir, tmp_path):
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=settle_dir) as svc:
        svc.sims["kimi-large"].add_fault(Fault(kind="error", status=500, times=None))
        async with svc.client() as c:
            r = await c.post("/v1/chat/completions", headers={**HEADERS, "X-PolicyEngine-Use-Case": "failover"},
                             json={"model": "auto", "messages": MSG, "max_tokens": 40})
        assert r.status_code == 200, r.text
        assert r.headers["x-policyengine-model"] == "qwen-72b"  # the fallback answered
        extra = await _outcome(svc, r.headers["x-policyengine-decision-id"])
        total = extra["usage"]["total_tokens"]
        got = await _counters(svc, "failover")
        # `on model kimi-large`: kimi did not answer, so nothing is charged and the reservation is back
        assert got[("tokens", "tenant=acme")]["used"] == "0" and got[("tokens", "tenant=acme")]["reserved"] == "0"
        # `per tenant, model`: released on kimi's counter, charged on qwen's (at qwen's price)
        kimi, qwen = got[("tokens", "tenant=acme,model=kimi-large")], got[("tokens", "tenant=acme,model=qwen-72b")]
        assert (kimi["used"], kimi["reserved"]) == ("0", "0")
        assert (qwen["used"], qwen["reserved"]) == (str(total), "0")
        spend = got[("spend", "tenant=acme,model=qwen-72b")]
        assert spend["used"] == f"{extra['cost']['amount']} GBP" == f"{total / 1000:g} GBP"
        assert got[("spend", "tenant=acme,model=kimi-large")]["used"] == "0 GBP"
        rows = {(x["rule_id"], x["scope"]): x for x in extra["limits"]["counters"]}
        assert rows[("settle.policy:17", "tenant=acme")]["released"] == "answered by qwen-72b"
        assert rows[("settle.policy:18", "tenant=acme,model=qwen-72b")]["moved_from"] == "tenant=acme,model=kimi-large"


async def test_a_threshold_reached_on_settlement_sends_its_notice(service_factory, settle_dir, tmp_path):
    # estimate: 4 prompt tokens + 1 answer token (no max_tokens) = 0.005 GBP, under 50% of 0.05 GBP;
    # the simulated answer is longer: the settlement is what reaches 50%
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=settle_dir,
                               limits_default_completion_tokens=1) as svc:
        sent = []

        class Sender:
            async def send(self, kind, target, payload, *, key=None):
                sent.append((kind, payload))
                return {}

        svc.runtime.limit_sender = Sender()
        async with svc.client() as c:
            r = await c.post("/v1/chat/completions", headers={**HEADERS, "X-PolicyEngine-Use-Case": "notice"},
                             json={"model": "auto", "messages": MSG})
            assert r.status_code == 200, r.text
            extra = await _outcome(svc, r.headers["x-policyengine-decision-id"])
            assert float(extra["cost"]["amount"]) >= 0.025  # the answer crossed 50%
            for _ in range(100):
                if sent:
                    break
                await asyncio.sleep(0.02)
            assert [(k, p["percent"]) for k, p in sent] == [("webhook", 50)]
            assert sent[0][1]["used"] == extra["cost"]["amount"] + " GBP"
            # once per window: the next request does not send it again
            r = await c.post("/v1/chat/completions", headers={**HEADERS, "X-PolicyEngine-Use-Case": "notice"},
                             json={"model": "auto", "messages": MSG, "max_tokens": 2})
            await asyncio.sleep(0.2)
        assert len(sent) == 1


async def test_usage_window_parameter(service_factory, settle_dir, tmp_path):
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=settle_dir) as svc:
        async with svc.client() as c:
            r = await c.post("/v1/chat/completions", headers={**HEADERS, "X-PolicyEngine-Use-Case": "stream"},
                             json={"model": "auto", "messages": MSG, "max_tokens": 40})
            assert r.status_code == 200
            bad = await c.get("/v1/usage", params={"window": "yesterday"})
            every = await c.get("/v1/usage", params={"window": "all"})
            prev = await c.get("/v1/usage", params={"window": "previous"})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "window"
        assert {u["window_state"] for u in every.json()["counters"]} == {"current"}
        assert prev.status_code == 200 and prev.json()["counters"] == [] and prev.json()["window"] == "previous"


async def test_a_chat_held_for_approval_gives_its_reservation_back(service_factory, settle_dir, tmp_path):
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=settle_dir) as svc:
        async with svc.client() as c:
            r = await c.post("/v1/chat/completions", headers={**HEADERS, "X-PolicyEngine-Use-Case": "held"},
                             json={"model": "auto", "max_tokens": 40,
                                   "messages": [{"role": "user", "content": "My solicitor will call you."}]})
        assert r.status_code == 409 and r.json()["error"]["code"] == "approval_required", r.text
        got = await _counters(svc, "held")
        assert {k: (u["used"], u["reserved"]) for k, u in got.items()} == {
            ("requests", "tenant=acme,use_case=held"): ("0", "0"),
            ("spend", "tenant=acme,use_case=held"): ("0 GBP", "0 GBP")}
        assert not svc.sims["qwen-72b"].requests


FALLBACK_POLICY = '''policy "fallback-limit" version 1
model qwen-72b {
  provider openai
  base_url env("PE_T_QWEN_URL")
  keys [env("PE_T_QWEN_KEY_1")]
  cost 1 GBP per 1k tokens
}
model kimi-large { provider openai base_url env("PE_T_KIMI_URL") cost 2 GBP per 1k tokens }

route default -> kimi-large fallback [qwen-72b]
authorize chat

limit tokens 100000 per hour per tenant on model qwen-72b
budget 10 GBP per day per tenant on model qwen-72b
'''


async def test_a_limit_on_the_fallback_is_charged_when_the_fallback_answers(service_factory, tmp_path):
    d = tmp_path / "pol"
    d.mkdir()
    (d / "fallback.policy").write_text(FALLBACK_POLICY)
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=d) as svc:
        async with svc.client() as c:  # the primary answers: the fallback's limits count nothing
            r = await c.post("/v1/chat/completions", headers=HEADERS,
                             json={"model": "auto", "messages": MSG, "max_tokens": 40})
        assert r.status_code == 200 and r.headers["x-policyengine-model"] == "kimi-large"
        svc.sims["kimi-large"].add_fault(Fault(kind="error", status=500, times=None))
        async with svc.client() as c:
            r = await c.post("/v1/chat/completions", headers=HEADERS,
                             json={"model": "auto", "messages": MSG, "max_tokens": 40})
        assert r.status_code == 200 and r.headers["x-policyengine-model"] == "qwen-72b"
        extra = await _outcome(svc, r.headers["x-policyengine-decision-id"])
        total = extra["usage"]["total_tokens"]
        rows = {x["rule_id"]: x for x in extra["limits"]["counters"]}
        assert rows["fallback.policy:13"] == {"rule_id": "fallback.policy:13", "scope": "tenant=acme",
                                              "charged": str(total), "answered_by": "qwen-72b"}
        assert rows["fallback.policy:14"]["charged"] == f"{total / 1000:g} GBP"
        async with svc.client("admin") as c:
            usage = (await c.get("/v1/usage")).json()["counters"]
        got = {u["rule_id"]: u for u in usage}
        assert got["fallback.policy:13"]["used"] == str(total)  # only the answer qwen served
        assert got["fallback.policy:14"]["used"] == f"{total / 1000:g} GBP"
