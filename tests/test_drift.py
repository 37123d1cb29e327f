"""Drift judgement (Evidently 0.7): windows, references, per-column tests and the overall rule."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from salesflow.config.settings import DriftInjection, DriftSection, SyntheticSection
from salesflow.data.synthetic import generate_sales
from salesflow.monitor import drift

PANEL = SyntheticSection(n_stores=6, n_depts=8, periods=143)
DATES = pd.date_range(PANEL.start, periods=PANEL.periods, freq=PANEL.freq)
TRAINED_UNTIL = DATES[-14]  # the champion saw all but the last 13 weeks
DRIFT_START = DATES[-13].date()
SHIFTED = ["cpi", "fuel_price", "temperature", "unemployment"]
UNSHIFTED = [f"markdown{i}" for i in range(1, 6)]


def _panel(drift_injection: DriftInjection | None = None):
    return generate_sales(PANEL.model_copy(update={"drift": drift_injection}), future_periods=0)


@pytest.fixture(scope="module")
def stable():
    return _panel()


@pytest.fixture(scope="module")
def shifted():
    return _panel(DriftInjection(start=DRIFT_START, covariate_shift=dict.fromkeys(SHIFTED, 2.0)))


@pytest.fixture(scope="module")
def stable_check(stable):
    return drift.feature_drift(stable, TRAINED_UNTIL, DriftSection())


@pytest.fixture(scope="module")
def shifted_check(shifted):
    return drift.feature_drift(shifted, TRAINED_UNTIL, DriftSection())


def _frames(n: int = 2000, shift: float = 1.0, moved: str = "ab", cols: str = "abcde"):
    """iid normal reference/current frames; the ``moved`` columns shift by ``shift`` std."""
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({c: rng.normal(size=n) for c in cols})
    cur = pd.DataFrame({c: rng.normal(size=n // 2) + (shift if c in moved else 0) for c in cols})
    return ref, cur


# --- feature drift on the synthetic panel -------------------------------------------------


def test_no_false_alarm_on_stable_data(stable_check):
    """Stable synthetic data with the default config raises no drift alarm."""
    result, _ = stable_check
    assert not result.detected
    assert result.n_drifted < DriftSection().min_drifted_columns
    assert {c.column for c in result.columns} == set(_panel().covariates)


def test_injected_shift_detected_on_exactly_the_shifted_columns(shifted_check):
    """A +2 std shift of four covariates drifts those four and nothing else."""
    result, _ = shifted_check
    assert result.detected
    assert sorted(result.drifted_columns) == SHIFTED


@pytest.mark.parametrize("column", UNSHIFTED)
def test_unshifted_columns_do_not_drift(shifted_check, column):
    """Markdowns, which started inside the reference window but were not shifted, stay put."""
    result, _ = shifted_check
    assert not next(c for c in result.columns if c.column == column).drifted


def test_naive_reference_flags_seasonality(stable):
    """A plain 52-week vs 13-week comparison calls stable seasonal temperature drifted."""
    ref = drift.window(stable, TRAINED_UNTIL, 52)
    cur = drift.window(stable, stable.last_date, 13)
    result, _ = drift.detect_drift(ref, cur, ["temperature"], DriftSection())
    assert result.drifted_columns == ["temperature"]


def test_seasonality_is_explained_by_the_seasonal_reference(stable_check):
    """Stable temperature differs from the recent weeks but not from the same weeks a year ago."""
    result, _ = stable_check
    temperature = next(c for c in result.columns if c.column == "temperature")
    assert temperature.scores[drift.RECENT] < 0.05 < temperature.scores[drift.SEASONAL]
    assert not temperature.drifted


def test_store_level_covariates_counted_once_per_store_and_week(stable_check):
    """Covariates repeated for each department count once per (store, week)."""
    result, _ = stable_check
    assert result.current_rows == PANEL.n_stores * 13


def test_high_threshold_makes_ks_detect(stable):
    """A p-value threshold of 0.999 flags (nearly) every column, so drift is detected."""
    result, _ = drift.feature_drift(stable, TRAINED_UNTIL, DriftSection(threshold=0.999))
    assert result.detected
    assert all(c.threshold == 0.999 for c in result.columns)


def test_reference_cut_before_the_current_window(stable):
    """A champion trained into the current window gets a reference that ends before it."""
    result, _ = drift.feature_drift(stable, stable.last_date, DriftSection())
    assert any("inside the current window" in n for n in result.notes)


def test_feature_columns_from_config_and_unknown_column(stable):
    """cfg.columns picks the columns; an unknown one is a ValueError naming it."""
    result, _ = drift.feature_drift(stable, TRAINED_UNTIL, DriftSection(columns=["cpi"]))
    assert [c.column for c in result.columns] == ["cpi"]
    with pytest.raises(ValueError, match="nope"):
        drift.feature_drift(stable, TRAINED_UNTIL, DriftSection(columns=["cpi", "nope"]))


# --- target and prediction drift ----------------------------------------------------------


@pytest.mark.parametrize("level", [0.1, -0.1])
def test_target_drift_detects_level_shift(level):
    """A 10 % level shift of sales from the current window on is target drift."""
    data = _panel(DriftInjection(start=DRIFT_START, level_shift=level))
    result, _ = drift.target_drift(data, TRAINED_UNTIL, DriftSection())
    assert result.kind == "target"
    assert result.detected and result.drifted_columns == ["y_scaled"]


def test_prediction_drift_scaled_per_series():
    """Forecasts 30 % higher drift; the same forecasts do not, whatever the series' sizes."""
    rng = np.random.default_rng(0)
    ids = np.repeat(["1/1", "1/2", "2/1"], 60)
    size = np.repeat([10.0, 1e3, 1e5], 60)
    ref = pd.DataFrame({"unique_id": ids, "forecast": rng.normal(1, 0.05, 180) * size})
    higher, _ = drift.prediction_drift(
        ref, ref.assign(forecast=ref["forecast"] * 1.3), DriftSection()
    )
    same, _ = drift.prediction_drift(ref, ref.sample(frac=1, random_state=1), DriftSection())
    assert higher.detected and not same.detected
    assert higher.kind == "prediction" and higher.columns[0].column == "forecast_scaled"


