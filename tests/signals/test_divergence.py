"""Divergence: cosine plus the checks it misses; calibrated so 0.25 is a sensible line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policyengine.signals import DivergenceResult, DivergenceScorer

DATA = Path(__file__).resolve().parents[1] / "data"


def test_approved_vs_not_approved_diverges_although_cosine_is_high(scorer):
    r = scorer.score("The refund has been approved.", "The refund has not been approved.")
    assert r.cosine > 0.85  # what cosine alone sees
    assert not r.aligned and r.divergence > 0.5
    assert r.reasons == ["polarity: approved vs not approved"]
    assert r.conflicts == ["polarity"]


def test_fifty_vs_five_hundred_pounds(scorer):
    r = scorer.score("We will refund £50.", "We will refund £500.")
    assert r.cosine > 0.95
    assert not r.aligned
    assert r.reasons == ["amounts differ: £50 vs £500"]


def test_refusal_vs_compliance(scorer):
    r = scorer.score("I'm sorry, but I can't give medical advice.", "Take 400mg of ibuprofen every 4 hours.")
    assert not r.aligned and "refusal" in r.conflicts


def test_paraphrase_is_aligned(scorer):
    r = scorer.score(
        "Your refund has been approved and should reach your account within 3-5 working days.",
        "Good news: we've approved your refund. Expect the money in three to five business days.",
    )
    assert r.aligned and r.divergence <= 0.25 and r.reasons == []


def test_same_amount_in_other_words_is_aligned(scorer):
    assert scorer.score("The total is £50.", "The total comes to 50 GBP.").aligned


def test_unrelated_answers_diverge_on_meaning(scorer):
    r = scorer.score("Your parcel was delivered to your neighbour.", "Our stores open at 9am on weekdays.")
    assert not r.aligned and any("cosine" in x for x in r.reasons)


def test_threshold_parameter_and_validation(embedder):
    s = DivergenceScorer(embedder, threshold=0.9, pair_model=None)  # the rule score against its threshold
    assert s.score("The refund has been approved.", "The refund has not been approved.").aligned  # 0.85 <= 0.9
    assert not s.score("a", "b", threshold=0.0).aligned
    with pytest.raises(ValueError, match="threshold"):
        DivergenceScorer(embedder, threshold=1.5)
    with pytest.raises(ValueError, match="threshold"):
        s.score("a", "b", threshold=-1)
    with pytest.raises(TypeError):
        s.score("a", None)  # type: ignore[arg-type]


def test_empty_answers(scorer):
    assert scorer.score("", "  ").aligned
    r = scorer.score("", "Yes, approved.")
    assert not r.aligned and r.divergence == 1.0


def test_result_is_pydantic_and_bounded(scorer):
    r = scorer.score("Yes.", "No.")
    assert isinstance(r, DivergenceResult)
    assert 0.0 <= r.divergence <= 1.0 and -1.0 <= r.cosine <= 1.0
    assert DivergenceResult.model_validate_json(r.model_dump_json()) == r


async def test_ascore_matches_score(scorer):
    a, b = "Your flight departs at 7am.", "Your flight departs at 7pm."
    assert (await scorer.ascore(a, b)) == scorer.score(a, b)


def test_labelled_pairs_meet_the_target(scorer):
    """Quality gate on the shipped set (the benchmark prints the full report)."""
    rows = [json.loads(x) for x in (DATA / "divergence_pairs.jsonl").read_text().splitlines() if x.strip()]
    assert len(rows) >= 150
    truth = np.array([r["divergent"] for r in rows])
    pred = np.array([not scorer.score(r["a"], r["b"]).aligned for r in rows])
    bacc = ((pred & truth).sum() / truth.sum() + (~pred & ~truth).sum() / (~truth).sum()) / 2
    assert bacc >= 0.90


def test_long_answers_are_compared_beyond_the_model_window(scorer):
    from policyengine.signals.divergence import _chunks

    intro = "Thank you for contacting us about your order and for your patience while we looked into it. " * 12
    a = intro + "In summary, the parcel was delivered to your neighbour at number 12 on Tuesday afternoon."
    b = intro + "Unfortunately our investigation shows the parcel was lost in the depot and will be replaced."
    assert len(_chunks(a)) > 1 and all(len(c.split()) <= 150 for c in _chunks(a))
    same = scorer.score(a, a)
    diff = scorer.score(a, b)
    assert same.cosine > 0.999
    assert diff.cosine < same.cosine - 0.01  # the differing ending is seen, not truncated away


def test_reported_prefix_antonym_diverges(scorer):
    r = scorer.score("The clause is enforceable; pay £200.", "The clause is unenforceable.")
    assert not r.aligned and r.divergence > 0.25  # was 0.18 (aligned) before the prefix check
    assert "prefix antonym: enforceable vs unenforceable" in r.reasons


@pytest.mark.parametrize(
    ("a", "b"),
    [("The contract is valid.", "The contract is invalid."),
     ("Selling it here is legal.", "Selling it here is illegal."),
     ("You are eligible for the grant.", "You are ineligible for the grant."),
     ("The product is compliant with the regulation.", "The product is non-compliant with the regulation."),
     ("Your claim was approved.", "Your claim was disapproved."),
     ("The damage is covered by your policy.", "The damage is not covered by your policy."),
     ("The ruling was regular.", "The ruling was irregular."),
     ("The agreement is binding.", "The agreement is non-binding."),
     ("The results are conclusive.", "The results are inconclusive.")],
)
def test_antonyms_by_prefix_diverge(scorer, a, b):
    assert not scorer.score(a, b).aligned
    assert not scorer.score(b, a).aligned


@pytest.mark.parametrize(
    ("a", "b"),
    [("The clause is enforceable.", "The clause is not unenforceable."),  # double negation agrees
     ("The leak was discovered at the inspection and the repair is covered.",
      "The repair is covered; the leak was discovered at the inspection."),
     ("The details were disclosed last week and the case is closed.",
      "The case is closed and the details were disclosed last week."),
     ("The contract is enforceable and the side letter is unenforceable.",
      "The side letter is unenforceable but the contract is enforceable."),
     ("It is a valuable ring; the insurer called it invaluable.",
      "The insurer said the ring is invaluable, a valuable piece.")],
)
def test_prefix_look_alikes_stay_aligned(scorer, a, b):
    r = scorer.score(a, b)
    assert r.aligned, r.reasons
    assert not any(x.startswith("prefix antonym") for x in r.reasons)


def test_prefix_stem_needs_a_negating_prefix_a_real_stem_and_an_adjective_ending():
    from policyengine.signals.checks import prefix_stem

    assert prefix_stem("unenforceable", {"enforceable"}) == "enforceable"
    assert prefix_stem("non-compliant", {"compliant"}) == "compliant"
    assert prefix_stem("illegal", {"legal"}) == "legal"
    assert prefix_stem("information", {"formation"}) is None  # noun, not an adjective
    assert prefix_stem("discovered", {"covered"}) is None  # denylisted: not the opposite
    assert prefix_stem("invaluable", {"valuable"}) is None
    assert prefix_stem("imlegal", {"legal"}) is None  # im- only before b/m/p
    assert prefix_stem("unenforceable", {"valid"}) is None  # stem must be in the other answer
