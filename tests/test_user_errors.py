"""The bad-input corpus: every kind of user mistake (and a few faults) through the real
``salesflow`` command in-process, against a state folder holding a trained champion and
written forecasts. Each case asserts the one ``salesflow:`` line (naming what to fix), the
exit code (2: the user's to fix, 1: ours or the machine's) and that nothing was written,
promoted or deleted (warehouse rows per table, MLflow versions, runs, the champion)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from tests.pg import PG_URL, postgres_or_skip

MODEL = "salesflow-forecaster"
ROOT = Path(__file__).resolve().parent.parent
WALMART_MINI = ROOT / "tests" / "fixtures" / "walmart_mini"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _long_frame() -> pd.DataFrame:
    """The test env's synthetic panel as a long file: store, dept, date, sales."""
    from salesflow.config.settings import load_settings
    from salesflow.data.synthetic import generate_sales

    h = generate_sales(load_settings("test").data.synthetic).history
    return pd.DataFrame(
        {"store": h["store"], "dept": h["dept"], "date": h["ds"].dt.date, "sales": h["y"]}
    )


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _make_files(d: Path) -> None:
    """Every bad file of the corpus, in ``d``."""
    good = _long_frame()
    good.to_csv(d / "good.csv", index=False)
    good.rename(columns={"sales": "revenue"}).to_csv(d / "wrong_column.csv", index=False)
    (d / "empty.csv").write_bytes(b"")
    cafe = good.astype({"dept": str})
    cafe.loc[3, "dept"] = "Caf\xe9"
    cafe.to_csv(d / "latin1.csv", index=False, encoding="latin-1")
    _zip(d / "binary.zip", {"model.bin": bytes(range(256)) * 4})
    _zip(d / "two.zip", {"a.csv": b"store\n1\n", "b.csv": b"store\n2\n"})
    (d / "not_a_zip.zip").write_text("store,dept,date,sales\n")
    (d / "zero.parquet").write_bytes(b"")
    good.iloc[:0].to_parquet(d / "no_rows.parquet")
    (d / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    (d / "folder.csv").mkdir()
    holiday = good.assign(holiday=["H" if i % 9 == 0 else "-" for i in range(len(good))])
    holiday.to_csv(d / "holiday_letters.csv", index=False)
    pd.concat([good, good.iloc[[5]]]).to_csv(d / "duplicate_rows.csv", index=False)
    good.assign(sales=good["sales"].where(good.index != 7, -5e9)).to_csv(
        d / "negative.csv", index=False
    )
    stray = good.iloc[[0]].assign(date=pd.Timestamp("2099-01-02").date())
    pd.concat([good, stray]).to_csv(d / "stray_2099.csv", index=False)
    long_ids = good[(good.store == good.store.iloc[0]) & (good.dept == good.dept.iloc[0])]
    long_ids.assign(store="s" * 2100).to_csv(d / "long_ids.csv", index=False)
    shutil.copytree(WALMART_MINI, d / "walmart_dup")
    feats = (d / "walmart_dup" / "features.csv").read_bytes().splitlines(keepends=True)
    (d / "walmart_dup" / "features.csv").write_bytes(b"".join([*feats, feats[2]]))
    (d / "not_walmart").mkdir()
    (d / "not_walmart" / "sales.csv").write_text("a\n1\n")
    db = sqlite3.connect(d / "source.db")
    db.execute("create table other (x int)")
    db.commit()
    db.close()


@dataclass
class World:
    local: Path
    files: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A state folder with a champion (trained by ``salesflow train``) and its forecasts."""
    from salesflow.commands.cli import main

    mp = pytest.MonkeyPatch()
    local = tmp_path_factory.mktemp("state")
    files = tmp_path_factory.mktemp("files")
    mp.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(local))
    for var in ("SALESFLOW_WAREHOUSE_URL", "SALESFLOW_ENV", "SALESFLOW_MLFLOW__TRACKING_URI"):
        mp.delenv(var, raising=False)
    _make_files(files)
    try:
        with prefect_test_harness(server_startup_timeout=120):
            small = '{"model": {"n_estimators": 20}}'
            assert main([*_train("--set", small, "--force-champion", "--reason", "corpus")]) == 0
            assert main(["forecast", "--env", "test"]) == 0
            yield World(local, files)
    finally:
        mp.undo()


def snapshot(local: Path) -> dict[str, Any]:
    """Rows per warehouse table, MLflow versions, runs and the champion's version."""
    from mlflow import MlflowClient

    with sqlite3.connect(f"file:{local / 'warehouse.db'}?mode=ro", uri=True) as db:
        tables = [t for (t,) in db.execute("select name from sqlite_master where type='table'")]
        rows = {t: db.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}
    uri = f"sqlite:///{local / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exps = [e.experiment_id for e in c.search_experiments()]
    return {
        "rows": rows,
        "versions": len(c.search_model_versions(f"name='{MODEL}'")),
        "runs": len(c.search_runs(exps)),
        "champion": c.get_model_version_by_alias(MODEL, "champion").version,
    }


@dataclass
class Case:
    id: str
    argv: list[str]
    message: str  # regex the one line must match
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    fault: Callable[[pytest.MonkeyPatch, World], Any] | None = None


def _train(*extra: str) -> list[str]:
    return ["train", "--env", "test", *extra]


def _forecast(*extra: str) -> list[str]:
    return ["forecast", "--env", "test", *extra]


def _long(name: str, *extra: str) -> list[str]:
    return _train("--source", "long", "--path", f"{{files}}/{name}", *extra)


def _readonly_registry(mp: pytest.MonkeyPatch, w: World) -> Callable[[], None]:
    ro = w.files / "readonly"
    ro.mkdir(exist_ok=True)
    os.chmod(ro, 0o555)  # enough for a normal user; root needs the immutable flag
    subprocess.run(["chattr", "+i", str(ro)], capture_output=True)

    def undo() -> None:
        subprocess.run(["chattr", "-i", str(ro)], capture_output=True)
        os.chmod(ro, 0o755)

    try:
        (ro / "probe").touch()
    except OSError:
        mp.setenv("SALESFLOW_MLFLOW__TRACKING_URI", f"sqlite:///{ro}/mlflow.db")
        return undo
    undo()
    pytest.skip("cannot make a read-only folder here")


def _unreadable_champion(mp: pytest.MonkeyPatch, w: World) -> None:
    def gone(*a, **k):  # injected fault: the artifact store lost the model
        raise OSError(errno.ENOENT, "No such file or directory", "mlartifacts/model")

    mp.setattr("mlflow.artifacts.download_artifacts", gone)


def _disk_full(mp: pytest.MonkeyPatch, w: World) -> None:
    def full(*a, **k):  # injected fault at the warehouse write
        raise OSError(errno.ENOSPC, "No space left on device", str(w.local / "warehouse.db"))

    mp.setattr("tasks.score.write_forecasts", full)


def _locked_warehouse(mp: pytest.MonkeyPatch, w: World) -> Callable[[], None]:
    """Another process's write transaction holds the SQLite warehouse's lock."""
    mp.setattr("salesflow.sqlengine._SQLITE_BUSY_MS", 200)  # wait 0.2 s, not 30 s
    db = sqlite3.connect(w.local / "warehouse.db", isolation_level=None, check_same_thread=False)
    db.execute("BEGIN IMMEDIATE")

    def release() -> None:
        db.execute("ROLLBACK")
        db.close()

    return release


def _ids_in_postgres(mp: pytest.MonkeyPatch, w: World) -> None:
    postgres_or_skip()
    mp.setenv("SALESFLOW_WAREHOUSE_URL", PG_URL)


CLOSED = _closed_port()

# Found before any flow starts (settings, arguments, files, folders, servers): < 1 s each.
BEFORE_FLOW = [
    Case("wrong-column", _long("wrong_column.csv"), r"missing column\(s\) \['sales'\].*revenue"),
    Case(
        "wrong-date-mapping",
        _long("good.csv", "--set", '{"data": {"long": {"date": "week"}}}'),
        r"missing column\(s\) \['week'\]",
    ),
    Case("empty-file", _long("empty.csv"), r"empty\.csv is empty"),
    Case("zip-holds-binary", _long("binary.zip"), r"holds 'model\.bin', not a CSV"),
    Case("zip-holds-two-files", _long("two.zip"), r"holds 2 files"),
    Case("zip-that-is-not", _long("not_a_zip.zip"), r"not a zip archive"),
    Case("empty-parquet", _long("zero.parquet"), r"zero\.parquet cannot be read as Parquet"),
    Case("unknown-file-type", _long("sheet.xlsx"), r"unknown file type"),
    Case("missing-file", _long("nowhere.csv"), r"nowhere\.csv not found: check data\.path"),
    Case("folder-not-file", _long("folder.csv"), r"is a folder, not a file"),
    Case(
        "unknown-encoding",
        _long("good.csv", "--set", '{"data": {"long": {"encoding": "klingon"}}}'),
        r"'klingon' is not a known encoding",
    ),
    Case(
        "reserved-column-name",
        _long("good.csv", "--set", '{"data": {"long": {"covariates": ["y"]}}}'),
        r"reserved",
    ),
    Case(
        "missing-covariates-file",
        _long("good.csv", "--set", '{"data": {"long": {"covariates_path": "/nowhere/c.csv"}}}'),
        r"/nowhere/c\.csv not found",
    ),
    Case(
        "missing-walmart-folder",
        _train("--source", "walmart", "--path", "{files}/no_such_dir"),
        r"walmart data folder .*no_such_dir not found",
    ),
    Case(
        "wrong-walmart-folder",
        _train("--source", "walmart", "--path", "{files}/not_walmart"),
        r"no train\.csv .*point --path",
    ),
    Case("parquet-without-rows", _long("no_rows.parquet"), r"no_rows\.parquet has no rows"),
    Case(
        "unparsable-dates",
        _long("good.csv", "--set", '{"data": {"long": {"date_format": "%d/%m/%Y"}}}'),
        r"column 'date': cannot parse dates with format '%d/%m/%Y'",
    ),
    Case(
        "as-of-leaves-too-little-history",
        _long("good.csv", "--as-of", "2011-02-04"),
        r"data too short for the backtest: 53 periods, need 69",
    ),
    Case(
        "as-of-before-the-data",
        _long("good.csv", "--as-of", "2001-01-05"),
        r"no data on or before as_of 2001-01-05 \(--as-of\) in .*good\.csv: it starts on 2010",
    ),
    Case("set-not-json", _train("--set", "{model: 3}"), r"--set is not valid JSON"),
    Case("set-not-object", _train("--set", "[1, 2]"), r"--set must be a JSON object"),
    Case("origin-not-a-date", _forecast("--origin", "notadate"), r"--origin 'notadate' is not a"),
    Case("as-of-not-a-date", _train("--as-of", "notadate"), r"--as-of 'notadate' is not a date"),
    Case("unknown-source-option", _train("--source", "excel"), r"invalid choice: 'excel'"),
    Case("unknown-command", ["trian"], r"invalid choice: 'trian'"),
    Case(
        "unknown-source-setting",
        _train("--set", '{"data": {"source": "excel"}}'),
        r"data\.source",
    ),
    Case("unknown-setting-key", _train("--set", '{"model": {"horizn": 3}}'), r"model\.horizn"),
    Case("bad-setting-value", _train("--set", '{"model": {"horizon": -1}}'), r"model\.horizon"),
    Case("unknown-env", ["train", "--env", "nosuch"], r"nosuch"),
    Case(
        "horizon-longer-than-season",
        _train("--set", '{"model": {"horizon": 60}}'),
        r"model\.horizon \(60\) is longer than features\.season_length \(52\)",
    ),
    Case(
        "mlflow-closed-port",
        _train(),
        r"MLflow tracking server http://127\.0\.0\.1:\d+ does not answer",
        env={"SALESFLOW_MLFLOW__TRACKING_URI": f"http://127.0.0.1:{CLOSED}"},
    ),
    Case(
        "read-only-registry",
        _train(),
        r"the MLflow registry folder .*readonly is not writable",
        fault=_readonly_registry,
    ),
    Case(
        "malformed-warehouse-url",
        _forecast(),
        r"SALESFLOW_WAREHOUSE_URL",
        env={"SALESFLOW_WAREHOUSE_URL": "postgresql://u:hunter2@db:notaport/x"},
    ),
    Case(
        "unsupported-warehouse",
        _forecast(),
        r"mysql",
        env={"SALESFLOW_WAREHOUSE_URL": "mysql://u:hunter2@db/x"},
    ),
    Case("env-name-as-path", ["train", "--env", "../../evil"], r"not an env name"),
    Case(
        "local-dir-escapes",
        _train(),
        r"paths\.local_dir",
        env={"SALESFLOW_PATHS__LOCAL_DIR": "../../evil"},
    ),
    Case(
        "required-url-variable-missing", ["forecast", "--env", "prod"], r"SALESFLOW_WAREHOUSE_URL"
    ),
    Case(
        "misspelt-section-variable",
        _train(),
        r"SALESFLOW_MODELL__HORIZON",
        env={"SALESFLOW_MODELL__HORIZON": "13"},
    ),
]

# Found inside the flow run: at ingestion, by the validation gate, by the data checks
# before any fit, at the champion, or at the write (faults injected).
IN_FLOW = [
    Case(
        "walmart-duplicate-features",
        _forecast("--source", "walmart", "--path", "{files}/walmart_dup"),
        r"walmart features file: 1 repeated rows .*'store'",
    ),
    Case("not-utf8", _long("latin1.csv"), r"not utf-8 text.*set data\.long\.encoding"),
    Case(
        "letter-coded-holiday",
        _long("holiday_letters.csv", "--set", '{"data": {"long": {"holiday": "holiday"}}}'),
        r"column 'holiday': cannot read \['-', 'H'\] as booleans",
    ),
    Case("duplicate-rows", _long("duplicate_rows.csv"), r"unique \(series, date\)"),
    Case("target-out-of-range", _long("negative.csv"), r"in range.*y"),
    Case("row-dated-2099", _long("stray_2099.csv"), r"no dates after today .*ds=2099-01-02"),
    Case(
        "backtest-longer-than-history",
        _train("--set", '{"data": {"synthetic": {"periods": 60}}}'),
        r"data too short for the backtest: 60 periods, need 69",
    ),
    Case(
        "sql-missing-table",
        _train(
            "--source",
            "sql",
            "--set",
            '{"data": {"url": "sqlite:///{files}/source.db", "table": "sales"}}',
        ),
        r"table 'sales' \(data\.table\) does not exist",
    ),
    Case(
        "sql-injection-table-name",
        _train(
            "--source",
            "sql",
            "--set",
            '{"data": {"url": "sqlite:///{files}/source.db", "table": "other; DROP TABLE other"}}',
        ),
        r"not a valid",
    ),
    Case("no-champion", _forecast("--set", '{"model": {"name": "nobody"}}'), r"salesflow train"),
    Case(
        "unreadable-champion",
        _forecast(),
        r"ChampionUnreadable: version 1 of 'salesflow-forecaster'.*salesflow rollback",
        code=1,
        fault=_unreadable_champion,
    ),
    Case(
        "champion-does-not-fit-data",
        _forecast("--source", "long", "--path", "{files}/good.csv"),
        r"champion \(version 1\) does not fit the long data: covariates: expected \[.*'cpi'",
    ),
    Case(
        "retrain-champion-does-not-fit",
        ["retrain", "--env", "test", "--source", "long", "--path", "{files}/good.csv"],
        r"champion \(version 1\) does not fit the long data: covariates",
    ),
    Case(
        "monitor-champion-does-not-fit",
        ["monitor", "--env", "test", "--source", "long", "--path", "{files}/good.csv"],
        r"champion \(version 1\) does not fit the long data: covariates",
    ),
    Case(
        "warehouse-unreachable",
        _forecast(),
        rf"cannot reach the warehouse at postgresql\+psycopg://u:\*\*\*@127\.0\.0\.1:{CLOSED}",
        code=1,
        env={"SALESFLOW_WAREHOUSE_URL": f"postgresql+psycopg://u:pw@127.0.0.1:{CLOSED}/x"},
    ),
    Case(
        "warehouse-locked",
        _forecast(),
        r"SQLite database is locked by another process",
        code=1,
        fault=_locked_warehouse,
    ),
    Case(
        "disk-full",
        _forecast(),
        r"no space left on device writing .*warehouse\.db",
        1,
        fault=_disk_full,
    ),
    Case(
        "ids-too-long-for-postgresql",
        _forecast("--source", "long", "--path", "{files}/long_ids.csv"),
        r"1 series ids are longer than 2,000 bytes \(longest 2,10\d\)",
        fault=_ids_in_postgres,
    ),
]


def _run(world: World, case: Case, monkeypatch, capsys) -> tuple[int, str, Any]:
    from salesflow.commands.cli import main

    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    before = snapshot(world.local)
    handle = case.fault(monkeypatch, world) if case.fault else None
    capsys.readouterr()
    try:
        code = main([a.replace("{files}", str(world.files)) for a in case.argv])
    finally:
        if callable(handle):
            handle()
    err = capsys.readouterr().err
    return code, err, before


def _check(world: World, case: Case, code: int, err: str, before: dict) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("salesflow:")]
    assert len(lines) == 1, err
    assert re.search(case.message, lines[0]), lines[0]
    assert code == case.code, lines[0]
    assert "hunter2" not in err and ":pw@" not in err
    if case.code == 2:
        assert "Traceback" not in err
    assert snapshot(world.local) == before


