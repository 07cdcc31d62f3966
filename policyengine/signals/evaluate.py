"""Measure the escalation signals on labelled data, and propose thresholds from it.

The data is JSON Lines, one object per line, in either of two shapes (one file may mix
them; blank lines are skipped):

* a message: `{"text": "...", "sentiment": "negative" | "neutral" | "positive",
  "mentions": {"litigation": true}, "tags": ["sarcasm"]}`. `sentiment` and `mentions` are
  each optional; `sentiment` may also be a boolean `negative` (`"negative": true`).
* an answer pair: `{"a": "...", "b": "...", "divergent": true, "tags": ["amounts"]}`.

`evaluate()` scores every row with the detectors the labels call for and returns, per
detector, balanced accuracy, precision, recall, the confusion counts (tp, fp, tn, fn) and
the same per tag. The positive class is what escalates: sentiment below the threshold, a
mention, a divergence above the threshold. Mentions are measured in each mode (`words`,
`intent`, `both`) for a lexicon with an intent model, by `words` otherwise.
`calibrate()` proposes the threshold that maximises balanced accuracy on the data for
sentiment and divergence, and for the intent model's probability, with the figures at the
current and the proposed threshold.

Guarantees: a malformed line raises `DataError` naming the file, the line and what is
wrong; no row is silently skipped; nothing here writes anywhere.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_LEXICONS", "DataError", "Metrics", "calibrate", "evaluate", "load_rows", "metrics"]

# The shipped support-desk policy's lexicon (policies/support-desk/20-escalation.policy).
DEFAULT_LEXICONS: dict[str, list[str]] = {
    "litigation": ["lawsuit", "sue", "solicitor", "attorney", "legal action", "court"],
}
SENTIMENT_LABELS = ("negative", "neutral", "positive")


class DataError(ValueError):
    """A labelled-data line that cannot be read (the message names file, line and reason)."""


@dataclass
class Metrics:
    """Confusion counts of a binary decision (positive = escalate) and the rates from them."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    per_tag: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else 0.0

    @property
    def balanced_accuracy(self) -> float:
        return (self.recall + self.specificity) / 2

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(n=self.n, precision=round(self.precision, 4), recall=round(self.recall, 4),
                 balanced_accuracy=round(self.balanced_accuracy, 4))
        d["per_tag"] = {t: {**c, "correct": c["tp"] + c["tn"], "n": sum(c.values())} for t, c in
                        sorted(self.per_tag.items())}
        return d


def metrics(pred: Sequence[bool], truth: Sequence[bool], tags: Sequence[Sequence[str]] | None = None) -> Metrics:
    """Confusion counts of `pred` against `truth`, overall and per tag."""
    m = Metrics()
    for i, (p, t) in enumerate(zip(pred, truth, strict=True)):
        cell = ("tp" if t else "fp") if p else ("fn" if t else "tn")
        setattr(m, cell, getattr(m, cell) + 1)
        for tag in (tags[i] if tags else ()):
            m.per_tag.setdefault(tag, {"tp": 0, "fp": 0, "tn": 0, "fn": 0})[cell] += 1
    return m


