"""Deployments and hedging declared in a policy, through the real service: the OpenAI SDK as
client, two simulated replicas of one model, the attempts header and GET /v1/fleet."""

from __future__ import annotations

import pytest

from policyengine.simulate.server import SimServer

from .conftest import running_service

pytestmark = pytest.mark.timeout(90)

POLICY = '''policy "fleet" version 1
model qwen-72b {
  provider vllm
  keys [env("PE_T_QWEN_KEY_1")]
  deployment gpu-a { base_url env("PE_T_QWEN_URL") weight 1000 }
  deployment gpu-b { base_url env("PE_T_QWEN_B_URL") weight 0.001 }
}
route default -> qwen-72b hedge after 150ms budget 100%
'''


async def test_a_slow_replica_is_hedged_and_the_fleet_shows_both(tmp_path, monkeypatch) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "fleet.policy").write_text(POLICY)
    b = SimServer("qwen-72b", flavour="vllm")
    await b.start()
    monkeypatch.setenv("PE_T_QWEN_B_URL", b.url)
    try:
        async with running_service(f"sqlite:///{tmp_path / 'pe.db'}", monkeypatch,
                                   policy_dir=tmp_path / "policies") as svc:
            svc.sims["qwen-72b"].latency = 3.0  # gpu-a (weighted first) answers after 3 s
            sdk = svc.sdk()  # budget 100%: every request earns the hedge it may need
            raw = await sdk.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": "hello"}])
            assert raw.parse().choices[0].message.content
            header = raw.headers["x-policyengine-attempts"]
            assert "qwen-72b@gpu-b" in header and ":200:ok" in header and "hedge_cancelled" in header, header
            assert len(b.seen()) == 1
            async with svc.client("admin") as c:
                fleet = (await c.get("/v1/fleet")).json()
            deps = next(m for m in fleet["models"] if m["name"] == "qwen-72b")["deployments"]
            assert [d["state_id"] for d in deps] == ["qwen-72b@gpu-a", "qwen-72b@gpu-b"]
    finally:
        await b.stop()
