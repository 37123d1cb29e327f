"""The serving read queries on real SQLite and PostgreSQL warehouses: keyset pages, key
filters, store totals, and empty results when nothing was written yet."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import numpy as np
import pandas as pd
import pytest

from tests.pg import PG_URL, drop_table, postgres_or_skip

ORIGINS = [dt.date(2012, 1, 6), dt.date(2012, 2, 3)]
HORIZON = 5


def _rows(keys: dict[str, list[str]], model: str = "salesflow-forecaster") -> pd.DataFrame:
    """Forecast rows of every key combination x origin x horizon (forecast = a seeded draw)."""
    from salesflow.data.schema import make_unique_id

    names = list(keys)
    grid = pd.MultiIndex.from_product(list(keys.values()), names=names).to_frame(index=False)
    grid["unique_id"] = make_unique_id(grid, names)
    rng = np.random.default_rng(3)
    out = []
    for origin in ORIGINS:
        for h in range(1, HORIZON + 1):
            f = grid.assign(
                forecast_origin=origin,
                target_date=origin + dt.timedelta(weeks=h),
                horizon=h,
                forecast=rng.uniform(100, 1000, len(grid)),
            )
            out.append(f)
    rows = pd.concat(out, ignore_index=True)
    rows["series_keys"] = [
        json.dumps({k: r[k] for k in names}) for r in rows[names].to_dict("records")
    ]
    rows["lo_80"], rows["hi_80"] = rows["forecast"] * 0.9, rows["forecast"] * 1.1
    rows["lo_95"], rows["hi_95"] = rows["forecast"] * 0.8, np.nan
    return rows.assign(model_name=model, model_version="3", mlflow_run_id="r1").drop(
        columns=[k for k in names if k not in ("store", "dept")]
    )


WEEKLY = {"store": ["1", "2", "10", "a/b"], "dept": ["1", "7", "50%"]}
OTHER = {"region": ["north", "south"], "shop": ["1", "2", "3"], "sku": ["x", "y"]}


def _settings(tmp_path, monkeypatch, url: str, table: str):
    from salesflow.config.settings import load_settings

    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    return load_settings(
        "test",
        paths={"local_dir": str(tmp_path / "local")},
        warehouse={"url": url, "table": table},
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse(request, tmp_path, monkeypatch):
    """Settings on a warehouse holding weekly rows of the default model and rows of a model
    with other keys (region, shop, sku)."""
    from salesflow.serving.queries import dispose_engines
    from salesflow.storage.warehouse import write_forecasts

    table = f"fc_q_{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/wh.db"
    else:
        postgres_or_skip()
        url = PG_URL
    settings = _settings(tmp_path, monkeypatch, url, table)
    write_forecasts(url, _rows(WEEKLY), table, runs_table=None)
    write_forecasts(url, _rows(OTHER, "other-model"), table, runs_table=None)
    yield settings
    dispose_engines()
    if request.param == "postgresql":
        drop_table(url, table)


def _all_pages(settings, limit: int, **kw) -> list[dict]:
    from salesflow.serving.queries import forecast_page

    rows, after, pages = [], None, 0
    while True:
        page = forecast_page(settings, after=after, limit=limit, **kw)
        rows += page.rows
        pages += 1
        assert len(page.rows) <= limit
        if page.next_cursor is None:
            return rows
        after = page.next_cursor
        assert pages < 1000


def test_pages_cover_the_latest_origin_once(warehouse):
    """Pages of any size return every row of the latest origin exactly once, in key order."""
    from salesflow.serving.queries import latest_origin

    assert latest_origin(warehouse) == ORIGINS[-1]
    n = len(WEEKLY["store"]) * len(WEEKLY["dept"]) * HORIZON
    for limit in (1, 7, n, n + 5):
        rows = _all_pages(warehouse, limit)
        keys = [(r["unique_id"], r["target_date"]) for r in rows]
        assert len(keys) == n == len(set(keys))
        assert keys == sorted(keys)
        assert {r["forecast_origin"] for r in rows} == {ORIGINS[-1]}
    row = rows[0]
    assert set(row["series_keys"]) == {"store", "dept"}
    assert row["hi_95"] is None and row["lo_80"] < row["forecast"] < row["hi_80"]
    assert row["model_version"] == "3" and isinstance(row["horizon"], int)


def test_next_pages_stay_on_the_first_pages_origin(warehouse):
    """A newer origin written between two pages does not change the origin of the walk."""
    from salesflow.serving.queries import forecast_page
    from salesflow.storage.warehouse import write_forecasts

    first = forecast_page(warehouse, limit=3)
    assert first.origin == ORIGINS[-1]
    newer = _rows(WEEKLY).assign(
        forecast_origin=lambda f: f["forecast_origin"] + dt.timedelta(weeks=8),
        target_date=lambda f: f["target_date"] + dt.timedelta(weeks=8),
    )
    write_forecasts(warehouse.warehouse_url, newer, warehouse.warehouse.table, runs_table=None)
    second = forecast_page(warehouse, after=first.next_cursor, limit=3)
    assert {r["forecast_origin"] for r in second.rows} == {ORIGINS[-1]}
    assert second.rows[0]["unique_id"] >= first.rows[-1]["unique_id"]
    assert forecast_page(warehouse, limit=1).origin == ORIGINS[-1] + dt.timedelta(weeks=8)


def test_filters_by_keys_origin_and_dates(warehouse):
    """All keys select one series (escaped ids too); store alone its depts; dates bound."""
    from salesflow.serving.queries import forecast_page

    one = forecast_page(warehouse, {"store": "a/b", "dept": "50%"}, origin=ORIGINS[0])
    assert len(one.rows) == HORIZON and one.origin == ORIGINS[0]
    assert {r["unique_id"] for r in one.rows} == {"a%2Fb/50%25"}
    assert one.rows[0]["series_keys"] == {"store": "a/b", "dept": "50%"}
    store = _all_pages(warehouse, 4, keys={"store": "10"})
    assert len(store) == len(WEEKLY["dept"]) * HORIZON
    assert {r["series_keys"]["store"] for r in store} == {"10"}
    dept = _all_pages(warehouse, 100, keys={"dept": "7"})
    assert {r["series_keys"]["dept"] for r in dept} == {"7"} and len(dept) == 4 * HORIZON
    first = ORIGINS[-1] + dt.timedelta(weeks=2)
    last = ORIGINS[-1] + dt.timedelta(weeks=3)
    window = _all_pages(warehouse, 100, start=first, end=last)
    assert {r["target_date"] for r in window} == {first, last}
    none = forecast_page(warehouse, {"store": "999", "dept": "1"})
    assert none.rows == [] and none.next_cursor is None


def test_other_keys_match_by_position(warehouse):
    """For keys without their own column, a key matches only its own position in the id."""
    from salesflow.serving.queries import forecast_page

    kw = {"model_name": "other-model", "limit": 1000}
    shop = forecast_page(warehouse, {"shop": "2"}, **kw).rows
    assert len(shop) == 2 * 2 * HORIZON
    assert {r["series_keys"]["shop"] for r in shop} == {"2"}
    both = forecast_page(warehouse, {"region": "south", "sku": "y"}, **kw).rows
    assert {r["unique_id"] for r in both} == {"south/1/y", "south/2/y", "south/3/y"}
    assert forecast_page(warehouse, {"sku": "north"}, **kw).rows == []


def test_bad_filters_and_cursors_are_user_errors(warehouse):
    """An unknown key names the real keys; a forged cursor or a zero limit is refused."""
    from salesflow.errors import UserError
    from salesflow.serving.queries import forecast_page

    with pytest.raises(UserError, match=r"series keys are \['store', 'dept'\]"):
        forecast_page(warehouse, {"item": "1"})
    for cursor in ("not-a-cursor", "W10", "eyJhIjoxfQ"):
        with pytest.raises(UserError, match="cursor"):
            forecast_page(warehouse, after=cursor)
    with pytest.raises(ValueError, match="limit"):
        forecast_page(warehouse, limit=0)


def test_series_forecast_and_store_totals(warehouse):
    """One series' horizons as a frame; per-store totals equal the sum of their series."""
    from salesflow.serving.queries import series_forecast, store_totals

    one = series_forecast(warehouse, {"store": "1", "dept": "7"})
    assert one["horizon"].tolist() == list(range(1, HORIZON + 1))
    assert (one["store"] == "1").all() and one["target_date"].dtype.kind == "M"
    totals = store_totals(warehouse)
    assert sorted(totals["store"].unique()) == sorted(WEEKLY["store"])
    rows = pd.DataFrame(_all_pages(warehouse, 1000))
    rows["store"] = rows["series_keys"].map(lambda k: k["store"])
    expected = rows.groupby(["store", "target_date"])["forecast"].sum()
    got = totals.set_index(["store", totals["target_date"].dt.date])["forecast"]
    assert np.allclose(got.sort_index().to_numpy(), expected.sort_index().to_numpy())
    assert (totals["n_series"] == len(WEEKLY["dept"])).all()