@pytest.mark.parametrize("case", BEFORE_FLOW, ids=[c.id for c in BEFORE_FLOW])
def test_found_before_the_flow_starts(world, case, monkeypatch, capsys):
    """A mistake found before any flow: one line naming the fix, exit 2, nothing touched."""
    code, err, before = _run(world, case, monkeypatch, capsys)
    _check(world, case, code, err, before)


@pytest.mark.parametrize("case", IN_FLOW, ids=[c.id for c in IN_FLOW])
def test_found_inside_the_flow(world, case, monkeypatch, capsys):
    """A mistake or fault found inside the flow run: one line, its exit code, nothing
    written, promoted or deleted."""
    code, err, before = _run(world, case, monkeypatch, capsys)
    _check(world, case, code, err, before)
    if case.code == 2:  # the flow run's state message says the same; nothing was retried
        line = next(ln for ln in err.splitlines() if ln.startswith("salesflow:"))
        message, run_counts = _last_flow_run()
        assert line.removeprefix("salesflow: ") in message
        assert set(run_counts.values()) == {1}, run_counts


def _last_flow_run() -> tuple[str, dict[str, int]]:
    """The state message of the latest flow run, and how often each of its tasks ran."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1)
        # Task-run states reach the server as events, recorded in the background; on a
        # busy machine the recorder can lag (SQLite "database is locked", retried later).
        # Wait until every task run has its final state before reading its run count.
        deadline = time.monotonic() + 180
        while True:
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
            settled = all(t.state is not None and t.state.is_final() for t in tasks)
            if (settled and all(t.run_count for t in tasks)) or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert run.state is not None and run.state.is_failed()
    return run.state.message or "", {t.name: t.run_count for t in tasks}


def test_corpus_is_big_enough():
    """At least 40 kinds of bad input or fault, each with a unique id."""
    ids = [c.id for c in BEFORE_FLOW + IN_FLOW]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


def test_wrong_column_from_a_terminal_is_one_line(tmp_path):
    """`salesflow train --source long --path <file with a wrong column>` as a process: exit
    2, stderr exactly one `salesflow:` line, no traceback, no Prefect server started."""
    bad = tmp_path / "wrong.csv"
    _long_frame().rename(columns={"sales": "revenue"}).to_csv(bad, index=False)
    env = {**os.environ, "SALESFLOW_PATHS__LOCAL_DIR": str(tmp_path / "local")}
    env.pop("SALESFLOW_WAREHOUSE_URL", None)
    exe = Path(sys.executable).parent / "salesflow"
    out = subprocess.run(
        [str(exe), "train", "--source", "long", "--path", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [out.stderr.strip()]
    assert out.stderr.startswith("salesflow: long-format file") and "['sales']" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout and "temporary server" not in out.stderr
