"""Replay logged decisions through a candidate policy and tally what would change.

Determinism: every logged decision carries the signal values it used
(`Decision.signals`: sentiment, mentions, confidence, divergence...). They are
put back into `action.signals`, where they win over computed values, so the
candidate sees exactly what production saw. A signal the candidate needs that
the log did not record is computed only when a SignalProvider is given, and is
counted in the report (`signals_computed`) because it is not a replay any more.

Speed: identical inputs (logged action + recorded signals) are evaluated once
(bounded FIFO cache), memory stays bounded: the source streams, examples are
capped per change group, counters are keyed by a bounded vocabulary (effects,
chains, rules).
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from policyengine.ci.paths import display_path
from policyengine.ci.replay.records import LoggedRecord
from policyengine.ci.replay.report import (
    CauseCount,
    ChangeGroup,
    DryRunReport,
    Example,
    PolicyRef,
    ReplayIssue,
    Transition,
)
from policyengine.types import Action, Decision

EFFECT_KINDS = frozenset({"authorize", "require_approval", "deny", "escalate", "verify", "default"})
MAX_GROUPS = 500  # distinct (kind, old, new) groups kept; the rest are folded into "other"
MAX_ERROR_EXAMPLES = 10
_WS = re.compile(r"\s+")


class Evaluates(Protocol):
    def evaluate(self, action: Action, signals: Any = None) -> Decision: ...


@dataclass(frozen=True, slots=True)
class RuleRef:
    kind: str
    effect: str | None
    text: str  # normalised source (identity across versions: line numbers move)
    where: str  # file:line, for people

    def label(self) -> str:
        return f"{self.text} ({self.where})" if self.where else self.text


@dataclass(frozen=True, slots=True)
class Outcome:
    effect: str
    chain: tuple[str, ...]
    tags: frozenset[str]
    holds: frozenset[str]
    rules: tuple[RuleRef, ...]
    computed: frozenset[str] = frozenset()  # signals the candidate computed (not in the log)
    limits: frozenset[str] | None = None  # the limits that count it, by what they say (None: unknown)
    shadow: tuple[str, ...] = ()  # the shadow rules that fired: "<would-be effect>: <source> (file:line)"
    shadow_effect: str | None = None  # the effect with them enforced (None: no shadow rule fired)


def limit_label(h: dict[str, Any]) -> str:
    """A limit as a dry run compares it across versions (line numbers move): `spend 50 GBP per day per tenant`."""
    scope = h.get("scope") or []
    on = f" on {h['model']}" if h.get("model") else ""
    return f"{h.get('kind')} {h.get('limit')} per {h.get('window')}" + (f" per {', '.join(scope)}" if scope else "") + on


def enforced_limits(hits: list[dict[str, Any]]) -> frozenset[str]:
    """The labels of the limits that count a decision and are enforced: a `shadow` limit enforces
    nothing, so adding one changes no decision and promoting one (deleting `shadow`) adds a limit."""
    return frozenset(limit_label(h) for h in hits if not h.get("shadow"))


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip().removesuffix("...").strip().removesuffix("{").strip()


def _rule_ref(hit: dict[str, Any]) -> RuleRef:
    span = hit.get("span") or {}
    where = f"{display_path(span['file'])}:{span.get('line')}" if span.get("file") else ""
    because = hit.get("because") or []
    text = (_norm(hit.get("source") or "") or (str(because[0]) if because else "")
            or str(hit.get("rule_id") or hit.get("kind") or ""))
    return RuleRef(kind=str(hit.get("kind") or ""), effect=hit.get("effect"), text=text, where=where)


def _hold(ob: dict[str, Any]) -> str:
    parts = [f"group={ob.get('group') or '-'}"]
    chans = ob.get("channels") or []
    if chans:
        parts.append("notify=" + ",".join(sorted(f"{c.get('kind')}:{c.get('target')}" for c in chans)))
    if ob.get("timeout_s") is not None:
        parts.append(f"timeout={ob['timeout_s']:g}s->{ob.get('on_timeout') or 'deny'}")
    return " ".join(parts)


def recorded_outcome(rec: LoggedRecord) -> Outcome:
    return Outcome(
        effect=rec.effect or "",
        chain=tuple(rec.chain),
        tags=frozenset(rec.tags),
        holds=frozenset(_hold(o) for o in rec.obligations) if rec.obligations else frozenset(),
        rules=tuple(_rule_ref(h) for h in rec.rules),
        limits=enforced_limits(rec.limits) if rec.limits is not None else None,
    )


def decision_outcome(d: Decision, supplied: dict[str, Any]) -> Outcome:
    rules = tuple(
        RuleRef(kind=h.kind, effect=h.effect, text=_norm(h.source) or (h.because[0] if h.because else h.rule_id),
                where=f"{display_path(h.span.file)}:{h.span.line}" if h.span else "")
        for h in d.rules
    )
    computed = frozenset(k for k in d.signals if k not in supplied)
    holds = frozenset(_hold(o.model_dump(mode="json")) for o in d.obligations) if d.obligations else frozenset()
    limits = enforced_limits([h.model_dump() for h in d.limits])
    shadow = tuple(f"{h.effect}: {_norm(h.source)}" + (f" ({display_path(h.span.file)}:{h.span.line})" if h.span else "")
                   for h in d.shadow)
    return Outcome(effect=d.effect, chain=tuple(d.routing.chain), tags=frozenset(d.tags), holds=holds,
                   rules=rules, computed=computed, limits=limits, shadow=shadow, shadow_effect=d.shadow_effect)


def chain_label(chain: tuple[str, ...] | list[str]) -> str:
    return " > ".join(chain) if chain else "(none)"


def _set_label(values: frozenset[str]) -> str:
    return ", ".join(sorted(values)) if values else "(none)"


_RANK = {"deny": 3, "escalate": 2, "require_approval": 2, "allow": 1}


def causes(old: Outcome, new: Outcome, kind: str) -> list[str]:
    """The rules that explain a change: `+` now fires, `-` no longer fires.

    For an effect change, precedence decides which side explains it: a stricter
    effect is caused by rules that now fire with it; a looser one by the rules
    that decided before and no longer fire. (Rules that merely stopped being
    reached, like an authorize shadowed by a new hold, are left out.)
    """
    if kind == "limits":  # the limits that count the request: added (+) or no longer counting it (-)
        o, nw = old.limits or frozenset(), new.limits or frozenset()
        return [f"+ {x}" for x in sorted(nw - o)] + [f"- {x}" for x in sorted(o - nw)]
    old_by = {r.text: r for r in old.rules}
    new_by = {r.text: r for r in new.rules}
    if kind in ("effect", "approval"):
        relevant = EFFECT_KINDS
    elif kind == "chain":
        relevant = frozenset({"route", "allow_choice", "verify"})
    else:
        relevant = frozenset({"verify", "tag", "escalate"})
    added = [r for t, r in new_by.items() if t not in old_by and (r.kind in relevant or not r.kind)]
    removed = [r for t, r in old_by.items() if t not in new_by and (r.kind in relevant or not r.kind)]
    if kind == "effect":
        ro, rn = _RANK.get(old.effect, 0), _RANK.get(new.effect, 0)
        all_added = [r for t, r in new_by.items() if t not in old_by]
        all_removed = [r for t, r in old_by.items() if t not in new_by]
        pick_added = [r for r in all_added if _RANK.get(r.effect or "", -1) == rn] if rn >= ro else []
        pick_removed = [r for r in all_removed if _RANK.get(r.effect or "", -1) == ro] if rn <= ro else []
        if pick_added or pick_removed:
            added, removed = pick_added, pick_removed
    out = [f"+ {r.label()}" for r in added] + [f"- {r.label()}" for r in removed]
    if not out:
        if kind == "effect" and new.effect == "deny" and not new.rules:
            out.append("+ default deny (no rule names this action)")
        elif kind == "chain":
            decisive = [r for r in new.rules if r.kind == "route"]
            out += [f"~ {r.label()} (same rule, different chain: models or fallbacks changed)" for r in decisive]
        if not out:
            out.append("~ same rules fire; their outcome changed (literal, precedence or model change)")
    return out


class _Tally:
    def __init__(self, max_examples: int) -> None:
        self.max_examples = max_examples
        self.groups: dict[tuple[str, str, str], ChangeGroup] = {}
        self.group_causes: dict[tuple[str, str, str], Counter[str]] = {}

    def add(self, kind: str, old: str, new: str, rec: LoggedRecord, why: list[str], signals: dict[str, Any]) -> None:
        key = (kind, old, new)
        g = self.groups.get(key)
        if g is None:
            if len(self.groups) >= MAX_GROUPS:
                key = (kind, "(other)", "(other)")
                g = self.groups.get(key)
            if g is None:
                g = self.groups[key] = ChangeGroup(kind=kind, old=key[1], new=key[2], count=0)  # type: ignore[arg-type]
                self.group_causes[key] = Counter()
        g.count += 1
        self.group_causes[key].update(why)
        if self.max_examples < 0 or len(g.examples) < self.max_examples:
            req = {k: v for k, v in rec.request.items() if k != "signals" and v not in (None, {}, [])}
            g.examples.append(Example(id=rec.id, ts=rec.ts, tenant=rec.tenant,
                                      action=str(rec.request.get("action")), request=req,
                                      signals={k: v for k, v in signals.items() if v is not None},
                                      old=old, new=new, causes=why))

    def finish(self) -> list[ChangeGroup]:
        order = {"effect": 0, "approval": 1, "chain": 2, "tags": 3, "limits": 4}
        out = []
        for key, g in self.groups.items():
            g.causes = [CauseCount(rule=r, count=c) for r, c in sorted(self.group_causes[key].items(), key=lambda rc: (-rc[1], rc[0]))]
            out.append(g)
        out.sort(key=lambda g: (order.get(g.kind, 9), -g.count, g.old, g.new))
        return out


ChangeSink = Callable[[dict[str, Any]], None]


def _policy_ref(policy: Any) -> PolicyRef:
    return PolicyRef(name=str(getattr(policy, "name", "") or ""), version=getattr(policy, "version", None),
                     hash=str(getattr(policy, "hash", "") or ""),
                     files=sorted(str(f) for f in (getattr(policy, "sources", None) or {})))


def replay(
    policy: Evaluates,
    records: Iterable[LoggedRecord],
    *,
    baseline: Evaluates | None = None,
    signal_provider: Any = None,
    exact: bool = False,
    only_policy: str | None = None,
    rematch_lexicons: frozenset[str] | set[str] = frozenset(),
    max_examples: int = 5,
    cache_size: int | None = None,
    source: str = "",
    since: str | None = None,
    on_change: ChangeSink | None = None,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 2000,
) -> DryRunReport:
    """Replay `records` through `policy` (and `baseline`, when given) and build the report.

    `max_examples` caps examples per change group (-1: keep all, for tests and small logs).
    `rematch_lexicons`: lexicons whose phrases changed since the decisions were logged: their
    recorded mention results are dropped so the candidate matches the logged text again.
    `only_policy`: skip decisions logged under another policy name (counted in `other_policy`).
    Inputs are grouped by what the policies can observe of them (`projection.Projector`)
    unless `exact` is set or a `signal_provider` is given; then only identical inputs are.
    `on_change` receives every changed decision (e.g. to write `--changes-out`), so the full
    list never has to sit in memory.
    """
    started = time.perf_counter()
    cpu_started = time.process_time()
    report = DryRunReport(policy=_policy_ref(policy), baseline=_policy_ref(baseline) if baseline else None,
                          source=source, since=since)
    tally = _Tally(max_examples)
    by_effect: dict[tuple[str, str], int] = {}
    chain_changes: Counter[tuple[str, str]] = Counter()
    by_kind: Counter[str] = Counter()
    new_effects: dict[str, int] = {}
    hashes: dict[str, int] = {}
    computed_names: Counter[str] = Counter()
    shadow_fired: Counter[str] = Counter()  # shadow rule label -> replayed decisions it fired on
    shadow_effects: Counter[tuple[str, str]] = Counter()  # (candidate effect, effect with shadows enforced)
    cache: dict[Any, tuple[Outcome, Outcome | None] | str] = {}
    dumps, sort_keys = orjson.dumps, orjson.OPT_SORT_KEYS
    projector = None
    if not exact and signal_provider is None:
        from policyengine.ci.replay.projection import Projector

        try:
            projector = Projector([policy, baseline] if baseline is not None else [policy])
        except Exception as exc:  # a construct the projection does not know: fall back to exact keys
            report.grouping = f"exact (projection unavailable: {exc})"
        else:
            report.grouping = "projected"
    if cache_size is None:  # grouped keys repeat a lot; exact keys rarely do, so keep fewer
        cache_size = 200_000 if projector is not None else 20_000
    n = n_redacted = n_unique = n_errors = n_replayed = n_computed = n_compared = n_unrecorded = n_changed = 0

    def evaluate(rec: LoggedRecord, supplied: dict[str, Any]) -> tuple[Outcome, Outcome | None] | str:
        data = dict(rec.request)
        data["signals"] = supplied
        try:
            action = Action.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            return f"logged action is not a valid Action: {'.'.join(map(str, first['loc']))}: {first['msg']}"
        try:
            new = decision_outcome(policy.evaluate(action, signal_provider), supplied)
            old = decision_outcome(baseline.evaluate(action, signal_provider), supplied) if baseline else None
        except Exception as exc:  # a policy that raises on one input must not stop the replay
            return f"evaluation failed: {type(exc).__name__}: {exc}"
        return new, old

    stale = frozenset(rematch_lexicons)
    stale_keys = frozenset(k for lex in stale for k in (f"mentions:{lex}", f"mentions.{lex}"))
    report.rematched_lexicons = sorted(stale)
    n_other = 0
    for rec in records:
        n += 1
        if progress is not None and n % progress_every == 0:
            progress(progress_every)
        if only_policy is not None and rec.policy_name and rec.policy_name != only_policy:
            n_other += 1
            continue
        if rec.policy_hash:
            hashes[rec.policy_hash] = hashes.get(rec.policy_hash, 0) + 1
        if rec.redacted:
            n_redacted += 1
        req_signals = rec.request.get("signals")
        supplied = {**req_signals, **rec.signals} if isinstance(req_signals, dict) and req_signals else rec.signals
        if (stale_keys and not stale_keys.isdisjoint(supplied)) or (stale and "mentions" in supplied):
            supplied = drop_mentions(supplied, stale)
        key = (projector.key(rec.request, supplied) if projector is not None
               else dumps((rec.request, supplied), option=sort_keys, default=str))
        try:
            hit = cache.get(key)
        except TypeError:  # an unhashable value (not a valid Action): key the whole input instead
            key = dumps((rec.request, supplied), option=sort_keys, default=str)
            hit = cache.get(key)
        if hit is None:
            hit = evaluate(rec, supplied)
            if len(cache) >= cache_size:
                del cache[next(iter(cache))]
            cache[key] = hit
            n_unique += 1
        if isinstance(hit, str):
            n_errors += 1
            if len(report.error_examples) < MAX_ERROR_EXAMPLES:  # bounded
                report.error_examples.append(ReplayIssue(id=rec.id, message=hit))
            continue
        new, base = hit
        n_replayed += 1
        new_effects[new.effect] = new_effects.get(new.effect, 0) + 1
        if new.shadow:
            shadow_fired.update(new.shadow)
            shadow_effects[(new.effect, new.shadow_effect or new.effect)] += 1
        if new.computed:
            n_computed += 1
            computed_names.update(new.computed)
        if base is not None:
            old = base
            n_compared += 1
            by_effect[(old.effect, new.effect)] = by_effect.get((old.effect, new.effect), 0) + 1
            if (old.effect == new.effect and old.chain == new.chain and old.tags == new.tags and old.holds == new.holds
                    and old.limits == new.limits):
                continue
        elif rec.recorded:
            n_compared += 1
            pair = (rec.effect or "", new.effect)
            by_effect[pair] = by_effect.get(pair, 0) + 1
            if (rec.effect == new.effect and tuple(rec.chain) == new.chain and frozenset(rec.tags) == new.tags
                    and (frozenset(_hold(o) for o in rec.obligations) if rec.obligations else frozenset()) == new.holds
                    and (rec.limits is None or enforced_limits(rec.limits) == new.limits)):
                continue
            old = recorded_outcome(rec)
        else:
            n_unrecorded += 1
            continue
        n_changed += 1
        kinds: list[tuple[str, str, str]] = []
        if old.effect != new.effect:
            kinds.append(("effect", old.effect, new.effect))
        elif old.holds != new.holds:
            kinds.append(("approval", _set_label(old.holds), _set_label(new.holds)))
        if old.chain != new.chain:
            o, nw = chain_label(old.chain), chain_label(new.chain)
            kinds.append(("chain", o, nw))
            chain_changes[(o, nw)] += 1
        if old.tags != new.tags:
            kinds.append(("tags", _set_label(old.tags), _set_label(new.tags)))
        if old.limits is not None and new.limits is not None and old.limits != new.limits:
            kinds.append(("limits", _set_label(old.limits), _set_label(new.limits)))
        all_causes: dict[str, list[str]] = {}
        for kind, o, nw in kinds:
            by_kind[kind] += 1
            why = causes(old, new, kind)
            all_causes[kind] = why
            tally.add(kind, o, nw, rec, why, supplied)
        if on_change is not None:
            on_change({
                "id": rec.id, "ts": rec.ts, "tenant": rec.tenant, "action": rec.request.get("action"),
                "request": rec.request, "signals": supplied,
                "changes": [{"kind": k, "old": o, "new": nw, "causes": all_causes[k]} for k, o, nw in kinds],
            })
    if progress is not None:
        progress(n % progress_every)

    report.total, report.redacted, report.unique_inputs, report.errors = n, n_redacted, n_unique, n_errors
    report.replayed, report.signals_computed, report.compared = n_replayed, n_computed, n_compared
    report.unrecorded, report.changed, report.other_policy = n_unrecorded, n_changed, n_other
    report.changed_share = report.changed / report.compared if report.compared else 0.0
    report.by_kind = dict(by_kind)
    report.by_effect = [Transition(old=o, new=nw, count=c)
                        for (o, nw), c in sorted(by_effect.items(), key=lambda kv: (-kv[1], kv[0]))]
    report.chain_changes = [Transition(old=o, new=nw, count=c) for (o, nw), c in
                            sorted(chain_changes.items(), key=lambda kv: (-kv[1], kv[0]))[:50]]
    report.groups = tally.finish()
    report.shadow_rules = [CauseCount(rule=r, count=c) for r, c in sorted(shadow_fired.items(), key=lambda kv: (-kv[1], kv[0]))]
    report.shadow_effects = [Transition(old=o, new=nw, count=c)
                             for (o, nw), c in sorted(shadow_effects.items(), key=lambda kv: (-kv[1], kv[0]))]
    report.new_effects = dict(sorted(new_effects.items(), key=lambda kv: -kv[1]))
    report.signals_computed_names = dict(sorted(computed_names.items(), key=lambda kv: (-kv[1], kv[0])))
    report.logged_policy_hashes = dict(sorted(hashes.items(), key=lambda kv: -kv[1])[:20])
    report.elapsed_s = time.perf_counter() - started
    report.rate_per_s = n / report.elapsed_s if report.elapsed_s > 0 else 0.0
    report.peak_rss_mb = _peak_rss_mb()
    report.cpu_s = time.process_time() - cpu_started
    return report


def drop_mentions(signals: dict[str, Any], lexicons: frozenset[str]) -> dict[str, Any]:
    """`signals` without the recorded mention results of `lexicons` (every spelling the evaluator reads)."""
    keys = {k for lex in lexicons for k in (f"mentions:{lex}", f"mentions.{lex}")}
    out = {k: v for k, v in signals.items() if k not in keys}
    m = out.get("mentions")
    if isinstance(m, dict) and not lexicons.isdisjoint(m):
        out["mentions"] = {k: v for k, v in m.items() if k not in lexicons}
    return out


def changed_lexicons(candidate: Any, references: list[dict[str, list[str]]]) -> set[str]:
    """Lexicons of the candidate whose phrases differ from any reference version's (or are new)."""
    out: set[str] = set()
    for name, phrases in (getattr(candidate, "lexicons", None) or {}).items():
        norm = sorted(" ".join(p.lower().split()) for p in phrases)
        for ref in references:
            old = ref.get(name)
            if old is None or sorted(" ".join(p.lower().split()) for p in old) != norm:
                out.add(name)
    return out


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024, 1)


def apply_thresholds(report: DryRunReport, *, fail_on_change: bool, max_change_share: float | None) -> None:
    """Fill `fail_reasons` (the CLI exits non-zero when any is set)."""
    if fail_on_change and report.changed:
        report.fail_reasons.append(f"{report.changed} decision(s) would change (--fail-on-change)")
    if max_change_share is not None and report.changed_share > max_change_share:
        report.fail_reasons.append(
            f"{report.changed_share:.2%} of decisions would change, above the allowed {max_change_share:.2%}"
        )