@pytest.mark.parametrize(
    "values",
    [["1", "7"], ["a/b", "50%"], ["%2F", "x/y/z"], ["", "%"], ["10"], ["é/ü", "%25/"]],
)
def test_series_id_is_make_unique_id(values):
    """The id built per request equals the one make_unique_id gave the stored rows."""
    from salesflow.data.schema import make_unique_id
    from salesflow.serving.queries import series_id

    names = [f"k{i}" for i in range(len(values))]
    frame = pd.DataFrame({n: [v] for n, v in zip(names, values, strict=True)})
    assert series_id(values) == make_unique_id(frame, names).iloc[0]


def test_nothing_written_yet_is_empty(tmp_path, monkeypatch):
    """No warehouse file, no table, no registry: empty results, and no file is created."""
    from salesflow.serving import queries

    url = f"sqlite:///{tmp_path}/none.db"
    s = _settings(tmp_path, monkeypatch, url, "sales_forecasts")
    assert queries.latest_origin(s) is None
    assert queries.forecast_page(s).rows == []
    assert queries.store_totals(s).empty and queries.series_forecast(s, {"store": "1"}).empty
    assert queries.model_versions(s) == [] and queries.audit_events(s) == []
    assert queries.realized_accuracy(s).empty
    assert not (tmp_path / "none.db").exists()
    import sqlite3

    sqlite3.connect(tmp_path / "none.db").execute("create table other (x int)").connection.commit()
    assert queries.forecast_page(s).rows == [] and queries.latest_origin(s) is None
    queries.dispose_engines()
