"""Seeded synthetic Walmart-like sales: the default source of salesflow, tests and demos.

Stores (with a static type and size) x departments, weekly (``W-FRI``) or daily. Every
random draw comes from its own child of ``SeedSequence(cfg.seed)``, and each generator makes
at most one period-shaped draw laid out as ``[period, unit]``: the same seed gives identical
frames, and ``future_periods`` never changes the history. Everything is vectorised over
series; the only Python loops run over periods (AR noise) or the handful of covariates.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from features.calendar import easter, holiday_dates, is_holiday_period, period_end
from salesflow.config.settings import DriftInjection, SyntheticSection
from salesflow.data.canonical import WALMART_COVARIATES, WALMART_KEYS, WALMART_STATIC
from salesflow.data.schema import DATE, HOLIDAY, ID, TARGET, SalesData, make_unique_id

_STREAMS = (
    "stores",
    "series",
    "temperature",
    "fuel_price",
    "markdown",
    "cpi",
    "unemployment",
    "noise",
    "ragged",
    "returns",
)
# Mean markdown per store (dollars) once markdowns start; markdown3 is a holiday clearance.
_MARKDOWN_MEAN = {
    "markdown1": 6000.0,
    "markdown2": 2500.0,
    "markdown3": 300.0,
    "markdown4": 2500.0,
    "markdown5": 4000.0,
}
_MARKDOWN_START = 0.6  # share of the history without markdowns (Walmart: until Nov 2011)
_RETURN_SHARE = 0.003
_MIN_OBS = 20


def generate_sales(cfg: SyntheticSection, future_periods: int = 52) -> SalesData:
    """A synthetic panel of ``cfg.n_stores`` x ``cfg.n_depts`` series.

    Columns out (history): ``unique_id, store, dept, ds, y, is_holiday, temperature,
    fuel_price, markdown1..markdown5, cpi, unemployment, store_type, store_size``; future:
    the same without ``y``, ``future_periods`` periods after the last history date.
    With ``cfg.parts`` = k > 1 the panel is the k parts of :func:`generate_part` (whole
    stores each), concatenated and sorted by ``unique_id``, ``ds``.
    """
    if cfg.parts == 1:
        return _generate(cfg, np.random.SeedSequence(cfg.seed), 1, cfg.n_stores, future_periods)
    parts = [generate_part(cfg, i, future_periods) for i in range(cfg.parts)]

    def joined(frames: list[pd.DataFrame]) -> pd.DataFrame:
        out = pd.concat(frames, ignore_index=True)
        return out.sort_values([ID, DATE], kind="stable").reset_index(drop=True)

    return replace(
        parts[0],
        history=joined([p.history for p in parts]),
        future=joined([p.future for p in parts]),
    )


def part_stores(n_stores: int, parts: int, part: int) -> range:
    """The store numbers of ``part`` (0-based) of ``parts``: contiguous, sizes within 1."""
    if not 0 <= part < parts <= n_stores:
        raise ValueError(f"part {part} of {parts} does not fit {n_stores} stores")
    edges = [n_stores * i // parts for i in range(parts + 1)]
    return range(edges[part] + 1, edges[part + 1] + 1)


def generate_part(cfg: SyntheticSection, part: int, future_periods: int = 52) -> SalesData:
    """Part ``part`` (0-based) of ``cfg.parts``: the stores of :func:`part_stores`, drawn
    from the part's own child of ``SeedSequence(cfg.seed)`` (no other part is generated).
    With one part: the whole panel of :func:`generate_sales`."""
    if cfg.parts == 1:
        return generate_sales(cfg, future_periods)
    stores = part_stores(cfg.n_stores, cfg.parts, part)
    seed = np.random.SeedSequence(cfg.seed).spawn(cfg.parts)[part]
    return _generate(cfg, seed, stores.start, len(stores), future_periods)


def _generate(
    cfg: SyntheticSection,
    seed: np.random.SeedSequence,
    first_store: int,
    n_stores: int,
    future_periods: int,
) -> SalesData:
    """Stores ``first_store`` .. ``first_store + n_stores - 1`` from the streams of ``seed``."""
    if future_periods < 0:
        raise ValueError(f"future_periods must be >= 0, got {future_periods}")
    rng = _streams(seed)
    n, t = cfg.periods, cfg.periods + future_periods
    dates = pd.date_range(pd.Timestamp(cfg.start), periods=t, freq=cfg.freq)
    holiday = is_holiday_period(dates, cfg.freq)
    stores = _stores(n_stores, rng["stores"], first_store)
    series = _series(stores, cfg.n_depts, rng["series"])
    cov = _covariates(dates, stores, holiday, cfg.periods, rng)
    y = _sales(dates, series, cov, holiday, cfg.freq, rng["noise"])
    y = _add_returns(y, rng["returns"])
    if cfg.drift is not None:
        cov, y = _inject_drift(cfg.drift, dates, stores, series, cov, y, cfg.periods, cfg.n_stores)
    first = _ragged_starts(len(series), n, cfg.ragged_share, rng["ragged"])
    return SalesData(
        history=_panel(series, dates, holiday, cov, y, range(0, n), first),
        future=_panel(series, dates, holiday, cov, None, range(n, t), first * 0),
        keys=list(WALMART_KEYS),
        covariates=list(WALMART_COVARIATES),
        static=list(WALMART_STATIC),
        freq=cfg.freq,
        source="synthetic",
    )


def _streams(seed: np.random.SeedSequence) -> dict[str, np.random.Generator]:
    """One independent generator per component, so adding a draw never shifts the others."""
    children = seed.spawn(len(_STREAMS))
    return {name: np.random.default_rng(c) for name, c in zip(_STREAMS, children, strict=True)}


def _stores(n: int, rng: np.random.Generator, first: int = 1) -> pd.DataFrame:
    """Columns out: ``store`` (first..first+n-1), ``store_type`` (A/B/C), ``store_size``."""
    kind = rng.choice(np.array(["A", "B", "C"]), size=n, p=[0.5, 0.38, 0.12])
    low = np.select([kind == "A", kind == "B"], [140_000, 35_000], 39_000)
    high = np.select([kind == "A", kind == "B"], [220_000, 140_000], 43_000)
    size = rng.uniform(low, high).astype(np.int64)
    return pd.DataFrame(
        {
            "store": np.arange(first, first + n),
            "store_type": kind.astype(object),
            "store_size": size,
        }
    )


def _series(stores: pd.DataFrame, n_depts: int, rng: np.random.Generator) -> pd.DataFrame:
    """One row per store x dept, sorted by unique_id, with the series' hidden parameters."""
    n_stores = len(stores)
    dept_scale = rng.lognormal(np.log(7000), 1.3, n_depts)
    spiky = rng.random(n_depts) < 0.3  # toys, electronics...: Thanksgiving/Christmas spikes
    frame = pd.DataFrame(
        {
            "store_idx": np.repeat(np.arange(n_stores), n_depts),
            "dept_idx": np.tile(np.arange(n_depts), n_stores),
        }
    )
    frame["store"] = stores["store"].to_numpy()[frame["store_idx"]]
    frame["dept"] = frame["dept_idx"] + 1
    for col in WALMART_STATIC:
        frame[col] = stores[col].to_numpy()[frame["store_idx"]]
    size = stores["store_size"].to_numpy()[frame["store_idx"]] / 150_000
    m = len(frame)
    frame["scale"] = dept_scale[frame["dept_idx"]] * size**0.8 * rng.lognormal(0, 0.35, m)
    # A department has one seasonal shape everywhere (garden peaks in spring in every
    # store), with some store-to-store variation, as in real retail data.
    dept_amp, dept_phase = rng.uniform(0.03, 0.15, n_depts), rng.uniform(0, 2 * np.pi, n_depts)
    frame["season_amp"] = dept_amp[frame["dept_idx"]] * rng.lognormal(0, 0.2, m)
    frame["season_phase"] = dept_phase[frame["dept_idx"]] + rng.normal(0, 0.3, m)
    frame["ramp"] = rng.uniform(0.05, 0.4, m) + 0.8 * spiky[frame["dept_idx"]]
    frame["uplift"] = rng.uniform(0.0, 0.1, m)
    frame["thanks_spike"] = spiky[frame["dept_idx"]] * rng.uniform(0.5, 2.0, m)
    frame["xmas_spike"] = spiky[frame["dept_idx"]] * rng.uniform(0.3, 1.5, m)
    frame["md_effect"] = rng.uniform(0.0, 0.08, m)
    frame["temp_effect"] = rng.normal(0.0, 0.03, m)
    frame["growth"] = rng.normal(0.01, 0.04, m)
    frame["noise_sd"] = rng.uniform(0.04, 0.15, m)
    # Candy, seasonal, grocery...: a lift in the Easter weekend's week and the one before
    # (Easter moves by up to five weeks, so "same week last year" misses it).
    eastery = rng.random(n_depts) < 0.3
    frame["easter_spike"] = eastery[frame["dept_idx"]] * rng.uniform(0.2, 0.8, m)
    frame[ID] = make_unique_id(frame, WALMART_KEYS)
    return frame.sort_values(ID, kind="stable").reset_index(drop=True)


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold ``x`` back into ``[lo, hi]`` like a random walk between two mirrors."""
    width = hi - lo
    return lo + width - np.abs(np.mod(x - lo, 2 * width) - width)


def _covariates(
    dates: pd.DatetimeIndex,
    stores: pd.DataFrame,
    holiday: np.ndarray,
    n_hist: int,
    rng: dict[str, np.random.Generator],
) -> dict[str, np.ndarray]:
    """Covariate name -> ``[period, store]`` float array."""
    t, s = len(dates), len(stores)
    years = ((dates - dates[0]).days / 365.25).to_numpy()[:, None]
    # Random-walk steps scale with the period length, so daily and weekly wander alike.
    step = np.sqrt((dates[1] - dates[0]).days / 7)  # periods >= 10, so dates[1] exists
    doy = dates.dayofyear.to_numpy()[:, None]
    r = rng["temperature"]
    mean, amp = r.uniform(40, 75, s), r.uniform(12, 28, s)
    temp = mean - amp * np.cos(2 * np.pi * (doy - 15) / 365.25) + r.normal(0, 5, (t, s))
    r_walk, r = rng["fuel_price"].spawn(2)
    offset = r.uniform(-0.1, 0.15, s)
    walk = 2.7 + 0.35 * years[:, 0] + np.cumsum(r_walk.normal(0, 0.05 * step, t))
    fuel = _reflect(walk, 2.55, 4.3)[:, None] + offset + r.normal(0, 0.02, (t, s))
    r = rng["cpi"]
    cpi = r.uniform(126, 210, s) * 1.02**years + np.cumsum(r.normal(0, 0.05 * step, (t, s)), 0)
    r = rng["unemployment"]
    unemp = r.uniform(4, 12, s) - 0.4 * years + np.cumsum(r.normal(0, 0.03 * step, (t, s)), 0)
    out = {
        "temperature": np.clip(temp, -10, 105),
        "fuel_price": np.clip(fuel, 2.45, 4.55),
        "cpi": cpi,
        "unemployment": np.clip(unemp, 3, 14),
    }
    out.update(_markdowns(t, stores, holiday, n_hist, rng["markdown"]))
    return {c: np.round(out[c], 3).astype(np.float64) for c in WALMART_COVARIATES}


def _markdowns(
    t: int, stores: pd.DataFrame, holiday: np.ndarray, n_hist: int, r: np.random.Generator
) -> dict[str, np.ndarray]:
    """Markdown name -> ``[period, store]``: rare before the start period, mostly on after."""
    s = len(stores)
    size = stores["store_size"].to_numpy() / 150_000
    on = (np.arange(t) >= int(_MARKDOWN_START * n_hist))[:, None]
    out = {}
    for (name, mean), child in zip(_MARKDOWN_MEAN.items(), r.spawn(5), strict=True):
        r_on, r_value = child.spawn(2)
        active = r_on.random((t, s)) < np.where(on, 0.85, 0.01)
        value = r_value.lognormal(np.log(mean) - 0.5, 1.0, (t, s)) * size
        if name in ("markdown2", "markdown3"):
            value = value * np.where(holiday[:, None], 10.0, 1.0)
        out[name] = np.where(active, value, 0.0)
    return out


def _spike_dates(dates: pd.DatetimeIndex, freq: str) -> tuple[np.ndarray, np.ndarray]:
    """Masks ``[period]``: Black Friday's period, the last shopping period before Christmas."""
    days = holiday_dates(range(dates[0].year - 1, dates[-1].year + 2))
    thanks = days.loc[days["holiday"] == "thanksgiving", "date"] + pd.Timedelta(days=1)
    xmas = days.loc[days["holiday"] == "christmas", "date"] - pd.Timedelta(days=2)
    return dates.isin(period_end(thanks, freq)), dates.isin(period_end(xmas, freq))


