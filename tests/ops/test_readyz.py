"""/readyz is not ready until the models and classifiers the policy needs are loaded and warm."""

from __future__ import annotations

import asyncio
import threading

import pytest
from api.conftest import running_service

from policyengine.gateway import readiness

pytestmark = pytest.mark.timeout(90)


async def _ready(c) -> tuple[int, dict]:
    r = await c.get("/readyz")
    return r.status_code, r.json()


async def test_readyz_waits_for_the_embedding_model_then_turns_ready(tmp_path, monkeypatch):
    gate = threading.Event()
    real = readiness.warm
    calls: list[list[str]] = []

    def gated(rt, needs):
        calls.append(list(needs))
        assert gate.wait(30)
        return real(rt, needs)

    monkeypatch.setattr(readiness, "warm", gated)
    async with running_service(f"sqlite:///{tmp_path / 'pe.db'}", monkeypatch, wait_ready=False) as svc, svc.client() as c:
        status, body = await _ready(c)
        # the test policy has `verify ... divergence > 0.25` and `text mentions litigation` (intent-aware):
        # the embedding model and the litigation classifier must be loaded first
        assert status == 503 and body["checks"]["signals"] == "loading: divergence, intent:litigation", body
        assert body["checks"]["database"] == "ok" and body["checks"]["policy"].startswith("ok")
        gate.set()
        for _ in range(600):
            status, body = await _ready(c)
            if status == 200:
                break
            await asyncio.sleep(0.05)
        assert status == 200 and body["checks"]["signals"] == "ok divergence, intent:litigation", body
        assert calls == [["divergence", "intent:litigation"]]


async def test_readyz_reports_a_failed_warm_up(tmp_path, monkeypatch):
    def broken(rt, needs):
        raise RuntimeError("model files missing")

    monkeypatch.setattr(readiness, "warm", broken)
    async with running_service(f"sqlite:///{tmp_path / 'pe.db'}", monkeypatch, wait_ready=False) as svc, svc.client() as c:
        for _ in range(200):
            status, body = await _ready(c)
            if body["checks"]["signals"].startswith("error"):
                break
            await asyncio.sleep(0.05)
        assert status == 503 and body["checks"]["signals"] == "error: RuntimeError while loading divergence, intent:litigation"


def test_needed_warmups_names_exactly_what_the_policy_reads(tmp_path):
    from policyengine.dsl import load_policy_set

    (tmp_path / "a.policy").write_text(
        'policy "w" version 1\n'
        'model m { provider openai base_url "http://127.0.0.1:9/v1" }\n'
        'route default -> m\n'
        'authorize chat\n'
        'escalate when sentiment < 0.3\n'
        'lexicon litigation ["sue"]\n'
        'escalate when text mentions litigation by intent\n')
    (tmp_path / "b.policy").write_text(
        'policy "plain" version 1\nmodel m { provider openai base_url "http://127.0.0.1:9/v1" }\n'
        'route default -> m\nauthorize chat\nlexicon litigation ["sue"]\nescalate when text mentions litigation\n')
    assert readiness.needed_warmups(load_policy_set([str(tmp_path / "a.policy")])) == ["intent:litigation", "sentiment"]
    # `text mentions litigation` without a mode is intent-aware: its classifier is loaded too
    assert readiness.needed_warmups(load_policy_set([str(tmp_path / "b.policy")])) == ["intent:litigation"]
    (tmp_path / "c.policy").write_text(
        'policy "words" version 1\nmodel m { provider openai base_url "http://127.0.0.1:9/v1" }\n'
        'route default -> m\nauthorize chat\nlexicon refunds ["refund"]\nescalate when text mentions refunds\n'
        'lexicon litigation ["sue"]\nescalate when text mentions litigation by words\n')
    assert readiness.needed_warmups(load_policy_set([str(tmp_path / "c.policy")])) == []
