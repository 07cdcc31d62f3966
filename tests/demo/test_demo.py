"""`policyengine demo` end to end: run the command, then check every step in the decision log.

The demo's printed text is never inspected: its `--summary` file only says which
decision ids belong to which step, and every outcome is read back from the
SQLite decision log (and the approvals tables) the demo's service wrote.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from policyengine.gateway import merged_record, outcome_id
from policyengine.store import make_sync_engine, verify_chain

pytestmark = pytest.mark.slow

DEMO = [sys.executable, "-c", "from policyengine.cli import app; app()", "demo"]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYENGINE_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="120")
    return env


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("demo")
    db, summary = d / "demo.db", d / "summary.json"
    proc = subprocess.run([*DEMO, "--keep-db", str(db), "--summary", str(summary)], env=_clean_env(),
                          capture_output=True, text=True, timeout=240)
    assert summary.exists(), f"no summary written (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    data = json.loads(summary.read_text())
    return {"rc": proc.returncode, "out": proc.stdout + proc.stderr, "db": db, "summary": data,
            "steps": {s["key"]: s for s in data["steps"]}}


@pytest.fixture(scope="module")
def log(demo_run: dict[str, Any]):
    conn = sqlite3.connect(demo_run["db"])
    conn.row_factory = sqlite3.Row

    def record(decision_id: str) -> dict[str, Any]:
        row = conn.execute("SELECT record, effect, model, session_id FROM decisions WHERE id = ?",
                           (decision_id,)).fetchone()
        assert row is not None, f"decision {decision_id} is not in the decision log"
        rec = json.loads(row["record"])
        assert rec["effect"] == row["effect"] and rec["model"] == row["model"]
        # a chat's answer (model, attempts, a verdict) is in the outcome row that follows it
        done = conn.execute("SELECT record FROM decisions WHERE id = ?", (outcome_id(decision_id),)).fetchone()
        return merged_record(rec, json.loads(done["record"]) if done is not None else None)

    record.conn = conn  # type: ignore[attr-defined]
    yield record
    conn.close()


def _ids(demo_run: dict[str, Any], step: str) -> dict[str, str]:
    s = demo_run["steps"].get(step)
    assert s is not None, f"the demo did not run step {step!r}"
    return s["decisions"]


def _called(rec: dict[str, Any]) -> list[tuple[str, str | None, int | None, str | None]]:
    return [(a["model"], a.get("key_id"), a.get("status"), a.get("error_class"))
            for a in rec["attempts"] if not a.get("skipped")]


def test_demo_exits_zero_and_stops_everything(demo_run: dict[str, Any]) -> None:
    assert demo_run["rc"] == 0, demo_run["out"][-6000:]
    s = demo_run["summary"]
    assert s["ok"] is True
    assert s["ports_left_open"] == []
    pid = s["service_pid"]
    assert pid and not Path(f"/proc/{pid}").exists(), f"policyengine serve (pid {pid}) is still running"
    assert "SIMULATED" in demo_run["out"]  # the fleet is labelled as simulated


def test_decision_log_chain_is_intact(demo_run: dict[str, Any]) -> None:
    engine = make_sync_engine(f"sqlite:///{demo_run['db']}")
    try:
        res = verify_chain(engine)
    finally:
        engine.dispose()
    assert res.ok, res.problem
    assert res.rows >= 15


def test_routing(demo_run: dict[str, Any], log) -> None:
    ids = _ids(demo_run, "routing")
    want = {"code": "qwen-72b", "summarisation": "gemma-27b", "classification": "gemma-9b",
            "standard tier": "gemma-27b", "internal-tools channel": "gemma-9b",
            "power user picks gemma-27b": "gemma-27b"}
    for label, model in want.items():
        rec = log(ids[label])
        assert rec["effect"] == "allow" and rec["model"] == model, (label, rec["model"], rec["routing"])
        assert rec["routing"]["chain"][0] == model
    assert log(ids["standard tier"])["request"]["tenant_tier"] == "standard"
    refused = log(ids["power user picks kimi-large"])
    assert refused["effect"] == "deny" and refused["model"] is None and refused["attempts"] == []


def test_failover_and_key_rotation(demo_run: dict[str, Any], log) -> None:
    rec = log(_ids(demo_run, "failover")["long-context request"])
    assert rec["routing"]["chain"][:2] == ["kimi-large", "qwen-72b"]
    assert rec["model"] == "qwen-72b"
    assert _called(rec) == [("kimi-large", None, 500, "failover"),
                            ("qwen-72b", "DEMO_QWEN_KEY_1", 401, "failover"),
                            ("qwen-72b", "DEMO_QWEN_KEY_2", 200, None)]
    # only key NAMES are logged, never their values
    assert "sim-" not in json.dumps(rec)
    fatal = log(_ids(demo_run, "failover")["content-filtered request"])
    assert fatal["model"] is None and fatal["extra"]["error_class"] == "fatal"
    assert _called(fatal) == [("qwen-72b", "DEMO_QWEN_KEY_2", 400, "fatal")]  # no other model was asked


def test_cooldown_honours_retry_after(demo_run: dict[str, Any], log) -> None:
    ids = _ids(demo_run, "cooldown")
    first, second = log(ids["first classification"]), log(ids["second classification"])
    assert _called(first) == [("gemma-9b", None, 429, "retry"), ("gemma-27b", None, 200, None)]
    assert first["model"] == "gemma-27b"
    skipped = [a for a in second["attempts"] if a.get("skipped")]
    assert [(a["model"], a["reason"].split(":")[0]) for a in skipped] == [("gemma-9b", "cooldown")]
    assert _called(second) == [("gemma-27b", None, 200, None)]
    assert second["ts"] - first["ts"] < 30  # still inside the Retry-After window


def test_session_stays_on_its_model(demo_run: dict[str, Any], log) -> None:
    ids = _ids(demo_run, "session")
    a1, a2, b1 = log(ids["session A, turn 1"]), log(ids["session A, turn 2"]), log(ids["session B, turn 1"])
    assert a1["session_id"] == a2["session_id"] == "demo-session-A"
    assert a1["routing"]["sticky"] is True and a1["routing"]["chain"][0] == "qwen-72b"
    assert a1["model"] == "gemma-27b" and ("qwen-72b", "DEMO_QWEN_KEY_2", 500, "failover") in _called(a1)
    assert a2["model"] == "gemma-27b" and _called(a2) == [("gemma-27b", None, 200, None)]
    assert b1["session_id"] == "demo-session-B" and b1["model"] == "qwen-72b"


def test_refund_held_then_approved_through_link(demo_run: dict[str, Any], log) -> None:
    step = demo_run["steps"]["refund"]
    ids = step["decisions"]
    assert log(ids["refund £40"])["effect"] == "allow"
    held = log(ids["refund £150"])
    assert held["effect"] == "require_approval"
    assert held["obligations"] and held["obligations"][0]["group"] == "refunds"
    conn = log.conn
    row = conn.execute("SELECT * FROM approvals WHERE decision_id = ?", (ids["refund £150"],)).fetchone()
    assert row is not None and row["id"] == step["approvals"]["refund £150"]
    # decided through the link the webhook delivered; the receiver vouched for the reviewer
    assert row["state"] == "approved" and row["decided_via"] == "webhook"
    assert row["decided_by"] == "webhook:rita@support.demo"
    kinds = [r["kind"] for r in conn.execute("SELECT kind FROM approval_events WHERE approval_id = ? ORDER BY id",
                                             (row["id"],))]
    assert kinds[0] == "created" and "approved" in kinds
    assert conn.execute("SELECT count(*) FROM approval_link_uses WHERE approval_id = ?",
                        (row["id"],)).fetchone()[0] == 1


def test_litigation_escalated(demo_run: dict[str, Any], log) -> None:
    ids = _ids(demo_run, "litigation")
    rec = log(ids["draft a reply to a litigious customer"])
    assert rec["effect"] == "escalate"
    hit = [r for r in rec["rules"] if r.get("effect") == "escalate"]
    assert any("litigation" in r["source"] for r in hit), hit
    assert log(ids["draft a normal reply"])["effect"] == "allow"
    angry = log(ids["draft a reply to a furious customer"])
    assert angry["effect"] == "escalate" and angry["signals"]["sentiment"] < 0.3
    unsure = log(ids["classify with low model confidence"])
    assert unsure["effect"] == "escalate" and unsure["signals"]["confidence"] == 0.55


def test_dual_model_verification(demo_run: dict[str, Any], log) -> None:
    ids = _ids(demo_run, "verification")
    div = log(ids["divergent legal answers"])
    assert div["effect"] == "escalate"
    v = div["extra"]["verification"]
    assert v["models"] == ["qwen-72b", "gemma-27b"] and v["divergence"] > v["threshold"] == 0.25
    aligned = log(ids["aligned legal answers"])
    assert aligned["effect"] == "allow" and "high-confidence" in aligned["tags"]
    assert aligned["extra"]["verification"]["divergence"] <= 0.25


def test_spot_reclaim_falls_back_to_the_managed_model(demo_run: dict[str, Any], log) -> None:
    ids = _ids(demo_run, "spot")
    during, after = log(ids["code request during the reclaim"]), log(ids["code request after recovery"])
    assert during["model"] == "llama-managed"
    assert [(a[0], a[3]) for a in _called(during)] == [("qwen-72b", "failover"), ("llama-managed", None)]
    assert _called(during)[0][2] is None  # connection refused: no HTTP status at all
    assert after["model"] == "qwen-72b"


def test_standing_orders_at_volume(demo_run: dict[str, Any], log) -> None:
    ids = _ids(demo_run, "autonomy")
    assert len(ids) == 40
    effects: dict[str, int] = {}
    for label, did in ids.items():
        rec = log(did)
        effects[rec["effect"]] = effects.get(rec["effect"], 0) + 1
        action = label.split()[-1]
        if action in ("send_email", "escalate_legal", "respond_press"):
            assert rec["effect"] == "require_approval", (label, rec["effect"])
    assert effects == {"allow": 35, "require_approval": 5}
    held = [did for did in ids.values() if log(did)["effect"] == "require_approval"]
    pending = log.conn.execute(
        f"SELECT count(*) FROM approvals WHERE state = 'pending' AND decision_id IN ({','.join('?' * len(held))})",
        held).fetchone()[0]
    assert pending == len(held)


def test_existing_keep_db_path_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "exists.db"
    db.write_text("")
    proc = subprocess.run([*DEMO, "--keep-db", str(db)], env=_clean_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "already exists" in proc.stdout + proc.stderr


def test_sigterm_stops_everything(tmp_path: Path) -> None:
    """An interrupted demo (SIGTERM, like Ctrl-C) stops the service it started and exits 130."""
    import re
    import signal
    import time

    proc = subprocess.Popen([*DEMO], env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pid = None
    out = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until the service is up (its pid is printed)
        out.append(line)
        m = re.search(r"service ready at \S+ \(pid (\d+)\)", line)
        if m:
            pid = int(m.group(1))
            break
        assert time.monotonic() < deadline, "".join(out)
    assert pid is not None, "".join(out)
    assert Path(f"/proc/{pid}").exists()
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(out) + rest
    assert "interrupted" in rest
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), f"policyengine serve (pid {pid}) survived the interrupted demo"


def test_a_step_that_cannot_run_makes_the_demo_fail(tmp_path: Path) -> None:
    """The service cannot be ready in 0.5 s: the demo reports it, stops everything and exits 1."""
    summary = tmp_path / "s.json"
    proc = subprocess.run([*DEMO, "--startup-timeout", "0.5", "--summary", str(summary)], env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(summary.read_text())
    assert data["ok"] is False and data["ports_left_open"] == []
    assert [s["key"] for s in data["steps"]] == ["startup"]
    assert not Path(f"/proc/{data['service_pid']}").exists()
