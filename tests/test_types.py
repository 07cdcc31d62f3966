"""The shared money reader used by the language, the runtime and replay."""

from __future__ import annotations

from decimal import Decimal

import pytest

from policyengine.dsl.compiler import as_money
from policyengine.types import Money, parse_money


@pytest.mark.parametrize("value", ["150 GBP", "GBP 150", "150gbp", " 1,150.50 GBP ",
                                   {"amount": 150, "currency": "gbp"}])
def test_every_money_form_reads_the_same_way(value) -> None:
    amount, currency = parse_money(value)
    assert currency == "GBP" and amount in (Decimal(150), Decimal("1150.50"))
    assert as_money(value) == parse_money(value)  # the evaluator uses this very reader


@pytest.mark.parametrize("value", ["150", "GBP", "one hundred GBP", {"amount": 1}, 150, None])
def test_non_money_is_refused_with_a_clear_error(value) -> None:
    assert parse_money(value) is None
    with pytest.raises(ValueError, match="not a money value"):
        Money.parse(value)


def test_money_round_trip() -> None:
    m = Money.parse("150 gbp")
    assert (m.amount, m.currency, str(m)) == (Decimal(150), "GBP", "150 GBP")
    assert Money.parse(m) is m
