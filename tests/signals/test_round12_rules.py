"""Round 12's divergence changes: a different amount, clock time, quantity or non-numeric
identifier decides the pair even when the answer-pair model reads the two answers as the same,
and a quantity grouped by spaces before its unit reads as one figure (holdout11's misses,
benchmarks/signals.md "Round 12")."""

from __future__ import annotations

import pytest

from policyengine.signals import DivergenceScorer
from policyengine.signals.checks import Conflict
from policyengine.signals.formats import canonical


class _SameModel:
    """A pair model that always reads the answers as the same (p = 0): the rules must decide."""

    def probability(self, a: str, b: str) -> float:
        return 0.0


@pytest.mark.parametrize(("a", "b"), [
    ("Your check-in opens at 3pm.", "Check-in starts at 13:00."),
    ("The annual premium is £486, or £40.50 a month.", "The annual premium is £486. Monthly it's £45.50."),
    ("All further correspondence should go to legal@keystone.example.", "Please write to lettings@keystone.example."),
])
def test_a_decisive_fact_is_never_overruled_by_the_pair_model(embedder, a, b):
    r = DivergenceScorer(embedder, pair_model=_SameModel()).score(a, b)  # type: ignore[arg-type]
    assert r.pair_probability == 0.0
    assert not r.aligned and r.divergence == r.rules, r.reasons


def test_a_bare_number_beside_a_number_word_is_left_to_the_blend(embedder):
    # "2 rooms" vs "two rooms": the identifier check sees a bare "2"; that alone decides nothing
    r = DivergenceScorer(embedder, pair_model=_SameModel()).score(  # type: ignore[arg-type]
        "Your order of 3 items will arrive in two separate parcels.", "Your three items are coming in 2 parcels.")
    assert r.aligned, r.reasons


def test_conflicts_are_not_decisive_unless_marked():
    assert not Conflict("wording", "different: 'send' vs 'email'", 0.7).decisive


@pytest.mark.parametrize(("text", "want"), [
    ("Your car is due for its 30 000 km service.", "Your car is due for its 30000 km service."),
    ("about 12 500 miles a year", "about 12500 miles a year"),
    ("Call 0800 123 456 today.", "Call 0800 123 456 today."),  # no unit: a telephone number stays
])
def test_a_quantity_grouped_by_spaces_before_its_unit_is_one_figure(text, want):
    assert canonical(text) == want


def test_the_same_mileage_in_two_groupings_does_not_diverge(embedder):
    r = DivergenceScorer(embedder, pair_model=None).score("Your car is due for its 30,000 km service.",
                                                         "Your car is due for its 30 000 km service.")
    assert r.aligned, r.reasons


class _DifferentModel:
    def probability(self, a: str, b: str) -> float:
        return 0.9


def test_a_wording_substitution_alone_leaves_the_call_to_the_pair_model(embedder):
    """The weakest rule: a swapped word may be a synonym the list lacks ("tech" / "technician")."""
    a, b = "We'll note the dishwasher noise for the technician's visit.", "We'll note the dishwasher noise for the tech's visit."
    same = DivergenceScorer(embedder, pair_model=_SameModel()).score(a, b)  # type: ignore[arg-type]
    different = DivergenceScorer(embedder, pair_model=_DifferentModel()).score(a, b)  # type: ignore[arg-type]
    assert "substitution:wording" in same.conflicts and same.rules == pytest.approx(0.5)
    assert same.aligned and not different.aligned
    # without a pair model the rules still flag it (0.5 > 0.25): a reviewer sees the swapped words
    assert not DivergenceScorer(embedder, pair_model=None).score(a, b).aligned


@pytest.mark.parametrize("text", ["Your refund is on its way.",
                                  "The customer can return the item within 30 days of delivery for a full refund."])
def test_identical_answers_never_diverge(embedder, text):
    """The pair model reads two identical answers as divergent (p 0.99: its near-identical training
    pairs mostly were), so identical answers (spacing aside) are left to the rules."""
    r = DivergenceScorer(embedder).score(text, "  " + text.replace(" ", "  ") + "\n")
    assert r.pair_probability is None and r.aligned and r.divergence == 0.0, r.reasons
