"""OpenTelemetry spans (in-memory exporter) of a real service: a chat that fails over (one span per
attempt, GenAI attributes, under the decision's span) and a held approval (created inside the
decision's span, decided in the reviewer's request); nothing is recorded when tracing is off."""

from __future__ import annotations

import pytest
from api.conftest import running_service

from policyengine import tracing
from policyengine.simulate.faults import Fault

pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk (the otel extra) is not installed")
pytestmark = pytest.mark.timeout(60)

POLICIES = __import__("pathlib").Path(__file__).parents[1] / "console" / "policies"  # no embedding model
MSG = [{"role": "user", "content": "Where is my order?"}]


@pytest.fixture
def exporter():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    tracing.use(provider)
    yield exp
    tracing.use(None)
    provider.shutdown()


def _by_name(spans, prefix):
    return [s for s in spans if s.name.startswith(prefix)]


async def test_spans_of_a_failover_and_of_a_held_approval(tmp_path, monkeypatch, exporter):
    async with running_service(f"sqlite:///{tmp_path / 'pe.db'}", monkeypatch, policy_dir=POLICIES) as svc:
        svc.sims["qwen-72b"].add_fault(Fault(kind="error", status=500, times=1))
        async with svc.client() as c:
            r = await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})
            assert r.status_code == 200
            decision_id, header = r.headers["x-policyengine-decision-id"], r.headers["x-policyengine-attempts"]
            held = (await c.post("/v1/evaluate", json={"action": "refund", "fields": {"amount": "180 GBP"}})).json()
        apr = held["approval"]["approval_id"]
        async with svc.client("reviewer") as c:
            assert (await c.post(f"/v1/approvals/{apr}/approve", json={})).status_code == 200
        spans = exporter.get_finished_spans()

    # the failover: the decision's span, and under it one CLIENT span per attempt, timed by the attempt
    [chat] = [s for s in _by_name(spans, "policyengine.decide chat")
              if s.attributes["policyengine.decision.id"] == decision_id]
    assert chat.attributes["policyengine.effect"] == "allow" and chat.attributes["policyengine.model"] == "gemma-27b"
    attempts = sorted((s for s in _by_name(spans, "chat ") if s.parent and s.parent.span_id == chat.context.span_id),
                      key=lambda s: s.attributes["policyengine.attempt.index"])
    assert [s.name for s in attempts] == ["chat qwen-72b", "chat gemma-27b"]
    failed, ok = attempts
    assert failed.context.trace_id == chat.context.trace_id
    assert failed.attributes["policyengine.attempt.outcome"] == "failover"
    # error.type is the classifier's reason, as the attempts header says it (a vLLM 500: engine_crashed)
    assert f"qwen-72b#PE_T_QWEN_KEY_1:500:failover:{failed.attributes['error.type']}" in header
    assert failed.attributes["policyengine.key_env"] == "PE_T_QWEN_KEY_1"
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.status.status_code.name == "ERROR"
    assert ok.attributes["policyengine.attempt.outcome"] == "ok" and "error.type" not in ok.attributes
    assert ok.attributes["gen_ai.system"] == "openai" and ok.attributes["gen_ai.request.model"] == "gemma-27b"
    assert ok.attributes["gen_ai.response.model"] == "gemma-27b"
    assert ok.attributes["gen_ai.usage.input_tokens"] > 0 and ok.attributes["gen_ai.usage.output_tokens"] > 0
    assert failed.start_time <= failed.end_time <= ok.start_time <= ok.end_time
    assert ok.kind.name == "CLIENT"

    # the held approval: created inside the decision's span; decided in the reviewer's request
    [decide] = _by_name(spans, "policyengine.decide refund")
    assert decide.attributes["policyengine.effect"] == "require_approval"
    assert decide.attributes["policyengine.approval.id"] == apr
    [created] = _by_name(spans, "policyengine.approval created")
    assert created.parent.span_id == decide.context.span_id
    assert created.attributes["policyengine.approval.id"] == apr
    assert created.attributes["policyengine.decision.id"] == held["decision_id"]
    assert created.attributes["policyengine.approval.groups"] == ("refunds",)
    [decided] = _by_name(spans, "policyengine.approval decided")
    assert decided.attributes["policyengine.approval.state"] == "approved"
    assert decided.attributes["policyengine.decision.id"] == held["decision_id"]
    assert decided.attributes["policyengine.approval.via"] == "api"
    assert not any("180 GBP" in str(dict(s.attributes)) for s in spans)  # no field values on spans


