"""`policyengine dry-run`: replaying a real decision log through a candidate policy.

The headline case from the issue: moving the refund approval threshold from
over 100 GBP to over 50 GBP must show exactly the logged decisions it affects.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from policyengine.ci.replay.engine import replay
from policyengine.ci.replay.records import RecordError, parse_record
from policyengine.ci.replay.sources import DatabaseSource, JsonlSource
from policyengine.cli import app
from policyengine.dsl import load_policy_set

from .conftest import AFFECTED, V1, V2, LoggedSet, write_logged

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def _ids(group: dict) -> list[str]:
    return sorted(e["id"] for e in group["examples"])


def _check_threshold_report(data: dict) -> None:
    assert data["total"] == 19 and data["replayed"] == 19 and data["errors"] == 0
    effect_groups = [g for g in data["groups"] if g["kind"] == "effect"]
    assert [(g["old"], g["new"], g["count"]) for g in effect_groups] == [("allow", "require_approval", 4)]
    assert _ids(effect_groups[0]) == sorted(AFFECTED)
    assert [c["rule"] for c in effect_groups[0]["causes"]] == [
        "+ require approval for refund when amount > 50 GBP (tests/ci/data/refunds_v2/support.policy:15)"]
    # the angry 75 GBP refund was escalated before and still is, but now also needs the refunds team
    approval = [g for g in data["groups"] if g["kind"] == "approval"]
    assert [_ids(g) for g in approval] == [["refund-75-angry"]]
    assert data["changed"] == 5
    assert {(t["old"], t["new"]): t["count"] for t in data["by_effect"]} == {
        ("allow", "allow"): 8, ("allow", "require_approval"): 4, ("require_approval", "require_approval"): 3,
        ("deny", "deny"): 2, ("escalate", "escalate"): 2}
    assert data["chain_changes"] == []


def test_threshold_change_against_the_database(logged: LoggedSet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).parents[2])
    res = runner.invoke(app, ["dry-run", "--policy", str(V2.relative_to(Path.cwd())), "--against", logged.url,
                              "--format", "json", "--examples", "-1"])
    assert res.exit_code == 0, res.output
    _check_threshold_report(json.loads(res.output))


def test_threshold_change_from_jsonl(logged: LoggedSet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(Path(__file__).parents[2])
    changes = tmp_path / "changes.jsonl"
    res = runner.invoke(app, ["dry-run", "--policy", "tests/ci/data/refunds_v2", "--actions", str(logged.jsonl),
                              "--format", "json", "--examples", "-1", "--changes-out", str(changes)])
    assert res.exit_code == 0, res.output
    _check_threshold_report(json.loads(res.output))
    streamed = [orjson.loads(line) for line in changes.read_bytes().splitlines()]
    assert sorted(c["id"] for c in streamed) == sorted([*AFFECTED, "refund-75-angry"])


def test_unchanged_policy_replays_to_zero_changes(logged: LoggedSet) -> None:
    """Replaying the policy that made the decisions reproduces every one (determinism)."""
    report = replay(load_policy_set([str(V1)]), DatabaseSource(logged.url))
    assert report.total == 19 and report.changed == 0 and report.errors == 0
    assert report.signals_computed == 0


def test_text_report_and_fail_thresholds(logged: LoggedSet) -> None:
    res = runner.invoke(app, ["dry-run", "--policy", str(V2), "--against", logged.url])
    assert res.exit_code == 0, res.output
    assert "5 of 19 decisions would change" in res.output
    assert "effect: allow → require_approval  (4 decisions)" in res.output
    assert "require approval for refund when amount > 50 GBP" in res.output
    assert "refund-75" in res.output
    res = runner.invoke(app, ["dry-run", "--policy", str(V2), "--against", logged.url, "--fail-on-change"])
    assert res.exit_code == 1 and "FAIL: 5 decision(s) would change" in res.output
    res = runner.invoke(app, ["dry-run", "--policy", str(V2), "--against", logged.url, "--max-change-share", "0.05"])
    assert res.exit_code == 1 and "above the allowed 5.00%" in res.output
    res = runner.invoke(app, ["dry-run", "--policy", str(V2), "--against", logged.url, "--max-change-share", "0.5"])
    assert res.exit_code == 0
    res = runner.invoke(app, ["dry-run", "--policy", str(V1), "--against", logged.url, "--fail-on-change"])
    assert res.exit_code == 0 and "0 of 19 decisions would change" in res.output


def test_markdown_for_a_pull_request(logged: LoggedSet, tmp_path: Path) -> None:
    out = tmp_path / "comment.md"
    res = runner.invoke(app, ["dry-run", "--policy", str(V2), "--actions", str(logged.jsonl),
                              "--format", "markdown", "-o", str(out), "--max-change-share", "0.05"])
    assert res.exit_code == 1
    md = out.read_text()
    assert md.startswith("## Policy dry-run")
    assert "| allow | require_approval | 4 |" in md
    assert "`refund-50.01`" in md and "`refund-75`" in md and "`refund-20`" not in md
    assert "> **Fails:**" in md


def test_since_filters_by_time(logged: LoggedSet) -> None:
    # the fixture's decisions are 1 s apart from 1_790_000_000; keep the last 10
    res = runner.invoke(app, ["dry-run", "--policy", str(V2), "--against", logged.url, "--since",
                              "1790000009", "--format", "json", "--examples", "-1"])
    data = json.loads(res.output)
    assert data["total"] == 10
    effect = [g for g in data["groups"] if g["kind"] == "effect"]
    assert effect == []  # the affected refunds are all older
    iso = runner.invoke(app, ["dry-run", "--policy", str(V2), "--against", logged.url, "--since", "2030-01-01"])
    assert "0 of 0" in iso.output


def test_baseline_compares_two_policies_on_the_same_inputs(logged: LoggedSet) -> None:
    res = runner.invoke(app, ["dry-run", "--policy", str(V2), "--baseline", str(V1), "--actions",
                              str(logged.jsonl), "--format", "json", "--examples", "-1"])
    data = json.loads(res.output)
    assert data["baseline"]["name"] == "support-desk"
    effect = next(g for g in data["groups"] if g["kind"] == "effect")
    assert _ids(effect) == sorted(AFFECTED)


def test_route_change_is_reported_as_chain_change(logged: LoggedSet, tmp_path: Path) -> None:
    pol = tmp_path / "p"
    pol.mkdir()
    text = (V1 / "support.policy").read_text().replace(
        'route when use_case == "code"             -> qwen-72b',
        'route when use_case == "code"             -> kimi-large fallback [qwen-72b]')
    (pol / "support.policy").write_text(text)
    report = replay(load_policy_set([str(pol)]), JsonlSource(logged.jsonl), max_examples=-1)
    chain = [g for g in report.groups if g.kind == "chain"]
    assert [(g.old, g.new, g.count) for g in chain] == [
        ("qwen-72b > gemma-27b > kimi-large > bedrock-llama", "kimi-large > qwen-72b", 1)]
    assert [e.id for e in chain[0].examples] == ["chat-code"]
    assert chain[0].causes[0].rule.startswith('+ route when use_case == "code"')


def test_bad_inputs_are_clear_errors(tmp_path: Path, logged: LoggedSet) -> None:
    res = runner.invoke(app, ["dry-run", "--policy", str(V2)])
    assert res.exit_code == 2 and "exactly one of --against" in res.output
    res = runner.invoke(app, ["dry-run", "--policy", str(V2), "--against", "mysql://x/y"])
    assert res.exit_code == 2 and "unsupported database" in res.output
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    res = runner.invoke(app, ["dry-run", "--policy", str(V2), "--against", empty])
    assert res.exit_code == 2 and "no `decisions` table" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"action": "refund"}\nnot json\n')
    res = runner.invoke(app, ["dry-run", "--policy", str(V2), "--actions", str(bad)])
    assert res.exit_code == 2 and "bad.jsonl:2: not valid JSON" in res.output
    res = runner.invoke(app, ["dry-run", "--policy", str(V2), "--actions", str(logged.jsonl), "--since", "yesterday"])
    assert res.exit_code == 2 and "not a date" in res.output
    res = runner.invoke(app, ["dry-run", "--policy", str(tmp_path / "nope"), "--actions", str(logged.jsonl)])
    assert res.exit_code == 2
    with pytest.raises(RecordError, match="not a logged decision"):
        parse_record({"foo": 1})


def test_unrecorded_actions_need_a_baseline(tmp_path: Path) -> None:
    f = tmp_path / "actions.jsonl"
    f.write_text('{"id": "a1", "action": "refund", "fields": {"amount": "75 GBP"}, '
                 '"signals": {"sentiment": 0.9, "confidence": 0.9}}\n')
    report = replay(load_policy_set([str(V2)]), JsonlSource(f))
    assert report.unrecorded == 1 and report.compared == 0 and report.new_effects == {"require_approval": 1}
    report = replay(load_policy_set([str(V2)]), JsonlSource(f), baseline=load_policy_set([str(V1)]))
    assert report.changed == 1 and report.groups[0].examples[0].id == "a1"


def test_signals_missing_from_the_log_are_counted(tmp_path: Path) -> None:
    """A candidate that needs a signal the log never recorded is flagged, not silently replayed."""
    f = tmp_path / "log.jsonl"
    f.write_text(orjson.dumps({"id": "x", "action": {"action": "refund", "fields": {"amount": "10 GBP"}},
                               "decision": {"effect": "allow", "signals": {}}}).decode() + "\n")
    report = replay(load_policy_set([str(V2)]), JsonlSource(f))
    assert report.signals_computed == 1
    assert set(report.signals_computed_names) >= {"sentiment", "confidence"}


@pytest.mark.postgres
def test_threshold_change_against_postgres(pg_schema_url: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).parents[2])
    write_logged(pg_schema_url, tmp_path / "pg.jsonl")
    src = DatabaseSource(pg_schema_url, batch=3)  # several server-side fetches
    report = replay(load_policy_set(["tests/ci/data/refunds_v2"]), src, max_examples=-1)
    src.close()
    _check_threshold_report(report.model_dump(mode="json"))


def test_database_url_password_is_never_shown() -> None:
    src = DatabaseSource("postgresql://reader:s3cret-pass@db.internal:5432/policyengine")
    assert "s3cret-pass" not in src.describe() and "***" in src.describe()
    src.close()


def test_changed_lexicon_rematches_the_logged_text(tmp_path: Path) -> None:
    """A phrase added to a lexicon: logged 'no mention' results are dropped and the text matched again."""
    import asyncio
    import time

    import sqlalchemy as sa

    from policyengine.store import DecisionLogger, LogEntry, upgrade
    from policyengine.store.models import PolicyVersion
    from policyengine.types import Action

    cand = tmp_path / "cand"
    cand.mkdir()
    (cand / "support.policy").write_text((V1 / "support.policy").read_text().replace('"court"]', '"court", "tribunal"]'))
    old = load_policy_set([str(V1)])
    url = f"sqlite:///{tmp_path / 'lex.db'}"
    upgrade(url)
    entries = []
    for i, text in enumerate(["see you at the tribunal", "thanks for your help"]):
        a = Action(action="draft_response", tenant="acme", text=text, signals={"sentiment": 0.9, "confidence": 0.9})
        d = old.evaluate(a)
        assert d.effect == "allow" and "mentions:litigation" in d.signals  # the log records "no mention"
        entries.append(LogEntry(kind="evaluate", tenant="acme", action=a.model_dump(mode="json", exclude_defaults=True),
                                decision=d.model_dump(mode="json"), id=f"t{i}"))

    async def write() -> None:
        logger = DecisionLogger(url, sqlite_synchronous="OFF")
        await logger.start()
        for e in entries:
            await logger.log(e)
        await logger.aclose()

    asyncio.run(write())
    new = str(cand)
    # without knowing the logged lexicon, the recorded results win: nothing changes, and no re-match is claimed
    plain = json.loads(runner.invoke(app, ["dry-run", "--policy", new, "--against", url, "--format", "json"]).output)
    assert plain["changed"] == 0 and plain["rematched_lexicons"] == []
    # the logged policy version in the database tells which lexicons changed
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.insert(PolicyVersion), [{"hash": old.hash, "name": old.name, "version": "3",
                                                 "sources": old.sources, "first_loaded_at": time.time(),
                                                 "last_loaded_at": time.time()}])
    engine.dispose()
    for extra in ([], ["--baseline", str(V1)], ["--rematch-lexicon", "litigation"]):
        args = ["dry-run", "--policy", new, "--against", url, "--format", "json", "--examples", "-1", *extra]
        data = json.loads(runner.invoke(app, args).output)
        assert data["rematched_lexicons"] == ["litigation"], extra
        effect = [g for g in data["groups"] if g["kind"] == "effect"]
        assert [(g["old"], g["new"], [e["id"] for e in g["examples"]]) for g in effect] == [
            ("allow", "escalate", ["t0"])], extra
        assert effect[0]["causes"][0]["rule"].startswith("+ escalate when text mentions litigation")
    bad = runner.invoke(app, ["dry-run", "--policy", new, "--against", url, "--rematch-lexicon", "nope"])
    assert bad.exit_code == 2 and "no lexicon 'nope'" in bad.output


def test_a_streamed_chats_outcome_row_is_not_replayed_as_a_decision(tmp_path: Path) -> None:
    """A streamed chat logs its decision and, after the stream, an outcome row that follows it:
    replaying the log must count the decision once (database and JSONL alike)."""
    import asyncio

    import sqlalchemy as sa

    from policyengine.store import DecisionLogger, LogEntry, upgrade

    url = f"sqlite:///{tmp_path / 'log.db'}"
    upgrade(url)
    decision = {"action": "chat", "effect": "allow", "policy_hash": "h", "routing": {"chain": ["m"]}}

    async def write() -> None:
        logger = DecisionLogger(url, sqlite_synchronous="OFF")
        await logger.start()
        try:
            await logger.log(LogEntry(kind="chat", tenant="acme", action={"action": "chat"}, decision=decision,
                                      id="d1"))
            logger.enqueue(LogEntry(kind="chat_outcome", tenant="acme", action={}, decision=decision, id="d1-out",
                                    model="m", follows="d1", extra={"outcome": "ok"}))
        finally:
            await logger.aclose()  # flushes the queued follow-up

    asyncio.run(write())
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        texts = [t for (t,) in conn.execute(sa.text("SELECT record FROM decisions ORDER BY seq"))]
    engine.dispose()
    assert len(texts) == 2
    jsonl = tmp_path / "log.jsonl"
    jsonl.write_text("\n".join(texts) + "\n")
    db = DatabaseSource(url)
    try:
        assert [r.id for r in db] == ["d1"] and db.estimate() == 1
    finally:
        db.close()
    assert [r.id for r in JsonlSource(jsonl)] == ["d1"]


def test_a_new_limit_is_reported_for_the_requests_it_would_count(logged: LoggedSet, tmp_path: Path) -> None:
    pol = tmp_path / "p"
    pol.mkdir()
    text = (V1 / "support.policy").read_text() + '\nlimit requests 100 per minute per user when use_case == "code"\n'
    (pol / "support.policy").write_text(text)
    for source in (JsonlSource(logged.jsonl), DatabaseSource(logged.url)):
        report = replay(load_policy_set([str(pol)]), source, max_examples=-1)
        groups = [g for g in report.groups if g.kind == "limits"]
        assert [(g.old, g.new, g.count) for g in groups] == [
            ("(none)", "requests 100 per minute per user on qwen-72b", 1)]
        assert [e.id for e in groups[0].examples] == ["chat-code"]
        assert groups[0].causes[0].rule == "+ requests 100 per minute per user on qwen-72b"
        assert [g.kind for g in report.groups] == ["limits"]  # nothing else changed
