"""The issue #16 labelled set: its size and its split.

The first holdout (signals_holdout/) was scored once and its misses were read, so it is now
tuning data and its rows are in the shipped training data; so are signals_holdout2/,
signals_holdout3/ to 11/ (tests/signals/test_holdout2_disjoint.py,
test_later_holdouts.py). The untouched split is signals_holdout12/, added at the end
(tests/signals/test_holdout12_disjoint.py checks it is in no training data).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SHIPPED = ROOT / "policyengine" / "signals" / "data"


def _norm(text: str) -> str:
    """Lower case, letters and digits only, single spaces: what a copy with other punctuation keeps."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower().replace("\u2019", "'")).split())


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text("utf-8").splitlines() if x.strip()]


def _texts(split: str) -> set[str]:
    msgs = {_norm(r["text"]) for r in _rows(DATA / f"signals_{split}" / "messages.jsonl")}
    pairs = {_norm(r[k]) for r in _rows(DATA / f"signals_{split}" / "pairs.jsonl") for k in ("a", "b")}
    return msgs | pairs


def test_the_set_is_large_enough_and_split_about_60_40():
    tune_m, hold_m = (_rows(DATA / f"signals_{s}" / "messages.jsonl") for s in ("tune", "holdout"))
    tune_p, hold_p = (_rows(DATA / f"signals_{s}" / "pairs.jsonl") for s in ("tune", "holdout"))
    assert len(tune_m) + len(hold_m) >= 600
    assert len(tune_p) + len(hold_p) >= 400
    assert 0.35 <= len(hold_m) / (len(tune_m) + len(hold_m)) <= 0.45
    assert 0.35 <= len(hold_p) / (len(tune_p) + len(hold_p)) <= 0.45
    for r in tune_m + hold_m:
        assert r["sentiment"] in ("negative", "neutral", "positive")
        assert isinstance(r["mentions"]["litigation"], bool)
    assert {r["domain"] for r in tune_m + hold_m} >= {"retail", "banking", "telecom", "travel", "saas", "utilities",
                                                       "healthcare_billing"}


def test_tune_and_holdout_share_no_message():
    tune = {_norm(r["text"]) for r in _rows(DATA / "signals_tune" / "messages.jsonl")}
    hold = {_norm(r["text"]) for r in _rows(DATA / "signals_holdout" / "messages.jsonl")}
    assert not tune & hold


def test_the_tuning_splits_are_the_shipped_training_data():
    """Both tuning splits' messages are in the sentiment and intent training data (so the
    benchmark cross-validates on them rather than scoring them in-sample), except the few
    that the older evaluation sets (tests/data/sentiment.jsonl, litigation.jsonl) also hold."""
    tuning = {_norm(r["text"]) for s in ("tune", "holdout") for r in _rows(DATA / f"signals_{s}" / "messages.jsonl")}
    for name, older in (("sentiment_train.jsonl", "sentiment.jsonl"), ("intent_litigation.jsonl", "litigation.jsonl")):
        shipped = {_norm(r["text"]) for r in _rows(SHIPPED / name)}
        evaluation = {_norm(r["text"]) for r in _rows(DATA / older)}
        assert tuning - evaluation <= shipped, (name, len(tuning - evaluation - shipped))


def test_the_intent_topics_agree_with_the_language():
    from policyengine.ir import INTENT_LEXICONS
    from policyengine.signals.intent import INTENT_TOPICS

    assert set(INTENT_TOPICS) == set(INTENT_LEXICONS)
    for topic in INTENT_TOPICS:
        assert (SHIPPED / f"intent_{topic}.jsonl").is_file()


def assert_well_formed(msgs: list[dict], pairs: list[dict]) -> None:
    """The labelled-split schema (tests/data/signals_README.md), shared by the holdout tests."""
    assert msgs and pairs
    for r in msgs:
        assert r["text"].strip()
        assert r["sentiment"] in ("negative", "neutral", "positive")
        assert isinstance(r["mentions"]["litigation"], bool)
    for r in pairs:
        assert isinstance(r["divergent"], bool) and r["a"].strip() and r["b"].strip()