async def test_tracing_off_records_nothing():
    assert not tracing.enabled()
    with tracing.span("x", lambda: pytest.fail("attributes built while tracing is off")) as sp:
        assert sp is None
    tracing.attempts(None, [{"model": "m", "started_at": 0.0}], {})  # a no-op


def test_setup_reads_the_endpoint_and_shutdown_switches_off(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert tracing.setup(SimpleNamespace(otel_endpoint=None)) is False
    assert tracing.setup(SimpleNamespace(otel_endpoint="http://127.0.0.1:4318", otel_service_name="pe-test")) is True
    assert tracing._traces_url("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    tracing.shutdown()
    assert not tracing.enabled()


async def test_a_timeout_the_sweep_applies_is_a_decided_span(tmp_path, exporter):
    from datetime import timedelta

    from approvals.helpers import make_service, refund_action, refund_decision

    from policyengine.approvals.service import utcnow

    now = [utcnow()]
    svc, db = await make_service(f"sqlite:///{tmp_path}/a.db", clock=lambda: now[0])
    try:
        res = await svc.hold(action=refund_action(), decision=refund_decision([], timeout_s=60), decision_id="d-1")
        now[0] += timedelta(seconds=61)
        assert await svc.sweep_timeouts() == 1
    finally:
        await db.aclose()
    [ev] = _by_name(exporter.get_finished_spans(), "policyengine.approval decided")
    assert ev.attributes["policyengine.approval.id"] == res.approval_id
    assert ev.attributes["policyengine.approval.via"] == "timer"
    assert ev.attributes["policyengine.approval.state"] == "expired"
    assert ev.attributes["policyengine.decision.id"] == "d-1"


EMBED_POLICY = """\
policy "trace-embed" version 1
model qwen-72b {
  provider openai
  base_url env("PE_T_QWEN_URL")
}
model embed-a {
  provider openai
  base_url env("PE_T_KIMI_URL")
  model_id "kimi-large"
  serves [embeddings]
}
model embed-b {
  provider openai
  base_url env("PE_T_GEMMA_URL")
  model_id "gemma-27b"
  serves [embeddings]
}
route default -> qwen-72b
route default -> embed-a fallback [embed-b]
authorize chat
"""


async def test_an_embeddings_failover_is_traced_as_embeddings(tmp_path, monkeypatch, exporter):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "e.policy").write_text(EMBED_POLICY)
    async with running_service(f"sqlite:///{tmp_path / 'pe.db'}", monkeypatch, policy_dir=tmp_path / "p") as svc:
        svc.sims["kimi-large"].add_fault(Fault(kind="error", status=500, times=1))
        async with svc.client() as c:
            r = await c.post("/v1/embeddings", json={"model": "auto", "input": ["hello"]})
            assert r.status_code == 200, r.text
        spans = exporter.get_finished_spans()
    [decide] = _by_name(spans, "policyengine.decide embeddings")
    atts = sorted(_by_name(spans, "embeddings "), key=lambda s: s.attributes["policyengine.attempt.index"])
    assert [s.name for s in atts] == ["embeddings kimi-large", "embeddings gemma-27b"]
    assert all(s.parent.span_id == decide.context.span_id for s in atts)
    assert [s.attributes["policyengine.attempt.outcome"] for s in atts] == ["failover", "ok"]
    assert atts[1].attributes["gen_ai.operation.name"] == "embeddings"
    assert decide.attributes["policyengine.model"] == "embed-b"