def test_prediction_drift_notes_series_without_reference():
    """Series absent from the reference forecasts are left out with a note."""
    ref = pd.DataFrame({"unique_id": ["a"] * 50, "forecast": np.linspace(1, 2, 50)})
    cur = pd.concat([ref, pd.DataFrame({"unique_id": ["b"] * 5, "forecast": 9.0})])
    result, _ = drift.prediction_drift(ref, cur, DriftSection())
    assert result.current_rows == 50 and "1 series" in result.notes[0]


# --- detect_drift: methods, thresholds, the rule, bad input -------------------------------


@pytest.mark.parametrize(
    ("method", "threshold"),
    [("ks", 0.05), ("anderson", 0.05), ("wasserstein", 0.1), ("jensenshannon", 0.1), ("psi", 0.1)],
)
def test_each_method_flags_the_shifted_columns(method, threshold):
    """p-values drift below the threshold, distances at or above it: only moved columns drift."""
    ref, cur = _frames()
    cfg = DriftSection(num_method=method, threshold=threshold)
    result, _ = drift.detect_drift(ref, cur, list(ref.columns), cfg)
    assert result.drifted_columns == ["a", "b"]
    assert all(c.method == method for c in result.columns)


@pytest.mark.parametrize(
    ("min_columns", "min_share", "expected"),
    [(2, 1.0, True), (3, 1.0, False), (3, 0.4, True), (3, 0.5, False)],
)
def test_overall_rule_from_config(min_columns, min_share, expected):
    """Two of five columns drift: detected iff >= min_drifted_columns or >= min_drifted_share."""
    ref, cur = _frames(n=400)
    cfg = DriftSection(min_drifted_columns=min_columns, min_drifted_share=min_share)
    result, _ = drift.detect_drift(ref, cur, list(ref.columns), cfg)
    assert (result.n_drifted, result.share_drifted) == (2, 0.4)
    assert result.detected is expected


def test_missing_columns_named_for_both_frames():
    """Columns missing from either frame raise a ValueError naming each frame's gaps."""
    ref, cur = _frames(n=100)
    with pytest.raises(ValueError, match=r"\['x'\] missing from the reference.*\['a', 'x'\]"):
        drift.detect_drift(ref, cur.drop(columns="a"), ["a", "x"], DriftSection())


