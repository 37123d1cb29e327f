"""The promotion and rollback policy: pure decisions, no I/O, no MLflow.

:func:`decide` says whether a challenger replaces the champion, :func:`decide_rollback`
whether the champion goes back to the previous version. Both return a frozen dataclass
whose ``reason`` is a sentence with the figures, fit for an audit row or a log line; the
flows carry the decision out (:mod:`salesflow.lifecycle`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

from salesflow.config.settings import PolicySection


@dataclass(frozen=True)
class Scorecard:
    """A model version's figures on one holdout.

    ``bias`` is mean(forecast - actual); ``seasonal_naive_wmae`` is the seasonal naive
    forecast's WMAE on the same rows; ``mean_abs_actual`` is mean |actual|; ``n`` the rows.
    """

    version: str
    wmae: float
    seasonal_naive_wmae: float
    bias: float
    mean_abs_actual: float
    n: int


@dataclass(frozen=True)
class Decision:
    """Promote or reject a challenger; ``improvement`` = 1 - challenger/champion WMAE."""

    action: Literal["promote", "reject"]
    reason: str
    challenger: Scorecard
    champion: Scorecard | None
    improvement: float | None

    @property
    def promote(self) -> bool:
        return self.action == "promote"


@dataclass(frozen=True)
class RollbackDecision:
    """Whether to point the champion alias back at ``target_version``, and why."""

    rollback: bool
    reason: str
    current_version: str
    target_version: str | None


# --- formatting ---------------------------------------------------------------------------


def _num(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def _pair(a: float, b: float, pct: bool = False) -> tuple[str, str]:
    """``a`` and ``b`` rounded to the fewest decimals (1 to 4) that still tell them apart."""
    fmt = (lambda x, d: f"{x:.{d}%}") if pct else _num
    for digits in range(1, 5):
        sa, sb = fmt(a, digits), fmt(b, digits)
        if sa != sb or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            break
    return sa, sb


# --- promotion ----------------------------------------------------------------------------


def _invalid(card: Scorecard, role: str) -> str | None:
    """Why ``card`` cannot be judged, or None when its figures are usable."""
    if card.n <= 0:
        return f"{role} scorecard has n={card.n} holdout rows: nothing was scored"
    for f in fields(card):
        value = getattr(card, f.name)
        if f.name != "version" and not math.isfinite(value):
            return f"{role} scorecard is invalid: {f.name} is {value}; check the holdout scoring"
    for name in ("wmae", "seasonal_naive_wmae", "mean_abs_actual"):
        if (value := getattr(card, name)) < 0:
            return f"{role} scorecard is invalid: {name} is negative ({value})"
    return None


def _guardrail_failure(
    ch: Scorecard, policy: PolicySection, who: str = "challenger", where: str = "the same holdout"
) -> str | None:
    """Why the challenger fails an absolute guardrail, or None when it passes them all."""
    if policy.must_beat_seasonal_naive and not ch.wmae < ch.seasonal_naive_wmae:
        a, b = _pair(ch.wmae, ch.seasonal_naive_wmae)
        return f"{who} WMAE {a} does not beat seasonal naive {b} on {where} (n={ch.n:,})"
    limit = policy.max_abs_bias_share * ch.mean_abs_actual
    if abs(ch.bias) > limit:
        a, b = _pair(abs(ch.bias), limit)
        return (
            f"{who} |bias| {a} exceeds {policy.max_abs_bias_share:.1%} of mean |actual| "
            f"{_num(ch.mean_abs_actual)} (limit {b})"
        )
    return None


def _improvement(ch: Scorecard, champ: Scorecard) -> float | None:
    return 1.0 - ch.wmae / champ.wmae if champ.wmae > 0 else None


def _versus_champion(ch: Scorecard, champ: Scorecard, policy: PolicySection) -> Decision:
    need = policy.min_improvement
    imp = _improvement(ch, champ)
    a, b = _pair(ch.wmae, champ.wmae)
    if imp is None:
        return Decision(
            "reject", f"champion WMAE is {b}: no challenger can improve on it", ch, champ, None
        )
    # Strictly better as well as by the margin: with min_improvement 0 a tie keeps the
    # incumbent, and rounding of (1 - tiny) x wmae can never promote an equal challenger.
    better = ch.wmae < champ.wmae and ch.wmae <= (1.0 - need) * champ.wmae
    if ch.wmae == champ.wmae:
        reason = f"challenger WMAE {a} equals champion {b}; {need:.1%} improvement required"
    elif ch.wmae > champ.wmae:
        worse = _pair(-imp, 0.0, pct=True)[0]
        reason = (
            f"challenger WMAE {a} is {worse} worse than champion {b}; "
            f"{need:.1%} improvement required"
        )
    else:
        got, req = _pair(imp, need, pct=True)
        reason = f"challenger WMAE {a} is {got} better than champion {b}; {req} required"
    return Decision("promote" if better else "reject", reason, ch, champ, imp)


def decide(challenger: Scorecard, champion: Scorecard | None, policy: PolicySection) -> Decision:
    """Promote ``challenger`` or keep ``champion`` (None: there is none yet).

    In order: an unusable scorecard (NaN, inf, n <= 0, negative errors) is rejected; the
    challenger must beat seasonal naive on the holdout (when the policy asks) and keep
    |bias| <= ``max_abs_bias_share`` x mean |actual|; with no champion that suffices,
    otherwise its WMAE must be strictly below the champion's and at most
    (1 - ``min_improvement``) x the champion's. A worse or equal challenger is never promoted.
    Raises ``ValueError`` when the two were not scored on the same number of rows.
    """
    if champion is not None and champion.n != challenger.n:
        raise ValueError(
            f"challenger {challenger.version} was scored on {challenger.n} rows but champion "
            f"{champion.version} on {champion.n}: score both on the same holdout"
        )
    imp = None
    if champion is not None and _invalid(champion, "champion") is None:
        imp = _improvement(challenger, champion)
    if problem := _invalid(challenger, "challenger") or (
        champion and _invalid(champion, "champion")
    ):
        return Decision("reject", problem, challenger, champion, None)
    if failure := _guardrail_failure(challenger, policy):
        return Decision("reject", failure, challenger, champion, imp)
    if champion is None:
        ch = challenger
        a, b = _pair(ch.wmae, ch.seasonal_naive_wmae)
        limit = policy.max_abs_bias_share * ch.mean_abs_actual
        reason = (
            f"no champion yet; challenger WMAE {a} (seasonal naive {b}), "
            f"|bias| {_num(abs(ch.bias))} within the limit {_num(limit)}"
        )
        return Decision("promote", reason, challenger, None, None)
    return _versus_champion(challenger, champion, policy)


def decide_first_champion(backtest: Scorecard, policy: PolicySection) -> Decision:
    """Whether a model becomes the first champion, judged on its own backtest.

    The same guardrails as a challenger's (beat seasonal naive on the same rows when the
    policy asks, |bias| within ``max_abs_bias_share`` of mean |actual|); an unusable
    scorecard is rejected. There is no champion to beat.
    """
    where = "its own backtest"
    if problem := _invalid(backtest, "backtest"):
        return Decision("reject", problem, backtest, None, None)
    if failure := _guardrail_failure(backtest, policy, "model", where):
        return Decision("reject", failure, backtest, None, None)
    a, b = _pair(backtest.wmae, backtest.seasonal_naive_wmae)
    limit = policy.max_abs_bias_share * backtest.mean_abs_actual
    reason = (
        f"first champion: backtest WMAE {a} (seasonal naive {b}, ratio "
        f"{backtest.wmae / backtest.seasonal_naive_wmae:.3f}), |bias| "
        f"{_num(abs(backtest.bias))} within the limit {_num(limit)}"
        if backtest.seasonal_naive_wmae > 0
        else f"first champion: backtest WMAE {a}, |bias| within the limit {_num(limit)}"
    )
    return Decision("promote", reason, backtest, None, None)


# --- rollback -----------------------------------------------------------------------------


def _usable(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x >= 0


def decide_rollback(
    current_version: str,
    current_realized_wmae: float,
    current_backtest_wmae: float,
    previous_version: str | None,
    previous_realized_wmae: float | None,
    policy: PolicySection,
) -> RollbackDecision:
    """Roll the champion back to ``previous_version`` when its recent accuracy is bad.

    Rolls back when a previous version exists and either (a) the champion's realized WMAE
    is above (1 + ``rollback_tolerance``) x the previous version's realized WMAE on the
    same recent actuals (only when that is known), or (b) it is above
    ``rollback_max_wmae_vs_backtest`` x the champion's own backtest WMAE. Without a
    previous version, or with an unusable realized WMAE, it never rolls back.
    """
    cur, prev = current_version, previous_version

    def keep(reason: str) -> RollbackDecision:
        return RollbackDecision(False, reason, cur, None)

    if prev is None:
        return keep(
            f"no previous version (alias {policy.previous_alias!r} is unset): "
            f"nothing to roll back to; version {cur} stays champion"
        )
    if str(prev) == str(cur):
        return keep(f"the previous version is the champion itself (version {cur})")
    if not _usable(current_realized_wmae):
        return keep(
            f"champion version {cur} realized WMAE is {current_realized_wmae}: cannot judge"
        )
    real = current_realized_wmae
    hits, fine = [], []
    if _usable(previous_realized_wmae):
        assert previous_realized_wmae is not None
        tol = policy.rollback_tolerance
        a, b = _pair(real, previous_realized_wmae)
        if real > (1.0 + tol) * previous_realized_wmae:
            rel = real / previous_realized_wmae - 1.0 if previous_realized_wmae > 0 else math.inf
            hits.append(
                f"realized WMAE {a} is {rel:.1%} above previous version {prev}'s {b} on the "
                f"same recent actuals (tolerance {tol:.1%})"
            )
        else:
            fine.append(f"realized WMAE {a} is within {tol:.1%} of previous version {prev}'s {b}")
    if _usable(current_backtest_wmae) and current_backtest_wmae > 0:
        k, ratio = policy.rollback_max_wmae_vs_backtest, real / current_backtest_wmae
        text = f"{ratio:.2f}x its backtest WMAE {_num(current_backtest_wmae)} (limit {k:.2f}x)"
        if real > k * current_backtest_wmae:
            hits.append(f"realized WMAE {_num(real)} is {text}")
        else:
            fine.append(f"realized WMAE is {text}")
    if hits:
        return RollbackDecision(True, f"champion version {cur}: " + "; ".join(hits), cur, str(prev))
    if not fine:
        return keep(
            f"champion version {cur}: neither the previous version's realized WMAE nor a "
            "usable backtest WMAE is known, so there is nothing to compare against"
        )
    return keep(f"champion version {cur}: " + "; ".join(fine))
