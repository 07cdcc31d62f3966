"""The later holdouts (tests/data/signals_holdout3/ to 11/): well formed, no text shared
with the splits before them, and now training data.

Each was the untouched split of its round (holdout3 of round 3, scored once on 2026-12-02 at 18:41
UTC; holdout4 of round 4, on 2026-12-03 at 09:23 UTC; holdout5 of round 5, at 09:46 UTC;
holdout6 of round 6, at 12:45 UTC; holdout7 of round 7, at 13:25 UTC; holdout8 of round 8, at 14:09 UTC; holdout9 of round 9, at 17:05 UTC; holdout10 of round 10, on 2026-12-06 at 14:37 UTC; holdout11 of round 11, on 2026-12-07 at 03:37 UTC), written by an independent writer; its misses
were read afterwards, so it is tuning data from the next round on. Its messages are in the shipped
sentiment and intent training data (`"source": "<split>"`), and benchmarks/signals_eval.py scores it
leave-one-split-out (models retrained without its rows).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.signals.test_holdout_disjoint import _norm, _rows, assert_well_formed

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SHIPPED = ROOT / "policyengine" / "signals" / "data"
# split -> (minimum messages, minimum pairs, the splits written before it)
LATER = {
    "holdout3": (500, 290, ("tune", "holdout", "holdout2")),
    "holdout4": (570, 390, ("tune", "holdout", "holdout2", "holdout3")),
    "holdout5": (440, 490, ("tune", "holdout", "holdout2", "holdout3", "holdout4")),
    "holdout6": (405, 300, ("tune", "holdout", "holdout2", "holdout3", "holdout4", "holdout5")),
    "holdout7": (410, 299, ("tune", "holdout", "holdout2", "holdout3", "holdout4", "holdout5", "holdout6")),
    "holdout8": (401, 300, ("tune", "holdout", "holdout2", "holdout3", "holdout4", "holdout5", "holdout6", "holdout7")),
    "holdout9": (870, 599, ("tune", "holdout", "holdout2", "holdout3", "holdout4", "holdout5", "holdout6", "holdout7",
                            "holdout8")),
    "holdout10": (443, 324, ("tune", "holdout", "holdout2", "holdout3", "holdout4", "holdout5", "holdout6", "holdout7",
                             "holdout8", "holdout9")),
    "holdout11": (1807, 1232, ("tune", "holdout", "holdout2", "holdout3", "holdout4", "holdout5", "holdout6", "holdout7",
                               "holdout8", "holdout9", "holdout10")),
}


def _messages(split: str) -> set[str]:
    return {_norm(r["text"]) for r in _rows(DATA / f"signals_{split}" / "messages.jsonl")}


def _pairs(split: str) -> set[tuple[str, str]]:
    return {tuple(sorted((_norm(r["a"]), _norm(r["b"])))) for r in _rows(DATA / f"signals_{split}" / "pairs.jsonl")}


@pytest.mark.parametrize("split", sorted(LATER))
def test_the_split_is_large_enough_and_well_formed(split):
    d = DATA / f"signals_{split}"
    msgs, pairs = _rows(d / "messages.jsonl"), _rows(d / "pairs.jsonl")
    assert len(msgs) >= LATER[split][0] and len(pairs) >= LATER[split][1]
    assert_well_formed(msgs, pairs)
    assert len({_norm(r["text"]) for r in msgs}) == len(msgs)


@pytest.mark.parametrize("split", sorted(LATER))
def test_the_split_shares_no_message_or_pair_with_the_earlier_splits(split):
    for earlier in LATER[split][2]:
        assert not _messages(split) & _messages(earlier), earlier
        assert not _pairs(split) & _pairs(earlier), earlier


@pytest.mark.parametrize("split", sorted(LATER))
def test_the_splits_messages_are_training_data_with_the_same_labels(split):
    """Every message is in both training sets, labelled as in the split (so the benchmark's
    leave-one-split-out rotation has rows to drop)."""
    sent = {_norm(r["text"]): r["label"] for r in _rows(SHIPPED / "sentiment_train.jsonl")}
    intent = {_norm(r["text"]): r["label"] for r in _rows(SHIPPED / "intent_litigation.jsonl")}
    for r in _rows(DATA / f"signals_{split}" / "messages.jsonl"):
        key = _norm(r["text"])
        assert sent.get(key) == r["sentiment"], r["text"]
        assert intent.get(key) == r["mentions"]["litigation"], r["text"]