def _easter_weeks(dates: pd.DatetimeIndex, freq: str) -> np.ndarray:
    """``[period]``: 1 for the period with Easter Saturday, 0.5 for the one before, else 0."""
    sat = pd.DatetimeIndex([easter(y) for y in range(dates[0].year, dates[-1].year + 1)])
    labels = period_end(sat - pd.Timedelta(days=1), freq)
    step = dates[1] - dates[0] if len(dates) > 1 else pd.Timedelta(days=7)
    return np.where(dates.isin(labels), 1.0, np.where(dates.isin(labels - step), 0.5, 0.0))


def _december_ramp(dates: pd.DatetimeIndex) -> np.ndarray:
    """``[period]`` in 0..1: rises over the four weeks before 24 December, 0 otherwise."""
    eve = pd.to_datetime(pd.DataFrame({"year": dates.year, "month": 12, "day": 24}))
    to_go = (eve.to_numpy() - dates.to_numpy()) / np.timedelta64(1, "D")
    return np.where((to_go >= 0) & (to_go < 28), 1 - to_go / 28, 0.0)


def _sales(
    dates: pd.DatetimeIndex,
    series: pd.DataFrame,
    cov: dict[str, np.ndarray],
    holiday: np.ndarray,
    freq: str,
    rng: np.random.Generator,
) -> np.ndarray:
    """``[period, series]`` sales: scale x season x holidays x markdowns x trend x noise."""

    def p(col: str) -> np.ndarray:
        return series[col].to_numpy()[None, :]

    store = series["store_idx"].to_numpy()
    years = ((dates - dates[0]).days / 365.25).to_numpy()[:, None]
    phase = 2 * np.pi * dates.dayofyear.to_numpy()[:, None] / 365.25
    thanks, xmas = _spike_dates(dates, freq)
    md_total = np.sum([cov[f"markdown{i}"] for i in range(1, 6)], axis=0)[:, store]
    factor = (
        (1 + p("season_amp") * np.sin(phase + p("season_phase")))
        * (1 + p("ramp") * _december_ramp(dates)[:, None])
        * (1 + p("uplift") * holiday[:, None])
        * (1 + p("thanks_spike") * thanks[:, None] + p("xmas_spike") * xmas[:, None])
        * (1 + p("easter_spike") * _easter_weeks(dates, freq)[:, None])
        * (1 + p("md_effect") * np.log1p(md_total / 5000))
        * (1 + p("temp_effect") * (cov["temperature"][:, store] - 60) / 40)
        * np.exp(p("growth") * years)
    )
    return np.round(p("scale") * factor * np.exp(p("noise_sd") * _ar_noise(factor.shape, rng)), 2)


