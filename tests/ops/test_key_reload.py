"""Provider keys without restarts: a watched secrets file and SIGHUP re-read the keys, and a cooldown
the bad key earned clears when the key changes."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from api.conftest import running_service

from policyengine.gateway.secrets import SecretsFile

pytestmark = pytest.mark.timeout(60)

MSG = [{"role": "user", "content": "Where is my order?"}]


async def _chat(svc) -> str:
    async with svc.client() as c:
        r = await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})
        assert r.status_code == 200, r.text
        return r.headers["x-policyengine-attempts"]


async def _cooldowns(svc) -> list[str]:
    return sorted(c.scope for c in await svc.runtime.state.cooldowns())


async def test_a_fixed_key_in_the_watched_secrets_file_serves_at_once(tmp_path, monkeypatch):
    secrets = tmp_path / "provider.env"
    secrets.write_text("# provider keys\nPE_T_QWEN_KEY_1=wrong-key\n")
    async with running_service(f"sqlite:///{tmp_path / 'pe.db'}", monkeypatch, secrets_file=str(secrets),
                               secrets_poll_s=0.05) as svc:
        assert os.environ["PE_T_QWEN_KEY_1"] == "wrong-key"  # the file wins over the environment at start
        first = await _chat(svc)
        assert first.startswith("qwen-72b#PE_T_QWEN_KEY_1:401:failover:auth_"), first
        assert await _cooldowns(svc) == ["key:qwen-72b/PE_T_QWEN_KEY_1"]
        assert (await _chat(svc)).startswith("qwen-72b#PE_T_QWEN_KEY_1:skipped:cooldown:auth_")
        secrets.write_text("PE_T_QWEN_KEY_1=qk1\n# rotated\n")
        for _ in range(200):
            if not await _cooldowns(svc):
                break
            await asyncio.sleep(0.05)
        assert await _cooldowns(svc) == []  # cleared because the key changed, not after 300 s
        assert os.environ["PE_T_QWEN_KEY_1"] == "qk1"
        assert (await _chat(svc)) == "qwen-72b#PE_T_QWEN_KEY_1:200:ok"


async def test_sighup_rereads_a_secrets_directory(tmp_path, monkeypatch):
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "PE_T_QWEN_KEY_1").write_text("wrong-key\n")
    (d / ".hidden").write_text("ignored")
    async with running_service(f"sqlite:///{tmp_path / 'pe.db'}", monkeypatch, secrets_file=str(d),
                               secrets_poll_s=0) as svc:
        if signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, None):
            pytest.skip("the service could not install its SIGHUP handler in this process")
        assert (await _chat(svc)).startswith("qwen-72b#PE_T_QWEN_KEY_1:401:failover")
        (d / "PE_T_QWEN_KEY_1").write_text("qk1\n")
        await asyncio.sleep(0.1)
        assert await _cooldowns(svc) == ["key:qwen-72b/PE_T_QWEN_KEY_1"]  # no watcher: nothing yet
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(200):
            if not await _cooldowns(svc):
                break
            await asyncio.sleep(0.05)
        assert await _cooldowns(svc) == []
        assert (await _chat(svc)) == "qwen-72b#PE_T_QWEN_KEY_1:200:ok"


def test_secrets_file_sets_changes_and_removes_only_its_own_names(tmp_path):
    env: dict[str, str] = {"OTHER": "kept"}
    f = tmp_path / "s.env"
    f.write_text("A=1\nB='two words'\nnot a line\n")
    sf = SecretsFile(f, env)
    assert sf.load() == {"A", "B"} and env == {"OTHER": "kept", "A": "1", "B": "two words"}
    assert sf.load() == set() and not sf.changed_on_disk()
    f.write_text("A=2\n")
    assert sf.changed_on_disk()
    assert sf.load() == {"A", "B"} and env == {"OTHER": "kept", "A": "2"}
    f.unlink()
    assert sf.load() == set() and env["A"] == "2"  # an unreadable file changes nothing
