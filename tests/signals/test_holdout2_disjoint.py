"""The second holdout (tests/data/signals_holdout2/): its size, its schema, and that none of its text
is in the other splits or in any shipped training data.

holdout2 was written after the first holdout's misses had been read, and before any further
tuning; it is scored only by the final run of benchmarks/signals_eval.py --split holdout2.
"""

from __future__ import annotations

from pathlib import Path

from tests.signals.test_holdout_disjoint import _norm, _rows, _texts

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SHIPPED = ROOT / "policyengine" / "signals" / "data"
H2 = DATA / "signals_holdout2"


def test_holdout2_is_large_enough_and_well_formed():
    msgs, pairs = _rows(H2 / "messages.jsonl"), _rows(H2 / "pairs.jsonl")
    assert len(msgs) >= 250 and len(pairs) >= 160
    for r in msgs:
        assert r["sentiment"] in ("negative", "neutral", "positive")
        assert isinstance(r["mentions"]["litigation"], bool)
        assert r["direction"] in ("inbound", "outbound")
    for r in pairs:
        assert isinstance(r["divergent"], bool) and r["a"].strip() and r["b"].strip()
    assert {r["domain"] for r in msgs} >= {"retail", "banking", "telecom", "travel", "saas", "utilities",
                                           "healthcare_billing"}
    assert len({_norm(r["text"]) for r in msgs}) == len(msgs)


def test_holdout2_shares_no_text_with_the_other_splits():
    h2 = _texts("holdout2")
    for split in ("tune", "holdout"):
        shared = h2 & _texts(split)
        assert not shared, (split, len(shared))


def test_no_holdout2_text_is_in_the_shipped_training_data():
    h2 = _texts("holdout2")
    for path in sorted(SHIPPED.glob("*.jsonl")):
        shipped = {_norm(r["text"]) for r in _rows(path)}
        assert not h2 & shipped, (path.name, len(h2 & shipped))
