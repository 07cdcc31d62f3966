"""A `shadow limit` through the real service (in-memory counters): it is counted, and past its limit
every request still gets through, with the would-be refusal on the decision and its log row."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.asyncio

POLICY = '''policy "shadow-limits" version 1
model qwen-72b { provider openai base_url env("PE_T_QWEN_URL") keys [env("PE_T_QWEN_KEY_1")] cost 0 }
route default -> qwen-72b
authorize chat
shadow limit requests 2 per minute per user
limit requests 50 per minute per user
'''

MSG = [{"role": "user", "content": "Hello there."}]


async def test_shadow_limit_counts_and_logs_but_never_refuses(service_factory, tmp_path: Path) -> None:
    d = tmp_path / "pol"
    d.mkdir()
    (d / "limits.policy").write_text(POLICY)
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=d) as svc:
        async with svc.client() as c:
            rs = [await c.post("/v1/chat/completions", headers={"X-PolicyEngine-Actor": "bob"},
                               json={"model": "auto", "messages": MSG, "max_tokens": 20}) for _ in range(3)]
            assert [r.status_code for r in rs] == [200, 200, 200], [r.text for r in rs]
            rows = []
            for r in rs:
                got = await c.get(f"/v1/decisions/{r.headers['x-policyengine-decision-id']}")
                assert got.status_code == 200, got.text
                rows.append(got.json()["record"])
        assert [row.get("shadow_effect") for row in rows] == [None, None, "deny"]
        [hit] = rows[2]["shadow"]
        assert hit["kind"] == "limit" and hit["effect"] == "deny" and hit["rule_id"] == "limits.policy:5"
        assert "shadow: not enforced" in hit["because"] and rows[2]["effect"] == "allow"
        assert hit["source"] == "shadow limit requests 2 per minute per user"
        async with svc.client("admin") as c:
            usage = (await c.get("/v1/usage")).json()
        counted = {u["rule_id"]: u["used"] for u in usage["counters"] if u["scope"] == "user=bob"}
        assert counted == {"limits.policy:5": "3", "limits.policy:6": "3"}