def test_constant_and_null_columns_skipped_with_note():
    """All-null and constant columns are skipped with a note instead of crashing."""
    ref, cur = _frames(n=200, moved="")
    ref["k"], cur["k"], ref["z"], cur["z"] = 1.0, 1.0, np.nan, np.nan
    result, _ = drift.detect_drift(ref, cur, ["a", "k", "z"], DriftSection())
    assert [c.column for c in result.columns] == ["a"]
    assert any("k vs reference" in n and "constant" in n for n in result.notes)
    assert any("z vs reference" in n and "no reference" in n for n in result.notes)


def test_nothing_testable_is_an_error():
    """When no column can be tested the check fails loudly rather than passing silently."""
    frame = pd.DataFrame({"k": [1.0] * 10})
    with pytest.raises(ValueError, match="no column could be tested"):
        drift.detect_drift(frame, frame, ["k"], DriftSection())


def test_sampling_caps_rows_per_side():
    """Each side is sampled (seeded) to cfg.max_rows."""
    ref, cur = _frames(n=4000, moved="")
    result, _ = drift.detect_drift(ref, cur, ["c"], DriftSection(max_rows=1000))
    again, _ = drift.detect_drift(ref, cur, ["c"], DriftSection(max_rows=1000))
    assert (result.reference_rows, result.current_rows) == (1000, 1000)
    assert result.columns[0].score == again.columns[0].score


# --- output -------------------------------------------------------------------------------


def test_markdown_states_rule_and_orders_drifted_first(shifted_check):
    """The markdown report states the rule and lists drifted columns first."""
    text = shifted_check[0].to_markdown()
    assert "drift when >= 3 columns or >= 30% drift (KS p < 0.05)" in text
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    assert rows[0] == "column" and sorted(rows[2:6]) == SHIFTED


def test_payload_is_json_safe(shifted_check):
    """The event payload survives json.dumps and carries verdict, counts and scores."""
    payload = json.loads(json.dumps(shifted_check[0].to_payload()))
    assert payload["detected"] is True and payload["n_drifted"] == 4
    assert sorted(payload["drifted_columns"]) == SHIFTED
    assert set(payload["scores"]) == {c.column for c in shifted_check[0].columns}


def test_html_report_written(shifted_check, tmp_path):
    """save_report_html creates the folder and writes a real Evidently page."""
    path = drift.save_report_html(shifted_check[1], tmp_path / "reports" / "drift.html")
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size > 100_000 and "temperature vs seasonal" in text


@pytest.mark.parametrize(
    ("end", "periods", "first", "last"),
    [("2012-10-26", 13, "2012-08-03", "2012-10-26"), ("2012-10-24", 2, "2012-10-12", "2012-10-19")],
)
def test_window_holds_periods_ending_at_end(stable, end, periods, first, last):
    """window() returns the rows of the `periods` periods ending at `end` (inclusive)."""
    rows = drift.window(stable, pd.Timestamp(end), periods)
    assert rows["ds"].nunique() == periods
    assert (rows["ds"].min(), rows["ds"].max()) == (pd.Timestamp(first), pd.Timestamp(last))


# --- business terms: what moved, by how much, where ----------------------------------------


@pytest.fixture(scope="module")
def scenario_checks():
    """The drift scenario (configs/scenario.yaml) on 6 stores, drift injected in stores 1-4
    only; the champion trained until 2012-04-27 as in the README's walkthrough."""
    from salesflow.config.settings import load_settings

    s = load_settings("scenario")
    inj = s.data.synthetic.drift.model_copy(update={"stores": [1, 2, 3, 4]})
    data = generate_sales(
        s.data.synthetic.model_copy(update={"n_stores": 6, "drift": inj}), future_periods=0
    )
    trained = pd.Timestamp("2012-04-27")
    feature, _ = drift.feature_drift(data, trained, s.monitor.drift)
    target, _ = drift.target_drift(data, trained, s.monitor.drift)
    return inj, feature, target


def test_sales_shift_in_percent_names_the_drifted_stores(scenario_checks):
    """Target drift says sales rose by about the injected share, in stores 1-4 only."""
    inj, _, target = scenario_checks
    shift = target.shifts["y_scaled"]
    assert shift.column == "sales" and shift.group == "store"
    assert shift.moved == ["1", "2", "3", "4"] and shift.n_groups == 6
    assert shift.share == pytest.approx(inj.level_shift, abs=0.15)
    assert shift.describe().startswith("sales +") and "stores 1-4 (of 6)" in shift.describe()