def _ar_noise(shape: tuple[int, ...], rng: np.random.Generator, phi: float = 0.5) -> np.ndarray:
    """Unit-variance AR(1) noise along axis 0 (periods)."""
    eps = rng.standard_normal(shape)
    out = np.empty(shape)
    out[0] = eps[0]
    for i in range(1, shape[0]):
        out[i] = phi * out[i - 1] + np.sqrt(1 - phi**2) * eps[i]
    return out


def _add_returns(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replace ~0.3% of the cells by small negative sales (returns exceeding purchases)."""
    r_hit, r_amount = rng.spawn(2)
    hit = r_hit.random(y.shape) < _RETURN_SHARE
    amount = np.round(r_amount.uniform(0.5, 100.0, y.shape), 2)
    return np.where(hit, -amount, y)


def _ragged_starts(n: int, periods: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """First observed period per series: 0, or later for ``share`` of them (>= 20 obs left)."""
    first = np.zeros(n, dtype=np.int64)
    latest = periods - _MIN_OBS
    k = int(round(share * n))
    if latest >= 1 and k > 0:
        late = rng.choice(n, size=k, replace=False)
        first[late] = rng.integers(1, latest + 1, size=k)
    return first


def _inject_drift(
    drift: DriftInjection,
    dates: pd.DatetimeIndex,
    stores: pd.DataFrame,
    series: pd.DataFrame,
    cov: dict[str, np.ndarray],
    y: np.ndarray,
    n_hist: int,
    n_stores: int,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """From ``drift.start`` on (in ``drift.stores`` of the panel's stores 1..n_stores):
    covariate += k * std, sales *= 1 + level."""
    unknown = sorted(set(drift.covariate_shift) - set(cov))
    if unknown:
        raise ValueError(
            f"drift.covariate_shift names unknown covariates {unknown}; use {list(cov)}"
        )
    ids = stores["store"].to_numpy()
    if drift.stores is None:
        chosen = np.ones(len(ids), dtype=bool)
    else:
        missing = sorted(set(drift.stores) - set(range(1, n_stores + 1)))
        if missing:
            raise ValueError(f"drift.stores {missing} do not exist; stores are 1..{n_stores}")
        chosen = np.isin(ids, drift.stores)
    hit = np.asarray(dates >= pd.Timestamp(drift.start))[:, None] & chosen[None, :]
    out = dict(cov)
    for col, k in drift.covariate_shift.items():
        out[col] = cov[col] + k * cov[col][:n_hist].std() * hit
    level = np.where(hit[:, series["store_idx"].to_numpy()], 1 + drift.level_shift, 1.0)
    return out, np.round(y * level, 2)


def _panel(
    series: pd.DataFrame,
    dates: pd.DatetimeIndex,
    holiday: np.ndarray,
    cov: dict[str, np.ndarray],
    y: np.ndarray | None,
    periods: range,
    first: np.ndarray,
) -> pd.DataFrame:
    """Long frame of ``periods`` for every series from its ``first`` period (no ``y`` if None)."""
    t = np.arange(periods.start, periods.stop)
    keep = (t[None, :] >= first[:, None]).ravel()
    row_s = np.repeat(np.arange(len(series)), len(t))[keep]
    row_t = np.tile(t, len(series))[keep]
    store = series["store_idx"].to_numpy()[row_s]
    cols: dict[str, object] = {ID: series[ID].to_numpy()[row_s]}
    for key in WALMART_KEYS:
        cols[key] = series[key].to_numpy(dtype=np.int64)[row_s]
    cols[DATE] = dates.to_numpy()[row_t]
    if y is not None:
        cols[TARGET] = y[row_t, row_s]
    cols[HOLIDAY] = holiday[row_t]
    for col in WALMART_COVARIATES:
        cols[col] = cov[col][row_t, store]
    for col in WALMART_STATIC:
        cols[col] = series[col].to_numpy()[row_s]
    return pd.DataFrame(cols)
