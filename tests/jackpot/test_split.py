"""Property tests of the bet split: no cent is created or destroyed."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jackpot.ledger import capped, split_bet
from jackpot.models import BP_SCALE, GROUPS

rates = st.lists(st.integers(0, BP_SCALE), min_size=3, max_size=3).filter(
    lambda r: sum(r) <= BP_SCALE
)


@given(bet=st.integers(1, 10**15), rate_list=rates)
def test_split_conserves_every_cent(bet, rate_list):
    split = split_bet(bet, dict(zip(GROUPS, rate_list, strict=True)))
    assert sum(split.parts.values()) + split.remainder == bet
    assert split.remainder >= 0
    for group, rate in zip(GROUPS, rate_list, strict=True):
        assert split.parts[group] == bet * rate // BP_SCALE  # floor, exact integer arithmetic
        assert 0 <= split.parts[group] * BP_SCALE <= bet * rate  # never above the exact share


@given(bet=st.integers(1, 10**15), rate_list=rates)
def test_remainder_is_at_least_the_unallocated_share(bet, rate_list):
    split = split_bet(bet, dict(zip(GROUPS, rate_list, strict=True)))
    # The house gets its own share plus less than one cent of rounding per pool.
    unallocated = bet * (BP_SCALE - sum(rate_list))
    assert unallocated <= split.remainder * BP_SCALE < unallocated + len(GROUPS) * BP_SCALE


def test_rates_above_a_whole_bet_are_refused():
    with pytest.raises(ValueError):
        split_bet(100, {"minor": 5000, "major": 5000, "mega": 1})


@given(
    amount=st.integers(0, 10**12),
    part=st.integers(0, 10**12),
    cap=st.none() | st.integers(0, 10**12),
)
def test_cap_never_creates_money(amount, part, cap):
    credited = capped(amount, part, cap)
    assert 0 <= credited <= part
    if cap is not None and amount <= cap:
        assert amount + credited <= cap
    if cap is None or amount + part <= cap:
        assert credited == part
