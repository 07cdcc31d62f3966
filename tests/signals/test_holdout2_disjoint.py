"""The second holdout (tests/data/signals_holdout2/): its size and schema, that it shares no text
with the first set, and that it is now training data.

holdout2 was scored once as the untouched split and its misses were read, so it is tuning
data: its messages are in the shipped sentiment and intent training data, and
benchmarks/signals_eval.py scores it leave-one-split-out (models retrained without its rows).
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


def test_holdout2_messages_are_training_data_with_the_same_labels():
    """Every holdout2 message is in both training sets, labelled as in the split (so the
    benchmark's leave-one-split-out rotation has rows to drop)."""
    msgs = _rows(H2 / "messages.jsonl")
    sent = {_norm(r["text"]): r["label"] for r in _rows(SHIPPED / "sentiment_train.jsonl")}
    intent = {_norm(r["text"]): r["label"] for r in _rows(SHIPPED / "intent_litigation.jsonl")}
    for r in msgs:
        key = _norm(r["text"])
        assert sent.get(key) == r["sentiment"], r["text"]
        assert intent.get(key) == r["mentions"]["litigation"], r["text"]


def test_a_customers_legal_notice_is_labelled_negative():
    """The labelling rule (tests/data/signals_README.md): an inbound message pursuing legal
    action against the recipient is a dispute, however calmly written."""
    for split in ("tune", "holdout", "holdout2"):
        for r in _rows(DATA / f"signals_{split}" / "messages.jsonl"):
            if r["direction"] == "inbound" and r["mentions"]["litigation"]:
                assert r["sentiment"] == "negative", (split, r["text"])
