"""The promotion and rollback policy: tables of cases, and properties that must always hold."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from salesflow.config.settings import PolicySection
from salesflow.governance.policy import Scorecard, decide, decide_rollback

POLICY = PolicySection()  # 2% improvement, beat seasonal naive, |bias| <= 10% of mean |actual|


def card(
    wmae: float,
    version: str = "2",
    naive: float = 2_000.0,
    bias: float = 10.0,
    mean_abs: float = 15_000.0,
    n: int = 1_000,
) -> Scorecard:
    return Scorecard(version, wmae, naive, bias, mean_abs, n)


CHAMPION = card(1_541.9, version="1")

DECIDE_CASES = [
    # (id, challenger, champion, policy, action, words in the reason)
    ("better by enough", card(1_480.0), CHAMPION, POLICY, "promote", ["4.0% better", "2.0%"]),
    (
        "better but below the margin",
        card(1_523.4),
        CHAMPION,
        POLICY,
        "reject",
        ["challenger WMAE 1,523.4 is 1.2% better than champion 1,541.9; 2.0% required"],
    ),
    ("worse", card(1_600.0), CHAMPION, POLICY, "reject", ["3.8% worse", "2.0%"]),
    ("equal", card(1_541.9), CHAMPION, POLICY, "reject", ["equals champion"]),
    (
        "equal with no margin required",
        card(1_541.9),
        CHAMPION,
        POLICY.model_copy(update={"min_improvement": 0.0}),
        "reject",
        ["equals champion"],
    ),
    (
        "exactly the margin",
        card(1_000.0 * 0.98),
        card(1_000.0, version="1"),
        POLICY,
        "promote",
        ["2.0% better"],
    ),
    (
        "fails seasonal naive",
        card(1_480.0, naive=1_450.0),
        CHAMPION,
        POLICY,
        "reject",
        ["does not beat seasonal naive 1,450.0", "n=1,000"],
    ),
    (
        "ties seasonal naive",
        card(1_480.0, naive=1_480.0),
        CHAMPION,
        POLICY,
        "reject",
        ["seasonal naive"],
    ),
    (
        "seasonal naive not required",
        card(1_480.0, naive=1_450.0),
        CHAMPION,
        POLICY.model_copy(update={"must_beat_seasonal_naive": False}),
        "promote",
        ["better than champion"],
    ),
    (
        "too biased",
        card(1_480.0, bias=-1_600.0),
        CHAMPION,
        POLICY,
        "reject",
        ["|bias| 1,600.0 exceeds 10.0% of mean |actual| 15,000.0 (limit 1,500.0)"],
    ),
    ("bias at the limit", card(1_480.0, bias=1_500.0), CHAMPION, POLICY, "promote", []),
    ("no champion, good", card(1_480.0), None, POLICY, "promote", ["no champion yet"]),
    (
        "no champion, worse than seasonal naive",
        card(2_100.0),
        None,
        POLICY,
        "reject",
        ["does not beat seasonal naive 2,000.0"],
    ),
    ("no champion, biased", card(1_480.0, bias=2_000.0), None, POLICY, "reject", ["|bias|"]),
    ("NaN WMAE", card(math.nan), CHAMPION, POLICY, "reject", ["wmae is nan"]),
    ("inf bias", card(1_480.0, bias=math.inf), None, POLICY, "reject", ["bias is inf"]),
    (
        "NaN seasonal naive",
        card(1_480.0, naive=math.nan),
        CHAMPION,
        POLICY,
        "reject",
        ["seasonal_naive_wmae is nan"],
    ),
    (
        "NaN champion",
        card(1_480.0),
        card(math.nan, version="1"),
        POLICY,
        "reject",
        ["champion scorecard is invalid"],
    ),
    ("nothing scored", card(1_480.0, n=0), None, POLICY, "reject", ["n=0"]),
    (
        "champion WMAE zero",
        card(0.0),
        card(0.0, version="1"),
        POLICY,
        "reject",
        ["no challenger can improve"],
    ),
    (
        "close figures keep enough decimals",
        card(1_000.0 * (1 - 0.01996)),
        card(1_000.0, version="1"),
        POLICY,
        "reject",
        ["1.996% better", "2.000% required"],
    ),
]


@pytest.mark.parametrize(
    ("challenger", "champion", "policy", "action", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in DECIDE_CASES],
)
def test_decide(challenger, champion, policy, action, words):
    """decide() promotes or rejects as the policy says, with the figures in the reason."""
    d = decide(challenger, champion, policy)
    assert d.action == action, d.reason
    assert d.promote is (action == "promote")
    for w in words:
        assert w in d.reason
    assert d.challenger is challenger and d.champion is champion


def test_decide_reports_the_improvement():
    """improvement = 1 - challenger/champion WMAE; None without a champion."""
    assert decide(card(1_400.0), card(1_600.0), POLICY).improvement == pytest.approx(0.125)
    assert decide(card(1_400.0), None, POLICY).improvement is None


def test_decide_rejects_scorecards_of_different_holdouts():
    """Scorecards of different sizes were not scored on the same holdout: ValueError."""
    with pytest.raises(ValueError, match="same holdout"):
        decide(card(1_400.0, n=900), card(1_500.0, n=1_000), POLICY)


FINITE = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)


@given(
    champ_wmae=FINITE,
    extra=FINITE,
    naive=FINITE,
    bias=st.floats(min_value=-1e9, max_value=1e9),
    mean_abs=FINITE,
    min_improvement=st.floats(min_value=0.0, max_value=0.99),
    must_beat=st.booleans(),
)
def test_a_worse_challenger_is_never_promoted(
    champ_wmae, extra, naive, bias, mean_abs, min_improvement, must_beat
):
    """For any figures with challenger WMAE >= champion WMAE, decide() never promotes."""
    policy = PolicySection(min_improvement=min_improvement, must_beat_seasonal_naive=must_beat)
    challenger = card(champ_wmae + extra, naive=naive, bias=bias, mean_abs=mean_abs)
    champion = card(champ_wmae, version="1", naive=naive, mean_abs=mean_abs)
    assert decide(challenger, champion, policy).action == "reject"


@given(
    wmae=st.floats(allow_nan=True, allow_infinity=True),
    naive=st.floats(allow_nan=True, allow_infinity=True),
)
def test_unusable_figures_are_never_promoted(wmae, naive):
    """A challenger whose WMAE or seasonal naive is NaN or infinite is rejected."""
    if math.isfinite(wmae) and math.isfinite(naive):
        return
    assert decide(card(wmae, naive=naive), None, POLICY).action == "reject"


ROLLBACK_CASES = [
    # (id, current realized, current backtest, previous, previous realized, rollback?, words)
    ("worse than previous", 1_700.0, 1_500.0, "1", 1_500.0, True, ["13.3% above", "10.0%"]),
    ("within tolerance", 1_640.0, 1_500.0, "1", 1_500.0, False, ["within 10.0%"]),
    ("far above backtest", 3_100.0, 1_500.0, "1", None, True, ["2.07x", "limit 2.00x"]),
    ("above backtest, previous unknown but fine", 2_900.0, 1_500.0, "1", None, False, ["1.93x"]),
    ("both triggers", 3_400.0, 1_500.0, "1", 1_500.0, True, ["above previous", "2.27x"]),
    ("no previous", 9_999.0, 1_500.0, None, None, False, ["no previous version", "'previous'"]),
    ("previous is the champion", 9_999.0, 1_500.0, "2", 1_500.0, False, ["champion itself"]),
    ("NaN realized", math.nan, 1_500.0, "1", 1_500.0, False, ["cannot judge"]),
    ("NaN previous realized", 1_900.0, 1_500.0, "1", math.nan, False, ["1.27x"]),
    ("nothing to compare", 1_900.0, math.nan, "1", None, False, ["nothing to compare"]),
]


@pytest.mark.parametrize(
    ("real", "backtest", "prev", "prev_real", "expected", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in ROLLBACK_CASES],
)
def test_decide_rollback(real, backtest, prev, prev_real, expected, words):
    """decide_rollback() rolls back only to a known previous version, on the policy's triggers."""
    d = decide_rollback("2", real, backtest, prev, prev_real, POLICY)
    assert d.rollback is expected, d.reason
    assert d.current_version == "2"
    assert d.target_version == (prev if expected else None)
    for w in words:
        assert w in d.reason


