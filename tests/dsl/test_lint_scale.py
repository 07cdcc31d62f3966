"""Lint at scale (security #15.14): the indexed checks give exactly what the pairwise ones gave.

The checker used to compare every use of a field with every earlier one (type and currency
clashes) and every action named once with every established action (W232). These tests run
the indexed checker and a reference that restores those pairwise scans on the same generated
set and require the same diagnostics, check the indexes on small hand-checked cases, and
count operations (never time) to show the lookups no longer grow with the set.
"""

from __future__ import annotations

import gc
import random
import string

import pytest

from policyengine.dsl import checker as C
from policyengine.dsl import deferred_full_gc, parse
from policyengine.dsl.ast import Span

HEADER = """\
policy "scale" version 1
model qwen-72b { provider vllm base_url env("QWEN_URL") cost 0 }
model gemma-27b { provider ollama base_url env("GEMMA_URL") cost 0 }
lexicon litigation ["lawsuit", "sue"]
route default -> qwen-72b fallback [gemma-27b]
"""
HOLD = '{ reviewers group "r" notify slack "#r" timeout 8h -> deny }'


def _rule(i: int) -> str:
    k = i % 12
    a, b = f"act_{i % 30}", f"act_{(i * 7 + 3) % 30}"
    if k == 0:
        cur = "USD" if i % 397 == 0 else ("EUR" if i % 401 == 0 else "GBP")
        return f'require approval for refund, {a} when amount > {i} {cur} and tenant.tier == "t{i}" {HOLD}'
    if k == 1:
        return f'deny refund, {b} when region == "r{i}"'
    if k == 2:
        return f'route when tenant.id == "t{i}" -> qwen-72b'
    if k == 3:
        return f'authorize {a}, tool_{i // 24} when user.role == "u{i}"'
    if k == 4:
        return f'escalate for {a} when sentiment < 0.3 and amount > {i} GBP'
    if k == 5:
        return f'route when tenant.id == "t{i - 3}" and region == "r{i}" -> gemma-27b'  # W214
    if k == 6:
        # a field compared with text for some actions: E220 where a rule for the same action
        # compares it with money, nothing where the actions differ
        return f'deny {"refund" if i % 300 == 6 else "other_" + str(i % 5)} when amount == "x{i}"'
    if k == 7:
        return f'authorize {a}, once_{i} when amount < {i} GBP'
    if k == 8:
        return f'escalate when confidence < 0.5 and tenant.id == "t{i}" {{ on chat review }}'
    if k == 9:
        # `limit` is a number for some rules and a duration for others (compatible), money now and then
        unit = "GBP" if i % 250 == 9 else ("m" if i % 2 else "")
        return f'deny {b} when limit > {i}{" " if unit == "GBP" else ""}{unit}'
    if k == 10:
        return f"authorize tol_{i // 24}" if i % 500 == 10 else f'authorize {a} when text mentions litigation'
    return f'require approval for {b} when amount > {i} EUR and region == "r{i}" {HOLD}'


def _files(n: int) -> list:
    text = HEADER + "\n".join(_rule(i) for i in range(n)) + "\nauthorize act_1, act_1\nauthorize ac_12\n"
    return [parse(text, "scale.policy")]


def _reference_clash(self: C.Checker, seen: C.FieldUses, kind: str, compatible: set[str] | None = None):
    """The pairwise scan the checker used before the index (its code, unchanged)."""
    for k, sp, scope in seen.entries:
        if k == kind or (compatible and {k, kind} <= compatible):
            continue
        if scope is None or self.scope is None or scope & self.scope:
            return k, sp
    return None


def test_generated_set_gives_the_same_diagnostics_as_the_pairwise_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    files = _files(2000)
    indexed = C.check_files(files)
    monkeypatch.setattr(C.Checker, "clash", _reference_clash)
    monkeypatch.setattr(C._NearNames, "within2", lambda self, name: set(self._names))
    reference = C.check_files(files)
    assert indexed == reference
    codes = {d.code for d in indexed}
    # every pass the index touches produced something to compare
    assert {"E220", "W223", "W214", "W231", "W232"} <= codes, codes


def test_field_uses_hand_checked() -> None:
    s = [Span("f", i, 1, i, 2) for i in range(6)]
    u = C.FieldUses()
    u.append(("money", s[0], frozenset({"refund"})))
    u.append(("str", s[1], frozenset({"other"})))
    u.append(("str", s[2], None))
    u.append(("num", s[3], frozenset({"refund", "pay"})))
    assert u.first_clash("str", frozenset({"refund"})) == ("money", s[0])
    assert u.first_clash("money", frozenset({"other"})) == ("str", s[1])
    assert u.first_clash("money", frozenset({"pay"})) == ("str", s[2])  # the rule for every action
    assert u.first_clash("money", None) == ("str", s[1])
    assert u.first_clash("duration", frozenset({"pay"}), compatible={"num", "duration"}) == ("str", s[2])
    assert u.first_clash("duration", frozenset({"zzz"}), compatible={"num", "duration"}) == ("str", s[2])
    v = C.FieldUses()
    v.append(("num", s[0], frozenset({"a"})))
    assert v.first_clash("duration", frozenset({"a"}), compatible={"num", "duration"}) is None
    assert v.first_clash("str", frozenset({"b"})) is None
    assert v.first_clash("str", frozenset()) is None
    assert v.first_clash("str", None) == ("num", s[0])


