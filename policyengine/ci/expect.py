"""Compare a Decision with a test's expectation; every difference becomes a Mismatch."""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import BaseModel

from policyengine.ci.paths import display_path
from policyengine.ci.spec import Expectation, ExpectObligation
from policyengine.types import ApprovalObligation, Decision, RuleHit

_WS = re.compile(r"\s+")


class Mismatch(BaseModel):
    check: str
    expected: str
    actual: str


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip().lower()


def hit_label(h: RuleHit) -> str:
    where = f"{display_path(h.span.file)}:{h.span.line}" if h.span else h.rule_id
    src = _WS.sub(" ", h.source.removesuffix(" ...")).rstrip("{ ").strip()
    eff = f" [{h.effect}]" if h.effect else ""
    return f"{where}{eff} {src}".strip() if src else f"{where}{eff}"


def rule_ref_matches(ref: str, hit: RuleHit) -> bool:
    """A rule reference: its id (`support.policy:17`), its file:line, or words of its source text."""
    r = ref.strip()
    keys = {hit.rule_id}
    if hit.span is not None:
        keys |= {str(hit.span), f"{os.path.basename(hit.span.file)}:{hit.span.line}"}
    if r in keys:
        return True
    return bool(hit.source) and _norm(r) in _norm(hit.source)


def obligation_label(o: ApprovalObligation) -> str:
    parts = [f"group={o.group or '-'}"]
    if o.channels:
        parts.append("notify=" + ",".join(f"{c.kind}:{c.target}" for c in o.channels))
    if o.remind_every_s is not None:
        parts.append(f"remind={o.remind_every_s:g}s")
    if o.timeout_s is not None:
        parts.append(f"timeout={o.timeout_s:g}s->{o.on_timeout}" + (f":{o.escalate_to}" if o.escalate_to else ""))
    if o.user_confirm:
        parts.append("confirm-by-user")
    return " ".join(parts)


def _expected_obligation_label(e: ExpectObligation) -> str:
    parts = []
    if e.group is not None:
        parts.append(f"group={e.group}")
    if e.channels is not None:
        parts.append("notify=" + ",".join(f"{c.kind}:{c.target}" for c in e.channels))
    if e.remind_every is not None:
        parts.append(f"remind={e.remind_every:g}s")
    if e.timeout is not None or e.on_timeout is not None:
        t = f"{e.timeout:g}s" if e.timeout is not None else "*"
        parts.append(f"timeout={t}->{e.on_timeout or '*'}" + (f":{e.escalate_to}" if e.escalate_to else ""))
    if e.user_confirm is not None:
        parts.append("confirm-by-user" if e.user_confirm else "no-confirm-by-user")
    return " ".join(parts) or "(any obligation)"


def _obligation_matches(e: ExpectObligation, o: ApprovalObligation) -> bool:
    if e.group is not None and e.group != o.group:
        return False
    if e.channels is not None and {(c.kind, c.target) for c in e.channels} != {(c.kind, c.target) for c in o.channels}:
        return False
    if e.remind_every is not None and e.remind_every != o.remind_every_s:
        return False
    if e.timeout is not None and e.timeout != o.timeout_s:
        return False
    if e.on_timeout is not None and e.on_timeout != o.on_timeout:
        return False
    if e.user_confirm is not None and e.user_confirm != o.user_confirm:
        return False
    return not (e.escalate_to is not None and e.escalate_to != o.escalate_to)


def _list(values: list[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(values) + "]" if values else "(none)"


def compare(exp: Expectation, d: Decision) -> list[Mismatch]:
    out: list[Mismatch] = []

    def miss(check: str, expected: Any, actual: Any) -> None:
        out.append(Mismatch(check=check, expected=str(expected), actual=str(actual)))

    if exp.effect is not None and exp.effect != d.effect:
        miss("effect", exp.effect, d.effect)
    if exp.shadow_effect is not None and exp.shadow_effect != (d.shadow_effect or "none"):
        miss("shadow effect", exp.shadow_effect, d.shadow_effect or "none")
    chain = d.routing.chain
    if exp.chain is not None and list(exp.chain) != list(chain):
        miss("chain", " > ".join(exp.chain) or "(none)", " > ".join(chain) or "(none)")
    if exp.primary is not None and (chain[0] if chain else None) != exp.primary:
        miss("primary", exp.primary, chain[0] if chain else "(no model)")
    if exp.sticky is not None and exp.sticky != d.routing.sticky:
        miss("sticky", exp.sticky, d.routing.sticky)
    if exp.hedge_after is not None and (exp.hedge_after or None) != d.routing.hedge_after:
        miss("hedge after", f"{exp.hedge_after:g}s" if exp.hedge_after else "(no hedging)",
             f"{d.routing.hedge_after:g}s" if d.routing.hedge_after is not None else "(no hedging)")
    if exp.hedge_budget is not None and abs(exp.hedge_budget - d.routing.hedge_budget) > 1e-9:
        miss("hedge budget", f"{exp.hedge_budget:.4g}", f"{d.routing.hedge_budget:.4g}")
    if exp.tags is not None and sorted(set(exp.tags)) != sorted(set(d.tags)):
        miss("tags", _list(sorted(exp.tags)), _list(sorted(d.tags)))
    if exp.tags_include is not None:
        missing = [t for t in exp.tags_include if t not in d.tags]
        if missing:
            miss("tags include", _list(exp.tags_include), _list(sorted(d.tags)))
    if exp.obligations is not None:
        ok = len(exp.obligations) == len(d.obligations) and all(
            _obligation_matches(e, o) for e, o in zip(exp.obligations, d.obligations, strict=False))
        if not ok:
            miss("obligations",
                 "\n".join(_expected_obligation_label(e) for e in exp.obligations) or "(none)",
                 "\n".join(obligation_label(o) for o in d.obligations) or "(none)")
    fired = [h for h in d.rules]
    for ref in exp.rules or []:
        if not any(rule_ref_matches(ref, h) for h in fired):
            miss("rule fired", ref, "\n".join(hit_label(h) for h in fired) or "(no rule fired)")
    for ref in exp.rules_not or []:
        hits = [h for h in fired if rule_ref_matches(ref, h)]
        if hits:
            miss("rule not fired", f"not {ref}", "\n".join(hit_label(h) for h in hits))
    if exp.verified is not None and exp.verified != (d.verification is not None):
        miss("verified", exp.verified, d.verification is not None)
    if exp.verification is not None:
        v = d.verification
        if v is None:
            miss("verification", exp.verification.model_dump(exclude_none=True), "(no verification)")
        else:
            ev = exp.verification
            if ((ev.models is not None and ev.models != v.models)
                    or (ev.threshold is not None and ev.threshold != v.threshold)
                    or (ev.tag is not None and ev.tag != v.tag)
                    or (ev.judge is not None and ev.judge != v.judge)):
                miss("verification", ev.model_dump(exclude_none=True),
                     {"models": v.models, "threshold": v.threshold, "tag": v.tag, "judge": v.judge})
    if exp.allowed_models is not None and sorted(exp.allowed_models) != sorted(d.allowed_models):
        miss("allowed models", _list(sorted(exp.allowed_models)), _list(sorted(d.allowed_models)))
    if exp.default_applied is not None and exp.default_applied != d.default_applied:
        miss("default applied", exp.default_applied, d.default_applied)
    return out