@given(
    real=st.floats(allow_nan=True, allow_infinity=True),
    backtest=st.floats(allow_nan=True, allow_infinity=True),
)
def test_no_previous_never_rolls_back(real, backtest):
    """Without a previous version decide_rollback() never rolls back, whatever the figures."""
    assert not decide_rollback("2", real, backtest, None, None, POLICY).rollback


FIRST_CASES = [
    # (id, the model's backtest card, policy, action, words in the reason)
    (
        "loses to seasonal naive on its own backtest",
        card(2_082.0, naive=2_000.0),
        POLICY,
        "reject",
        ["model WMAE 2,082.0 does not beat seasonal naive 2,000.0 on its own backtest"],
    ),
    (
        "ties seasonal naive",
        card(2_000.0, naive=2_000.0),
        POLICY,
        "reject",
        ["does not beat seasonal naive"],
    ),
    (
        "naive guardrail off",
        card(2_082.0, naive=2_000.0),
        PolicySection(must_beat_seasonal_naive=False),
        "promote",
        ["first champion", "ratio 1.041"],
    ),
    ("biased", card(1_500.0, bias=2_000.0), POLICY, "reject", ["|bias| 2,000.0 exceeds 10.0%"]),
    ("no rows", card(1_500.0, n=0), POLICY, "reject", ["n=0"]),
    ("nan", card(math.nan), POLICY, "reject", ["wmae is nan"]),
    ("beats naive", card(1_740.0), POLICY, "promote", ["first champion", "ratio 0.870"]),
]


@pytest.mark.parametrize(
    "model_card,policy,action,words", [c[1:] for c in FIRST_CASES], ids=[c[0] for c in FIRST_CASES]
)
def test_first_champion_is_judged_on_its_own_backtest(model_card, policy, action, words):
    """A first champion must pass the guardrails on its backtest; the reason has figures."""
    from salesflow.governance.policy import decide_first_champion

    d = decide_first_champion(model_card, policy)
    assert d.action == action and d.champion is None
    for w in words:
        assert w in d.reason, d.reason
