"""A large reload does not starve requests (security #15.14): parse and lint run in a child
process, and the event loop compiles in slices, running other callbacks between them.

Counted, never timed: with the slice length set to 0 the loop must run between every two
compile steps.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import sys
from collections.abc import Iterator

import pytest

import policyengine.dsl.compiler as compiler
from policyengine.dsl import compile_sources
from policyengine.gateway import policies
from policyengine.gateway.policies import PolicyHolder
from policyengine.types import Action

HEADER = """\
policy "slices" version 1
model qwen-72b { provider vllm base_url env("QWEN_URL") cost 0 }
route default -> qwen-72b
"""


def _rules(n: int) -> str:
    out = [HEADER]
    for i in range(n):
        out.append(f'require approval for refund when amount > {i + 100} GBP and region == "r{i}" '
                   '{ reviewers group "r" notify slack "#r" timeout 8h -> deny }')
        out.append(f'deny refund when region == "x{i}"')
        out.append(f'route when tenant.id == "t{i}" -> qwen-72b')
    out.append("authorize refund")
    return "\n".join(out) + "\n"


@pytest.fixture(autouse=True)
def _leave_gc_as_found() -> Iterator[None]:
    frozen = gc.get_freeze_count()
    yield
    if frozen == 0:
        gc.unfreeze()


@pytest.fixture
def large(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every set is 'large' (child process) and a slice ends after every step."""
    monkeypatch.setattr(policies, "SUBPROCESS_BYTES", 0)
    monkeypatch.setattr(policies, "SLICE_S", 0.0)


def _decisions(policy) -> list[tuple[str, list[str]]]:
    acts = [Action(action="refund", fields={"amount": "150 GBP", "region": "r7"}),
            Action(action="refund", fields={"amount": "50 GBP", "region": "x3"}),
            Action(action="refund", fields={"amount": "5 GBP", "region": "zz"})]
    return [(str(d.effect), [h.rule_id for h in d.rules]) for d in map(policy.evaluate, acts)]


def test_large_reload_compiles_between_requests(tmp_path, large, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _rules(60)
    (tmp_path / "a.policy").write_text(text)
    reference = compile_sources({str(tmp_path / "a.policy"): text})
    real = compiler.compile_steps
    ticks = 0
    seen: list[int] = []

    def tick() -> None:
        nonlocal ticks
        ticks += 1
        if handle[0] is not None:
            handle[0] = asyncio.get_running_loop().call_soon(tick)

    handle: list[asyncio.Handle | None] = [None]

    def counted(files):
        handle[0] = asyncio.get_running_loop().call_soon(tick)
        steps = real(files)
        try:
            while True:
                seen.append(ticks)
                next(steps)
                yield
        except StopIteration as done:
            return done.value
        finally:
            if handle[0] is not None:
                handle[0].cancel()
            handle[0] = None

    monkeypatch.setattr(compiler, "compile_steps", counted)
    holder = PolicyHolder([str(tmp_path)])
    res = asyncio.run(holder.reload())
    assert res.ok, res.error
    assert len(seen) > 180  # every item and route was a step
    # the loop ran other callbacks between every two steps
    assert all(b > a for a, b in itertools.pairwise(seen)), seen[:20]
    assert _decisions(holder.current) == _decisions(reference)
    assert holder.current.hash == reference.hash
    assert [r.rule_id for r in holder.current.routes] == [r.rule_id for r in reference.routes]


def test_large_reload_refused_with_the_diagnostics(tmp_path, large) -> None:
    (tmp_path / "a.policy").write_text(HEADER + "authorize refund\n")
    holder = PolicyHolder([str(tmp_path)])
    assert asyncio.run(holder.reload()).ok
    (tmp_path / "a.policy").write_text(HEADER + "route when tenant.id == \"a\" -> qwen-7b\n")

    async def again():
        return await holder.reload()

    res = asyncio.run(again())
    assert not res.ok
    assert [d["code"] for d in res.diagnostics] == ["E210"]
    assert res.diagnostics[0]["hint"] == "did you mean `qwen-72b`?"
    assert holder.current.actions == frozenset({"refund"})  # the old set still serves


def test_large_reload_falls_back_to_a_thread_without_a_child(tmp_path, large,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.policy").write_text(_rules(3))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    holder = PolicyHolder([str(tmp_path)])
    res = asyncio.run(holder.reload())
    assert res.ok, res.error
    assert "refund" in holder.current.actions


def test_a_retired_large_set_is_freed_only_once_nothing_holds_it(tmp_path, large,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import weakref

    monkeypatch.setattr(policies, "FREE_POLL_S", 0.01)
    (tmp_path / "a.policy").write_text(_rules(20))

    async def run() -> None:
        holder = PolicyHolder([str(tmp_path)], grace_s=0.05)
        assert (await holder.reload()).ok
        old = holder.snapshot()  # a request in flight on the old set
        cond = weakref.ref(old.policy.routes[0].cond)
        before = _decisions(old.policy)
        (tmp_path / "a.policy").write_text(_rules(21))
        assert (await holder.reload()).changed
        assert len(holder._freeing) == 1
        await asyncio.sleep(0.2)
        assert old.policy.plans and old.policy.routes  # still whole while the request holds it
        assert _decisions(old.policy) == before
        del old
        for _ in range(200):
            if not holder._freeing:
                break
            await asyncio.sleep(0.01)
        assert not holder._freeing and cond() is None
        await holder.aclose()

    asyncio.run(run())
