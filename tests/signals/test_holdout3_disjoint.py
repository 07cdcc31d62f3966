"""The third holdout (tests/data/signals_holdout3/): well formed, no text shared with the earlier
splits, and now training data.

holdout3 was the untouched split of round 3: scored once (2026-12-02 18:41 UTC) and its misses
read afterwards, so in round 4 it is tuning data. Its messages are in the shipped sentiment and
intent training data (`"source": "holdout3"`), and benchmarks/signals_eval.py scores it
leave-one-split-out (models retrained without its rows).
"""

from __future__ import annotations

from pathlib import Path

from tests.signals.test_holdout_disjoint import _norm, _rows

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SHIPPED = ROOT / "policyengine" / "signals" / "data"
H3 = DATA / "signals_holdout3"


def _messages(split: str) -> set[str]:
    return {_norm(r["text"]) for r in _rows(DATA / f"signals_{split}" / "messages.jsonl")}


def _pairs(split: str) -> set[tuple[str, str]]:
    return {tuple(sorted((_norm(r["a"]), _norm(r["b"])))) for r in _rows(DATA / f"signals_{split}" / "pairs.jsonl")}


def test_holdout3_is_large_enough_and_well_formed():
    msgs, pairs = _rows(H3 / "messages.jsonl"), _rows(H3 / "pairs.jsonl")
    assert len(msgs) >= 500 and len(pairs) >= 290
    for r in msgs:
        assert r["text"].strip()
        assert r["sentiment"] in ("negative", "neutral", "positive")
        assert isinstance(r["mentions"]["litigation"], bool)
    for r in pairs:
        assert isinstance(r["divergent"], bool) and r["a"].strip() and r["b"].strip()
    assert len({_norm(r["text"]) for r in msgs}) == len(msgs)


def test_holdout3_shares_no_message_or_pair_with_the_earlier_splits():
    for split in ("tune", "holdout", "holdout2"):
        assert not _messages("holdout3") & _messages(split), split
        assert not _pairs("holdout3") & _pairs(split), split


def test_holdout3_messages_are_training_data_with_the_same_labels():
    """Every holdout3 message is in both training sets, labelled as in the split (so the
    benchmark's leave-one-split-out rotation has rows to drop)."""
    sent = {_norm(r["text"]): r["label"] for r in _rows(SHIPPED / "sentiment_train.jsonl")}
    intent = {_norm(r["text"]): r["label"] for r in _rows(SHIPPED / "intent_litigation.jsonl")}
    for r in _rows(H3 / "messages.jsonl"):
        key = _norm(r["text"])
        assert sent.get(key) == r["sentiment"], r["text"]
        assert intent.get(key) == r["mentions"]["litigation"], r["text"]