def test_near_names_finds_every_name_within_two_edits() -> None:
    rng = random.Random(1514)
    alphabet = string.ascii_lowercase[:5] + "_"
    names = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))) for _ in range(400)}
    near = C._NearNames(names)
    for _ in range(300):
        q = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
        want = {k for k in names if C.edit_distance(q, k) <= 2}
        assert want <= near.within2(q)


def test_typo_check_compares_only_near_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 actions named once and 5,000 named twice: the pairwise W232 check ran 25 million
    edit distances; the deletion index runs one per name that is actually close."""
    lines = [HEADER]
    lines += [f"authorize shared_{i}\nauthorize shared_{i}" for i in range(2500)]
    lines += [f"authorize solo_{i}x" for i in range(2500)]
    lines.append("authorize shared_7")  # and one typo: `shared_7` is authorized twice already...
    lines.append("authorize sharde_12")  # ...this is one swap from `shared_12`
    calls = 0
    real = C.edit_distance

    def counting(a: str, b: str) -> int:
        nonlocal calls
        calls += 1
        return real(a, b)

    monkeypatch.setattr(C, "edit_distance", counting)
    diags = C.check_files([parse("\n".join(lines), "t.policy")])
    assert [d.message for d in diags if d.code == "W232"] == ["action `sharde_12` is named only here"]
    assert calls < 5 * 2500, calls


def test_deferred_full_gc_restores_the_threshold() -> None:
    before = gc.get_threshold()
    with deferred_full_gc():
        assert gc.get_threshold()[:2] == before[:2]
        assert gc.get_threshold()[2] > 10**6
        with deferred_full_gc():  # nested: still deferred
            pass
        assert gc.get_threshold()[2] > 10**6
    assert gc.get_threshold() == before
    with deferred_full_gc():
        gc.set_threshold(before[0], before[1], 7)  # someone else set it meanwhile: left alone
    try:
        assert gc.get_threshold()[2] == 7
    finally:
        gc.set_threshold(*before)


def test_plans_hold_their_own_and_the_global_holds_in_source_order() -> None:
    from policyengine.dsl import ast
    from policyengine.dsl.compiler import compile_files

    files = _files(1200)
    ir = compile_files(files)
    glob = ir.global_plan.holds
    assert len(glob) == 100  # `escalate when confidence ...`, one per 12 rules
    own: dict[str, int] = {}
    for it in files[0].items:
        if isinstance(it, ast.RequireApproval | ast.Escalate | ast.Verify) and it.actions:
            for a in {n.value for n in it.actions}:
                own[a] = own.get(a, 0) + 1
    for name, plan in ir.plans.items():
        orders = [r.order for r in plan.holds]
        assert orders == sorted(set(orders)), name
        assert set(map(id, glob)) <= set(map(id, plan.holds))
        assert len(plan.holds) == len(glob) + own.get(name, 0), name
        if name not in own:
            assert plan.holds is glob  # shared, not rebuilt per action


def test_shadowed_routes_sharing_a_test_are_found_without_comparing_every_pair(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """600 routes that all test `tenant.tier == "enterprise"` first: each was compared with
    every earlier one (180,000 implication checks). The W214 found are those of a full
    pairwise scan (the first earlier route implied, for every route)."""
    lines = [HEADER]
    for i in range(600):
        extra = f' and region == "r{i}"' if i % 10 == 5 else ""
        tid = i - 3 if i % 10 == 5 else i  # every tenth route repeats an earlier one's tenant
        lines.append(f'route when tenant.tier == "enterprise" and tenant.id == "t{tid}"{extra} -> qwen-72b')
    lines.append('route when tenant.tier == "enterprise" -> gemma-27b')
    lines.append('route when tenant.id in ["t4", "t8"] and tenant.tier == "enterprise" -> gemma-27b')
    files = [parse("\n".join(lines), "r.policy")]
    calls = 0
    real = C._implies

    def counting(later, earlier) -> bool:
        nonlocal calls
        calls += 1
        return real(later, earlier)

    monkeypatch.setattr(C, "_implies", counting)
    got = [(d.line, d.message) for d in C.check_files(files) if d.code == "W214"]
    assert calls < 3 * 600, calls
    routes = [it for it in files[0].items if isinstance(it, C.ast.Route) and it.cond is not None]
    want = []
    for j, rj in enumerate(routes):
        for ri in routes[:j]:
            if real(rj.cond, ri.cond):
                want.append((rj.span.line, f"route never applies: the route at {C._where(ri.span)} "
                             f"(`{C.fmt.expr(ri.cond)}`) matches first"))
                break
    assert got == want
    assert len(want) == 61
