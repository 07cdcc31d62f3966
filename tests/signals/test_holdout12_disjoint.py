"""The untouched split (tests/data/signals_holdout12/), when present: well formed, and none of its
text in the shipped training data or in the tuned-on splits.

holdout12 is written outside this repository and added at the end, to be scored once by
benchmarks/signals_eval.py --split holdout12. Until then these tests skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.signals.test_holdout_disjoint import _norm, _rows, assert_well_formed

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SHIPPED = ROOT / "policyengine" / "signals" / "data"
H12 = DATA / "signals_holdout12"

pytestmark = pytest.mark.skipif(
    not ((H12 / "messages.jsonl").is_file() and (H12 / "pairs.jsonl").is_file()),
    reason="tests/data/signals_holdout12/ (messages.jsonl + pairs.jsonl) is not present: the untouched split is "
           "added at the end and scored once",
)


def test_holdout12_is_well_formed():
    assert_well_formed(_rows(H12 / "messages.jsonl"), _rows(H12 / "pairs.jsonl"))


def _messages(split: str) -> set[str]:
    return {_norm(r["text"]) for r in _rows(DATA / f"signals_{split}" / "messages.jsonl")}


def _pairs(split: str) -> set[tuple[str, str]]:
    return {tuple(sorted((_norm(r["a"]), _norm(r["b"])))) for r in _rows(DATA / f"signals_{split}" / "pairs.jsonl")}


def test_no_holdout12_text_is_in_the_shipped_training_data():
    # a labelled unit is a message, or a pair as a whole: a stock half such as "Your refund has been
    # approved" may recur in another pair without its label (divergent or not) being known
    h12 = _messages("holdout12")
    for path in sorted(SHIPPED.glob("*.jsonl")):
        shipped = {_norm(r["text"]) for r in _rows(path)}
        assert not h12 & shipped, (path.name, sorted(h12 & shipped)[:5])


def test_holdout12_shares_no_message_or_pair_with_the_tuned_on_splits():
    for split in ("tune", "holdout", "holdout2", "holdout3", "holdout4", "holdout5", "holdout6", "holdout7", "holdout8", "holdout9", "holdout10", "holdout11"):
        assert not _messages("holdout12") & _messages(split), split
        assert not _pairs("holdout12") & _pairs(split), split
