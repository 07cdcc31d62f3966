"""`policyengine doctor` against real local servers: each misconfiguration the issue names is caught
(an unset env URL, an Ollama URL without /v1, an unreachable endpoint, a model the endpoint does not
list, a channel that does not resolve, a group nobody reviews) and the exit code says how bad."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from approvals.harness import Recorder, SmtpSink
from helpers.net import free_port
from typer.testing import CliRunner

from policyengine.cli import app
from policyengine.doctor import diagnose
from policyengine.settings import SeedKey, Settings
from policyengine.simulate.server import SimServer
from policyengine.store import ApiKeyRepo, Database, upgrade

pytestmark = pytest.mark.timeout(60)

GOOD = """\
policy "doc-good" version 1
model qwen-72b {{
  provider openai
  base_url env("DOC_QWEN_URL")
  keys [env("DOC_QWEN_KEY")]
}}
route default -> qwen-72b
authorize chat
require approval for refund when amount > 100 GBP {{
  reviewers group "refunds"    notify email "refunds@example.com", teams "refunds"
}}
"""

BAD = """\
policy "doc-bad" version 1
model unset-url {{
  provider openai
  base_url env("DOC_UNSET_URL")
}}
model gemma-ollama {{
  provider openai
  base_url env("DOC_OLLAMA_URL")
}}
model kimi-down {{
  provider openai
  base_url "{down}"
}}
model qwen-72b {{
  provider openai
  base_url "{qwen}"
}}
model local-ollama {{
  provider openai
  base_url "http://127.0.0.1:11434"
}}
model private {{
  provider openai
  base_url "http://10.1.2.3/v1"
}}
model doubled {{
  provider openai
  base_url "http://127.0.0.1:9/v1/chat/completions"
}}
model cleartext {{
  provider openai
  base_url "http://models.example.invalid/v1"
}}
route default -> qwen-72b fallback [gemma-ollama, kimi-down, unset-url]
authorize chat
require approval for refund when amount > 100 GBP {{
  reviewers group "legal"      notify teams "nowhere", slack "#refunds"
}}
"""


def _settings(tmp_path: Path, text: str, **kw) -> Settings:
    p = tmp_path / "p.policy"
    p.write_text(text)
    return Settings(database_url=f"sqlite:///{tmp_path / 'pe.db'}", policy_path=[str(p)], **kw)


async def test_a_good_configuration_passes_with_every_probe(tmp_path, monkeypatch):
    sim = await SimServer("qwen-72b", keys=["k1"]).start()
    rec = Recorder().start()
    try:
        with SmtpSink() as smtp:
            monkeypatch.setenv("DOC_QWEN_URL", sim.url)
            monkeypatch.setenv("DOC_QWEN_KEY", "k1")
            monkeypatch.setenv("DOC_REVIEWER", "tok-doc-reviewer-0123456789abcdef")
            monkeypatch.setenv("POLICYENGINE_APPROVALS_LINK_SECRET", "doc-link-secret-0123456789abcdef")
            monkeypatch.setenv("POLICYENGINE_APPROVALS_SMTP_PORT", str(smtp.port))
            monkeypatch.setenv("POLICYENGINE_APPROVALS_TEAMS_WEBHOOKS", json.dumps({"refunds": f"{rec.url}/teams"}))
            settings = _settings(tmp_path, GOOD.format(), seed_keys=[SeedKey(
                token_env="DOC_REVIEWER", tenant="acme", roles=["reviewer"], subject="rita", groups=["refunds"])])
            report = await diagnose(settings, chat=True)
            assert report.exit_code == 0, [f for f in report.findings if f.severity != "ok"]
            codes = {f.code for f in report.findings}
            assert {"env_set", "url_ok", "model_listed", "chat_ok", "smtp_ok", "channel_ok", "reviewers_ok"} <= codes
            assert "k1" not in json.dumps([f.as_dict() for f in report.findings])  # never a key's value
            assert len(sim.requests) == 1  # the one-token chat; /models is not a chat
    finally:
        rec.stop()
        await sim.stop()


async def test_each_misconfiguration_is_an_error_with_exit_code_2(tmp_path, monkeypatch):
    ollama = await SimServer("gemma-27b", flavour="ollama").start()
    qwen = await SimServer("qwen-72b", served_model="Qwen/Qwen2.5-72B-Instruct").start()
    try:
        monkeypatch.delenv("DOC_UNSET_URL", raising=False)
        monkeypatch.setenv("DOC_OLLAMA_URL", ollama.base)  # no /v1
        monkeypatch.setenv("POLICYENGINE_APPROVALS_LINK_SECRET", "doc-link-secret-0123456789abcdef")
        monkeypatch.delenv("POLICYENGINE_APPROVALS_SLACK_BOT_TOKEN", raising=False)
        down = f"http://127.0.0.1:{free_port()}/v1"
        # private addresses refused except loopback (the local servers)
        settings = _settings(tmp_path, BAD.format(down=down, qwen=qwen.url), model_hosts_allow_private=False,
                             model_hosts_allow=["127.0.0.1"])
        upgrade(settings.database_url)  # a key store whose only reviewer is in group refunds
        db = Database.open(settings.database_url)
        await ApiKeyRepo(db.sessionmaker).create(tenant="acme", roles={"reviewer"}, subject="rita", groups={"refunds"})
        await db.aclose()
        report = await diagnose(settings, timeout=2)
        found = {(f.code, f.subject) for f in report.findings if f.severity != "ok"}
        assert ("env_unset", "DOC_UNSET_URL") in found
        assert ("ollama_without_v1", "gemma-ollama") in found  # probed: /models 404, /v1/models answers
        assert ("ollama_without_v1", "local-ollama") in found  # by its shape (port 11434)
        assert ("unreachable", "kimi-down") in found
        assert ("model_not_listed", "qwen-72b") in found
        assert ("outbound_refused", "private") in found
        assert ("url_endpoint_path", "doubled") in found
        assert ("plaintext_http", "cleartext") in found and ("host_unresolved", "cleartext") in found
        assert ("channel_unresolved", "teams nowhere") in found
        assert ("slack_token_unset", "slack #refunds") in found
        assert ("reviewers_missing", "group legal") in found
        where = next(f.where for f in report.findings if f.code == "env_unset")
        assert where.endswith("p.policy:2")
        assert report.exit_code == 2

        monkeypatch.setenv("POLICYENGINE_MODEL_HOSTS_ALLOW_PRIVATE", "false")
        monkeypatch.setenv("POLICYENGINE_MODEL_HOSTS_ALLOW", "127.0.0.1")
        cli = ["doctor", "--policy", settings.policy_path[0], "--json", "--timeout", "2"]
        res = await asyncio.to_thread(CliRunner().invoke, app, cli)  # the servers answer on this loop
        assert res.exit_code == 2, res.output
        data = json.loads(res.output)
        assert data["exit_code"] == 2 and data["errors"] >= 11
        res = await asyncio.to_thread(CliRunner().invoke, app, ["doctor", "--policy", settings.policy_path[0], "--no-probe"])
        assert res.exit_code == 2 and "env_unset" in res.output and "DOC_UNSET_URL" in res.output
    finally:
        await ollama.stop()
        await qwen.stop()


def test_warnings_only_exit_1_and_a_policy_error_exit_2(tmp_path):
    p = tmp_path / "w.policy"
    p.write_text('policy "w" version 1\nmodel m {\n  provider openai\n  base_url "http://93.184.216.34/v1"\n}\n'
                 "route default -> m\nauthorize chat\n")
    res = CliRunner().invoke(app, ["doctor", "--policy", str(p), "--no-probe", "--json"])
    assert res.exit_code == 1, res.output
    assert [f["code"] for f in json.loads(res.output)["findings"] if f["severity"] != "ok"] == ["plaintext_http"]
    p.write_text('policy "w" version 1\nmodel m {\n  provider openai\n  base_url "http://169.254.169.254/v1"\n}\n'
                 "route default -> m\n")  # the checker refuses a metadata address: a policy error
    res = CliRunner().invoke(app, ["doctor", "--policy", str(p), "--no-probe", "--json"])
    assert res.exit_code == 2
    assert json.loads(res.output)["findings"][0]["where"].startswith(str(p))


async def test_an_anthropic_model_is_probed_with_a_one_token_message(tmp_path, monkeypatch):
    from policyengine.simulate.anthropic import SimAnthropic

    sim = await SimAnthropic(keys=["ck1"], models=["claude-sim-1"]).start()
    try:
        monkeypatch.setenv("DOC_CLAUDE_URL", sim.url)
        monkeypatch.setenv("DOC_CLAUDE_KEY", "wrong")
        policy = ('policy "a" version 1\nmodel claude {\n  provider anthropic\n  base_url env("DOC_CLAUDE_URL")\n'
                  '  keys [env("DOC_CLAUDE_KEY")]\n  model_id "claude-sim-1"\n}\nroute default -> claude\nauthorize chat\n')
        settings = _settings(tmp_path, policy)
        assert {f.code for f in (await diagnose(settings)).findings} >= {"env_set", "url_ok", "not_probed"}
        report = await diagnose(settings, chat=True)
        assert [(f.code, f.subject) for f in report.errors] == [("auth_refused", "claude")]
        monkeypatch.setenv("DOC_CLAUDE_KEY", "ck1")
        report = await diagnose(settings, chat=True)
        assert report.exit_code == 0 and "chat_ok" in {f.code for f in report.findings}
    finally:
        await sim.stop()
