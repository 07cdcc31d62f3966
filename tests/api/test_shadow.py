"""Shadow rules through the real service: the would-be effect is logged, the enforced effect unchanged."""

from __future__ import annotations

import shutil

SHADOW = """
shadow deny classify_ticket when actor == "bot"
shadow require approval for draft_response when priority > 3
"""


async def test_shadow_rule_is_logged_not_enforced(db_url, service_factory, policies_dir, tmp_path):
    pol = tmp_path / "pol"
    shutil.copytree(policies_dir, pol)
    src = (pol / "gateway.policy").read_text()
    (pol / "gateway.policy").write_text(src + SHADOW)
    deny_line = len(src.splitlines()) + 2
    async with service_factory(db_url, policy_dir=pol) as svc, svc.client() as c:
        r = await c.post("/v1/evaluate", json={"action": "classify_ticket", "actor": "bot"})
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["effect"] == "allow" and not d["held"]  # enforced: unchanged
        assert d["shadow_effect"] == "deny"
        [hit] = d["shadow"]
        assert hit["effect"] == "deny" and hit["span"]["line"] == deny_line
        assert hit["because"][0].startswith("actor")
        exp = (await c.get(f"/v1/decisions/{d['decision_id']}")).json()
        row = exp["record"]
        assert row["effect"] == "allow" and row["shadow_effect"] == "deny"
        assert any(line.startswith("shadow deny -> deny (not enforced)") for line in exp["explanation"])
        assert [(h["effect"], h["span"]["line"], h["source"]) for h in row["shadow"]] == [
            ("deny", deny_line, 'shadow deny classify_ticket when actor == "bot"')]
        # a shadow approval gate on an allowed action: no approval is opened
        r = await c.post("/v1/evaluate", json={"action": "draft_response", "fields": {"priority": 5}})
        d = r.json()
        assert d["effect"] == "allow" and not d["held"] and "approval" not in d
        assert d["shadow_effect"] == "require_approval" and d["shadow"][0]["effect"] == "require_approval"
        # a decision no shadow rule fires on logs no shadow keys
        r = await c.post("/v1/evaluate", json={"action": "classify_ticket", "actor": "human"})
        row = (await c.get(f"/v1/decisions/{r.json()['decision_id']}")).json()["record"]
        assert "shadow" not in row and r.json()["shadow"] == []