def load_rows(paths: str | Path | Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read labelled rows from one or more JSONL files, checking each line's shape."""
    if isinstance(paths, str | Path):
        paths = [paths]
    rows: list[dict[str, Any]] = []
    for path in paths:
        p = Path(path)
        try:
            lines = p.read_text("utf-8").splitlines()
        except OSError as exc:
            raise DataError(f"{p}: cannot read: {exc.strerror or exc}") from exc
        for no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{no}: not JSON: {exc.msg}") from exc
            rows.append(_check(row, f"{p}:{no}"))
    return rows


def _check(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(f"{where}: a line must be a JSON object")
    tags = row.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DataError(f"{where}: tags must be a list of strings")
    if "a" in row or "b" in row:
        if not isinstance(row.get("a"), str) or not isinstance(row.get("b"), str):
            raise DataError(f"{where}: an answer pair needs two strings, a and b")
        if not isinstance(row.get("divergent"), bool):
            raise DataError(f"{where}: an answer pair needs divergent: true or false")
        return row
    if not isinstance(row.get("text"), str):
        raise DataError(f"{where}: a message needs text (or a pair needs a and b)")
    if "sentiment" in row and row["sentiment"] not in SENTIMENT_LABELS:
        raise DataError(f"{where}: sentiment must be one of {', '.join(SENTIMENT_LABELS)}, got {row['sentiment']!r}")
    if "negative" in row and not isinstance(row["negative"], bool):
        raise DataError(f"{where}: negative must be true or false")
    ments = row.get("mentions", {})
    if not isinstance(ments, dict) or not all(isinstance(v, bool) for v in ments.values()):
        raise DataError(f"{where}: mentions must map lexicon names to true or false")
    if "sentiment" not in row and "negative" not in row and not ments:
        raise DataError(f"{where}: a message needs a label: sentiment, negative or mentions")
    return row


def _negative(row: Mapping[str, Any]) -> bool | None:
    if "negative" in row:
        return bool(row["negative"])
    if "sentiment" in row:
        return row["sentiment"] == "negative"
    return None


@dataclass
class _Scored:
    sentiment: list[tuple[float, bool, list[str]]] = field(default_factory=list)
    mentions: dict[str, dict[str, list[tuple[bool, bool, list[str]]]]] = field(default_factory=dict)
    intent: dict[str, list[tuple[float, bool, list[str]]]] = field(default_factory=dict)
    divergence: list[tuple[float, bool, list[str]]] = field(default_factory=list)


def _score(rows: Sequence[Mapping[str, Any]], provider: Any, lexicons: Mapping[str, Sequence[str]],
           scorer: Any = None) -> _Scored:
    from policyengine.signals.intent import has_intent_model

    out = _Scored()
    msgs = [r for r in rows if "text" in r]
    labelled = [(r, neg) for r in msgs if (neg := _negative(r)) is not None]
    if labelled:
        scores = provider._sentiment.scores([r["text"] for r, _ in labelled]) if hasattr(provider, "_sentiment") \
            else [provider.sentiment(r["text"]) for r, _ in labelled]
        out.sentiment = [(s, neg, list(r.get("tags", []))) for s, (r, neg) in zip(scores, labelled, strict=True)]
    names = sorted({k for r in msgs for k in r.get("mentions", {})})
    for lex in names:
        if lex not in lexicons:
            raise DataError(f"labels name lexicon {lex!r}, which has no phrases: pass a policy that declares it "
                            f"(known: {', '.join(sorted(lexicons)) or 'none'})")
        phrases = list(lexicons[lex])
        rs = [r for r in msgs if lex in r.get("mentions", {})]
        modes: dict[str, list[tuple[bool, bool, list[str]]]] = {"words": []}
        for r in rs:
            modes["words"].append((provider.mentions(r["text"], lex, phrases) is not None, r["mentions"][lex],
                                   list(r.get("tags", []))))
        if has_intent_model(lex) and hasattr(provider, "intent_model"):
            model = provider.intent_model(lex)
            res = model.results([r["text"] for r in rs])
            out.intent[lex] = [(x.probability, r["mentions"][lex], list(r.get("tags", []))) for x, r in
                               zip(res, rs, strict=True)]
            for mode in ("intent", "both"):
                modes[mode] = [(x.probability >= model.threshold, t, tg) for (_, t, tg), x in
                               zip(out.intent[lex], res, strict=True)]
        out.mentions[lex] = modes
    pairs = [r for r in rows if "a" in r]
    if pairs:
        if scorer is None:
            from policyengine.signals.divergence import DivergenceScorer

            scorer = DivergenceScorer(getattr(provider, "embedder", None))
        out.divergence = [(scorer.score(r["a"], r["b"]).divergence, r["divergent"], list(r.get("tags", [])))
                          for r in pairs]
    return out


def _at(items: Sequence[tuple[float, bool, list[str]]], decide: Callable[[float], bool]) -> Metrics:
    return metrics([decide(s) for s, _, _ in items], [t for _, t, _ in items], [tg for _, _, tg in items])


def evaluate(rows: Sequence[Mapping[str, Any]], provider: Any = None, *,
             lexicons: Mapping[str, Sequence[str]] | None = None, sentiment_threshold: float = 0.3,
             divergence_threshold: float = 0.25, scorer: Any = None) -> dict[str, Any]:
    """Every detector the labels call for, on `rows` (see the module docstring for the shape)."""
    if provider is None:
        from policyengine.signals.provider import DefaultSignalProvider

        provider = DefaultSignalProvider()
    sc = _score(rows, provider, lexicons or DEFAULT_LEXICONS, scorer)
    report: dict[str, Any] = {"rows": len(rows)}
    if sc.sentiment:
        report["sentiment"] = {"threshold": sentiment_threshold, "decision": f"sentiment < {sentiment_threshold}",
                               **_at(sc.sentiment, lambda s: s < sentiment_threshold).as_dict()}
    for lex, modes in sc.mentions.items():
        report[f"mentions:{lex}"] = {
            mode: metrics([p for p, _, _ in v], [t for _, t, _ in v], [tg for _, _, tg in v]).as_dict()
            for mode, v in modes.items()}
    if sc.divergence:
        report["divergence"] = {"threshold": divergence_threshold,
                                "decision": f"divergence > {divergence_threshold}",
                                **_at(sc.divergence, lambda s: s > divergence_threshold).as_dict()}
    return report


def _best(items: Sequence[tuple[float, bool, list[str]]], below: bool) -> tuple[float, Metrics]:
    """The cut maximising balanced accuracy: midpoints between consecutive distinct scores."""
    vals = sorted({round(s, 4) for s, _, _ in items})
    cuts = [round((x + y) / 2, 4) for x, y in itertools.pairwise(vals)] or vals
    best: tuple[float, Metrics] | None = None
    for c in cuts:
        m = _at(items, (lambda s, c=c: s < c) if below else (lambda s, c=c: s > c))
        if best is None or m.balanced_accuracy > best[1].balanced_accuracy + 1e-12:
            best = (c, m)
    assert best is not None
    return best


def calibrate(rows: Sequence[Mapping[str, Any]], provider: Any = None, *,
              lexicons: Mapping[str, Sequence[str]] | None = None, sentiment_threshold: float = 0.3,
              divergence_threshold: float = 0.25, scorer: Any = None) -> dict[str, Any]:
    """Proposed thresholds (maximal balanced accuracy on `rows`) beside the current ones."""
    if provider is None:
        from policyengine.signals.provider import DefaultSignalProvider

        provider = DefaultSignalProvider()
    sc = _score(rows, provider, lexicons or DEFAULT_LEXICONS, scorer)
    out: dict[str, Any] = {"rows": len(rows)}

    def entry(items: Any, current: float, below: bool, rule: str) -> dict[str, Any]:
        cut, m = _best(items, below)
        now = _at(items, (lambda s: s < current) if below else (lambda s: s > current))
        if now.balanced_accuracy >= m.balanced_accuracy:
            cut, m = current, now  # the current threshold is already as good: keep it
        return {"current": current, "proposed": cut, "rule": rule.format(cut),
                "current_balanced_accuracy": round(now.balanced_accuracy, 4),
                "proposed_balanced_accuracy": round(m.balanced_accuracy, 4),
                "proposed_precision": round(m.precision, 4), "proposed_recall": round(m.recall, 4)}

    if sc.sentiment:
        out["sentiment"] = entry(sc.sentiment, sentiment_threshold, True, "escalate when sentiment < {}")
    for lex, items in sc.intent.items():
        model = provider.intent_model(lex)
        # probability >= threshold fires; _best's "above" cut is strict, equivalent at midpoints
        out[f"mentions:{lex}:intent"] = entry(items, model.threshold, False,
                                              "IntentModel(" + repr(lex) + ", threshold={})")
    if sc.divergence:
        out["divergence"] = entry(sc.divergence, divergence_threshold, False, "escalate when divergence > {}")
    return out
