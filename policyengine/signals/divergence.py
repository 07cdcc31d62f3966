"""Divergence between two model answers: embeddings plus the checks cosine misses.

Cosine similarity of sentence embeddings says whether two answers talk about the
same thing; it does not notice that "approved" and "not approved" disagree
(cosine ~0.92) or that £50 and £500 differ (~0.99). The score therefore takes the
larger of a cosine-based divergence and the severity of any fact conflict found
by `checks` (amounts, quantities, dates, times, decision polarity, refusal).

With the answer-pair model (`pair_model.py`, on by default when its adapter file is
installed) the score is the blend of that rule score and the model's probability that the
pair diverges: the rules explain themselves and catch what they were written for, the
model reads both answers at once and catches differences nobody wrote a rule for.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from policyengine.signals.alignment import (
    containment,
    destinations,
    identifier_conflict,
    opposites,
    substitutions,
)
from policyengine.signals.checks import Conflict, compare_facts, extract_facts, shared_facts
from policyengine.signals.commitments import commitment_conflicts
from policyengine.signals.conditions import (
    amount_count_conflicts,
    basis_conflicts,
    condition_conflicts,
    count_conflicts,
    month_conflicts,
    price_conflicts,
    relative_date_conflicts,
)
from policyengine.signals.embedder import Embedder, shared_embedder
from policyengine.signals.formats import canonical
from policyengine.signals.negation import action_conflicts, parity_agrees, parity_conflicts
from policyengine.signals.pair_model import PairModel, adapters_path, shared_pair_model

if TYPE_CHECKING:  # numpy is part of the embeddings extra: imported where vectors are used
    import numpy as np

# Cosine similarity at which the semantic part alone reaches DEFAULT_THRESHOLD (0.60 before
# issue #16; 0.50 chosen on tests/data/signals_tune once the alignment checks catch slot changes).
# Chosen on tests/data/divergence_pairs.jsonl (benchmarks/signals_eval.py prints
# the best cosine-only threshold beside it).
DEFAULT_COSINE_AT_THRESHOLD = 0.50
DEFAULT_THRESHOLD = 0.25
FACT_AGREEMENT_DISCOUNT = 0.6
# When the shorter answer's content words all reappear in the longer one, the longer one
# adds detail: the wording difference counts for this much. Chosen on the tune split.
DETAIL_DISCOUNT = 0.5
DETAIL_CONTAINMENT = 0.75
# severities of the alignment checks (policyengine.signals.alignment)
# "wording" (a swapped word no list explains) is the weakest: 0.5 leaves the call to a confident
# pair model, which reads paraphrase better (holdout11, round 12: 5 fewer false alarms, no miss)
ALIGNMENT_SEVERITY = {"identifier": 0.8, "name": 0.8, "wording": 0.5, "opposite": 0.75, "negation": 0.75,
                      "commitment": 0.7, "condition": 0.7, "counts": 0.8, "price": 0.75,
                      "relative date": 0.75, "amount count": 0.8, "month": 0.75, "basis": 0.75}
# The blend: m = (rule score + pair probability) / 2, mapped piecewise-linearly so that
# m = PAIR_BLEND_AT_THRESHOLD lands on DEFAULT_THRESHOLD (0 -> 0, 1 -> 1). The knee was chosen
# on holdout8, a split the pair model was not trained on (benchmarks/signals.md).
PAIR_BLEND_AT_THRESHOLD = 0.5
# fact conflicts that decide a pair alone, beside `Conflict.decisive`: on holdout11 (tuning data
# of round 12) every one of them the blend overruled was a real divergence (benchmarks/signals.md)
DECISIVE_KINDS = frozenset({"amounts", "times", "quantities"})
# Below this cosine the two answers are on different topics, a kind of pair the pair model
# never saw (every labelled pair is two answers to one question; the lowest cosine on holdout8
# is 0.42) and reads as "same" (two unrelated answers: p 0.08). There the rules decide alone.
PAIR_MIN_COSINE = 0.40
_EXPLICIT_NEGATOR = re.compile(r"\b(?:not|no|never|cannot|unable|without)\b|n['\u2019]t\b", re.I)


class DivergenceResult(BaseModel):
    divergence: float = Field(ge=0.0, le=1.0)  # 0 = same answer ... 1 = contradictory
    cosine: float
    semantic: float = Field(ge=0.0, le=1.0)  # the cosine-only part of the score
    reasons: list[str] = Field(default_factory=list)
    conflicts: list[str] = Field(default_factory=list)  # kinds: amounts, polarity, refusal, ...
    rules: float = Field(ge=0.0, le=1.0)  # the rule-and-cosine score alone
    pair_probability: float | None = Field(default=None, ge=0.0, le=1.0)  # None: scored without the pair model
    threshold: float
    aligned: bool  # divergence <= threshold


class DivergenceScorer:
    """Scores how far two answers diverge. Thread-safe; the embedder and pair model are shared.

    `pair_model="auto"` uses the process-wide answer-pair model when its adapter file is
    installed; `None` scores with the rules and cosine alone (`pair_probability` is then
    None in every result); a `PairModel` uses that one. A pair model that cannot load
    raises `PairModelError` on first use: the score never silently loses half its input."""

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        cosine_at_threshold: float = DEFAULT_COSINE_AT_THRESHOLD,
        checks: bool = True,
        pair_model: PairModel | str | None = "auto",
    ) -> None:
        _check_unit("threshold", threshold)
        if not -1.0 < cosine_at_threshold < 1.0:
            raise ValueError("cosine_at_threshold must be in (-1, 1)")
        self.embedder = embedder or shared_embedder()
        self.threshold = threshold
        self.cosine_at_threshold = cosine_at_threshold
        self.checks = checks
        if pair_model == "auto":
            pair_model = shared_pair_model() if adapters_path().is_file() else None
        elif isinstance(pair_model, str):
            raise ValueError(f"pair_model must be 'auto', None or a PairModel, got {pair_model!r}")
        self.pair_model: PairModel | None = pair_model

    def blend(self, rules: float, probability: float) -> float:
        """The final score from the rule score and the pair probability: monotone in both,
        0 at (0, 0), 1 at (1, 1), and `threshold` where their mean is PAIR_BLEND_AT_THRESHOLD."""
        m = (rules + probability) / 2
        knee, thr = PAIR_BLEND_AT_THRESHOLD, self.threshold
        if m <= knee:
            return thr * m / knee
        return thr + (1 - thr) * (m - knee) / (1 - knee)

    def semantic_divergence(self, cosine: float) -> float:
        """Linear map: cosine 1 -> 0, `cosine_at_threshold` -> `threshold`, clipped to [0, 1]."""
        slope = self.threshold / (1.0 - self.cosine_at_threshold) if self.threshold > 0 else 1.0
        return min(1.0, max(0.0, (1.0 - cosine) * slope))

    def score(self, a: str, b: str, threshold: float | None = None) -> DivergenceResult:
        if not isinstance(a, str) or not isinstance(b, str):
            raise TypeError("score() compares two answer strings")
        thr = self.threshold if threshold is None else _check_unit("threshold", threshold)
        if not a.strip() and not b.strip():
            return DivergenceResult(divergence=0.0, cosine=1.0, semantic=0.0, rules=0.0, threshold=thr,
                                    aligned=True, reasons=["both answers are empty"])
        if not a.strip() or not b.strip():
            return DivergenceResult(divergence=1.0, cosine=0.0, semantic=1.0, rules=1.0, threshold=thr,
                                    aligned=False, reasons=["one answer is empty"], conflicts=["empty"])
        cosine = self._cosine(a, b)
        probability = None
        # the same words cannot diverge; the pair model, which learned from near-identical pairs that
        # mostly did, reads two identical answers as divergent (p 0.99), so it is not asked
        same = " ".join(a.lower().split()) == " ".join(b.lower().split())
        if self.pair_model is not None and cosine >= PAIR_MIN_COSINE and not same:
            probability = self.pair_model.probability(a, b)
        agreed = 0
        conflicts: list[Conflict] = []
        if self.checks:
            # the checks compare values, so one spelling per value first ("St" = "Street")
            a, b = canonical(a), canonical(b)
            fa, fb = extract_facts(a), extract_facts(b)
            conflicts = _without_parity_artifacts(a, b, compare_facts(fa, fb))
            conflicts += alignment_conflicts(a, b, conflicts)
            agreed = 0 if conflicts else shared_facts(fa, fb)
        detail = self.checks and not conflicts and (containment(a, b) >= DETAIL_CONTAINMENT or _elaborates(a, b))
        return self._combine(cosine, conflicts, thr, agreed, detail, probability)

    def _cosine(self, a: str, b: str) -> float:
        """Cosine of the two answers' embeddings. Answers longer than the model's window
        (256 word pieces) are embedded in sentence-aligned chunks and the chunk vectors
        averaged, so the end of a long answer counts as much as its start."""
        ca, cb = _chunks(a), _chunks(b)
        vecs = self.embedder.embed([*ca, *cb])
        va, vb = _mean_unit(vecs[: len(ca)]), _mean_unit(vecs[len(ca) :])
        return float(max(-1.0, min(1.0, float(va @ vb))))

    async def ascore(self, a: str, b: str, threshold: float | None = None) -> DivergenceResult:
        """`score()` in a worker thread (the embedding model never blocks the loop)."""
        return await asyncio.to_thread(self.score, a, b, threshold)

    def _combine(self, cosine: float, conflicts: list[Conflict], thr: float, agreed: int = 0,
                 detail: bool = False, probability: float | None = None) -> DivergenceResult:
        semantic = self.semantic_divergence(cosine)
        if detail:
            # one answer repeats the other's content and adds to it: more detail, not a
            # different answer
            semantic *= DETAIL_DISCOUNT
        if agreed:
            # Both answers state the same amounts/dates/quantities and nothing
            # contradicts: short answers phrased differently ("£50" / "50 GBP")
            # embed far apart, so the wording difference counts for less.
            semantic *= FACT_AGREEMENT_DISCOUNT
        rules = float(min(1.0, max(0.0, max([semantic, *(c.severity for c in conflicts)]))))
        reasons = [c.reason for c in conflicts]
        if semantic > thr:
            reasons.append(f"answers differ in meaning: cosine {cosine:.2f}")
        divergence = rules
        if probability is not None:
            divergence = float(min(1.0, max(0.0, self.blend(rules, probability))))
            if any(c.decisive or c.kind in DECISIVE_KINDS for c in conflicts):
                # a different amount, time or quantity is read by the fact checks exactly; the
                # pair model, which reads words, never talks it below the threshold
                divergence = max(divergence, rules)
            reasons.append(f"answer-pair model: {probability:.2f} probability the answers diverge")
        if math.isnan(divergence):  # pragma: no cover - defensive
            divergence = 1.0
        return DivergenceResult(
            divergence=round(divergence, 4),
            cosine=round(cosine, 4),
            semantic=round(semantic, 4),
            rules=round(rules, 4),
            pair_probability=None if probability is None else round(probability, 4),
            reasons=reasons,
            conflicts=sorted({c.kind for c in conflicts}),
            threshold=thr,
            aligned=divergence <= thr,
        )


def alignment_conflicts(a: str, b: str, found: list[Conflict] = ()) -> list[Conflict]:  # type: ignore[assignment]
    """Identifier and slot-substitution conflicts (policyengine.signals.alignment) that the
    fact checks in `found` have not already reported."""
    out: list[Conflict] = []
    ids = identifier_conflict(a, b)
    kinds = {c.kind for c in found}
    if ids is not None and not kinds & {"amounts", "dates", "times", "quantities"}:
        ia, ib = ids
        # a bare number is not decisive: the identifier check also sees "2" beside "two rooms"
        out.append(Conflict("identifiers", f"identifiers differ: {', '.join(sorted(ia))} vs {', '.join(sorted(ib))}",
                            ALIGNMENT_SEVERITY["identifier"], decisive=any(not x.isdigit() for x in ia | ib)))
    if not found and not out:
        for pc in parity_conflicts(a, b):
            out.append(Conflict("negation", f"one answer negates the other: {pc.a!r} vs {pc.b!r}",
                                ALIGNMENT_SEVERITY["negation"]))
            break
    if not found and not out:
        for kind, reason in commitment_conflicts(a, b):
            out.append(Conflict(kind, reason, ALIGNMENT_SEVERITY["commitment"]))
            break
    if not found and not out:
        for name in action_conflicts(a, b):
            out.append(Conflict("contradiction", f"opposite actions: {name}", ALIGNMENT_SEVERITY["opposite"]))
            break
    if not found and not out:
        for name in opposites(a, b):
            out.append(Conflict("contradiction", f"contradiction: {name}", ALIGNMENT_SEVERITY["opposite"]))
            break
    if not found and not out:
        da, db = destinations(a), destinations(b)
        if da and db and da.isdisjoint(db):
            out.append(Conflict("destination", f"different place: {', '.join(sorted(da))} vs {', '.join(sorted(db))}",
                                ALIGNMENT_SEVERITY["name"]))
    if not found and not out:
        # one answer restricts, counts, prices or dates what the other states plainly
        for kind, check in (("counts", count_conflicts), ("amount count", amount_count_conflicts),
                            ("relative date", relative_date_conflicts), ("month", month_conflicts),
                            ("price", price_conflicts), ("basis", basis_conflicts),
                            ("condition", condition_conflicts)):
            reasons = check(a, b)
            if reasons:
                out.append(Conflict(kind.replace(" ", "_"), reasons[0], ALIGNMENT_SEVERITY[kind]))
                break
    if not found and not out:
        for sub in substitutions(a, b):
            if sub.kind == "identifier" and ids is None and kinds:
                continue
            label = {"identifier": "different number", "name": "different name", "wording": "different"}[sub.kind]
            out.append(Conflict(f"substitution:{sub.kind}", f"{label}: {sub.a!r} vs {sub.b!r}",
                                ALIGNMENT_SEVERITY[sub.kind]))
            break
    return out


# A terse answer ("No.", "We've fixed the issue.") and a full one embed far apart even when they
# agree: an answer of at most this many words beside one ELABORATION_RATIO times as long is read
# as the same answer with more said, like `DETAIL_CONTAINMENT` (its semantic part halved).
TERSE_WORDS = 6
ELABORATION_RATIO = 3.0


def _elaborates(a: str, b: str) -> bool:
    na, nb = len(a.split()), len(b.split())
    short, long_ = min(na, nb), max(na, nb)
    return short <= TERSE_WORDS and long_ >= ELABORATION_RATIO * short


def _without_parity_artifacts(a: str, b: str, conflicts: list[Conflict]) -> list[Conflict]:
    """Drop word-level polarity conflicts when both answers negate explicitly and every
    aligned sentence pair has the same negation parity: "We can't approve the discount" and
    "The discount isn't something we're able to approve" say the same thing."""
    if not any(c.kind == "polarity" for c in conflicts):
        return conflicts
    if not (_EXPLICIT_NEGATOR.search(a) and _EXPLICIT_NEGATOR.search(b) and parity_agrees(a, b)):
        return conflicts
    return [c for c in conflicts if c.kind != "polarity"]


CHUNK_WORDS = 150  # ~200 word pieces: inside all-MiniLM-L6-v2's 256-piece window
_SENTENCES = re.compile(r"[^.!?\n]+(?:[.!?]+|\n|$)")


def _chunks(text: str) -> list[str]:
    words = text.split()
    if len(words) <= CHUNK_WORDS:
        return [text]
    chunks: list[str] = []
    cur: list[str] = []
    for sent in (m.group(0).strip() for m in _SENTENCES.finditer(text)):
        n = len(sent.split())
        if cur and len(" ".join(cur).split()) + n > CHUNK_WORDS:
            chunks.append(" ".join(cur))
            cur = []
        if n > CHUNK_WORDS:  # one very long sentence: cut it by words
            sw = sent.split()
            chunks += [" ".join(sw[i : i + CHUNK_WORDS]) for i in range(0, len(sw), CHUNK_WORDS)]
            continue
        if sent:
            cur.append(sent)
    if cur:
        chunks.append(" ".join(cur))
    return chunks or [text]


def _mean_unit(vecs: np.ndarray) -> np.ndarray:
    if len(vecs) == 1:
        return vecs[0]
    import numpy as np

    v = vecs.mean(axis=0)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _check_unit(name: str, value: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)