def test_covariate_shift_in_units_and_sigma_names_the_stores(scenario_checks):
    """Each shifted covariate moved up by more than one sigma, in stores 1-4 only; the
    change in units is sigma times the reference spread."""
    inj, feature, _ = scenario_checks
    for col in inj.covariate_shift:
        shift = feature.shifts[col]
        assert shift.moved == ["1", "2", "3", "4"], (col, shift)
        assert shift.change > 0 and shift.sigma is not None and shift.sigma > 1, (col, shift)
        assert f"{col} +" in shift.describe() and "σ)" in shift.describe()


def test_markdown_puts_business_terms_before_the_scores(scenario_checks):
    """The report says what moved (column, amount, stores) before the rule and the p-values;
    steady columns are named as unchanged."""
    _, feature, target = scenario_checks
    text = feature.to_markdown()
    moved, table = text.index("**What moved**"), text.index("| column |")
    assert moved < text.index("Rule:") < table
    assert "- temperature +" in text[moved:table] and "in stores 1-4 (of 6)" in text[moved:table]
    assert "no significant change:" in text and "unemployment" in text[moved:table]
    assert "- sales +" in target.to_markdown()
    payload = json.loads(json.dumps(feature.to_payload()))
    assert payload["moved"]["temperature"]["moved"] == ["1", "2", "3", "4"]


def test_no_business_lines_without_drift(stable_check):
    """Stable data: no 'what moved' section, the table alone."""
    result, _ = stable_check
    assert "What moved" not in result.to_markdown()


@pytest.mark.parametrize(
    ("moved", "n", "expected"),
    [
        (["1", "2", "3", "4"], 6, "in stores 1-4 (of 6)"),
        (["1", "2", "4", "5", "7"], 9, "in stores 1, 2, 4, 5, 7 (of 9)"),
        (["1", "2", "3"], 3, "in all 3 stores (1-3)"),
        (["3"], 6, "in store 3"),
        ([], 6, ""),
    ],
)
def test_where_compresses_store_runs(moved, n, expected):
    """Moved stores are listed as ranges; all or one of them said so."""
    shift = drift.ColumnShift("x", 1.0, 1.0, None, "store", moved, n)
    assert shift.where() == expected


def test_run_report_dir_is_one_per_run_and_creates_nothing(tmp_path):
    """Two runs on the same data date get two folders (run id and UTC time in the name);
    naming one creates nothing."""
    import datetime as dt

    at = dt.datetime(2026, 12, 3, 14, 5, 9, tzinfo=dt.UTC)
    a = drift.run_report_dir(tmp_path, pd.Timestamp("2012-10-26"), "run-a", at)
    b = drift.run_report_dir(tmp_path, pd.Timestamp("2012-10-26"), "run-b", at)
    assert a != b and a.name == "2012-10-26_20261203T140509Z_run-a"
    assert not any(tmp_path.iterdir())


def test_monitor_summary_says_what_moved(scenario_checks):
    """The monitor summary's drift rows give each drifted column's change and stores, not
    just its name (sales for the target)."""
    from salesflow.governance.policy import RollbackDecision
    from salesflow.modelling.report import monitor_summary
    from salesflow.monitor.loop import RealizedComparison

    _, feature, target = scenario_checks
    cmp = RealizedComparison("1", 2.0, None, None, 10, "2012-08-03", "2012-10-26")
    text = monitor_summary(
        {"name": "m", "version": "1", "backtest_wmae": 1.0},
        cmp,
        {"feature": feature, "target": target},
        True,
        [],
        RollbackDecision(False, "no previous version", "1", None),
    )
    assert feature.shifts["temperature"].describe() in text
    assert "| target drift | DRIFT (sales +" in text


def test_negative_shift_names_only_the_stores_that_fell():
    """A fall in stores 1 and 2 reads as a negative change in units and sigma there; the
    stores that stayed are not listed."""
    from salesflow.monitor.drift_shift import covariate_shift

    rng = np.random.default_rng(1)
    stores = np.repeat([1, 2, 3, 4], 26)
    base = pd.Series(rng.normal(50, 2, stores.size))
    obs = pd.DataFrame({"store": stores, "x": base})
    cur = base[::2] - np.where(stores[::2] <= 2, 6.0, 0.0)
    shift = covariate_shift(obs, "x", "store", base[1::2], cur, base)
    assert shift.moved == ["1", "2"]
    assert shift.change == pytest.approx(-6.0, abs=1.5) and shift.sigma < -1
    assert shift.describe().startswith("x -") and shift.describe().endswith("in stores 1, 2 (of 4)")
