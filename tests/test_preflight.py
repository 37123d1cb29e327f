"""Preflight checks (settings x data x environment), the source-file and header checks, the
champion compatibility check, retries only on transient I/O, and the CLI's one-line report."""

from __future__ import annotations

import ast
import errno
import logging
import socket
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from salesflow.commands.preflight import (
    PreflightError,
    backtest_problems,
    check_data_fits,
    data_problems,
    environment_problems,
    id_length_problems,
    mlflow_server_problems,
    n_periods,
    settings_problems,
)
from salesflow.config.settings import load_settings
from salesflow.data.canonical import SourceError, SourceNotFound
from salesflow.data.sources import check_source_files, load_walmart, read_table_file
from salesflow.errors import UserError, retry_transient
from salesflow.modelling.registry import ChampionIncompatible, check_champion_fits

ROOT = Path(__file__).resolve().parent.parent
WALMART_MINI = ROOT / "tests" / "fixtures" / "walmart_mini"


def _settings(tmp_path: Path, **over):
    return load_settings("test", paths={"local_dir": str(tmp_path / "local")}, **over)


# --- settings x data ------------------------------------------------------------------


def test_backtest_that_fits_has_no_problem(tmp_path, small_data):
    """The test env's backtest fits its synthetic history."""
    s = _settings(tmp_path)
    assert data_problems(s, small_data, "train") == []


@pytest.mark.parametrize(
    ("over", "named"),
    [
        ({"backtest": {"n_origins": 12}}, "backtest.n_origins 12"),
        ({"model": {"min_train_history": 110}}, "model.min_train_history 110"),
        ({"backtest": {"step": 60}}, "backtest.step 60"),
    ],
)
def test_backtest_longer_than_history_is_found_before_any_fit(tmp_path, small_data, over, named):
    """A backtest that cannot fit the history fails naming the numbers and the settings."""
    s = _settings(tmp_path, **over)
    with pytest.raises(PreflightError, match="data too short for the backtest") as info:
        check_data_fits(s, small_data, "train")
    assert named in str(info.value) and f"{n_periods(small_data)} periods" in str(info.value)


def test_backtest_rule_matches_the_backtest_itself(tmp_path, small_data):
    """Exactly the period counts the rolling backtest refuses are refused by preflight."""
    from features.build import make_grid
    from salesflow.modelling.backtest import rolling_origins

    s = _settings(tmp_path)
    grid = make_grid(small_data.history, None, [], small_data.freq)
    for n_origins in range(1, 12):
        b = s.backtest.model_copy(update={"n_origins": n_origins})
        s2 = s.model_copy(update={"backtest": b})
        try:
            rolling_origins(grid, s.model.horizon, n_origins, b.step, s.model.min_train_history)
            ok = True
        except ValueError:
            ok = False
        assert (backtest_problems(s2, len(grid.dates)) == []) == ok, n_origins


def test_retrain_counts_the_holdout(tmp_path, small_data):
    """For a retrain the holdout periods are not available to the backtest."""
    periods = n_periods(small_data)
    s = _settings(tmp_path, policy={"holdout_periods": periods - 60})
    assert data_problems(s, small_data, "train") == []
    assert "holdout" in data_problems(s, small_data, "retrain")[0]


def test_horizon_longer_than_season_is_a_settings_problem(tmp_path):
    """model.horizon beyond features.season_length is reported naming both."""
    s = _settings(tmp_path, model={"horizon": 60})
    (problem,) = settings_problems(s)
    assert "model.horizon (60)" in problem and "features.season_length (52)" in problem


def test_ids_too_long_for_postgresql_are_named():
    """Ids over the byte limit are counted, shown (truncated) and the limit is said."""
    ids = pd.Series(["1/1", "x" * 2100, "é" * 1001])
    (problem,) = id_length_problems(ids)
    assert "2 series ids are longer than 2,000 bytes" in problem
    assert "longest 2,100" in problem and "'xxxx" in problem
    assert id_length_problems(pd.Series(["a" * 2000])) == []


# --- environment ----------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_server_on_a_closed_port_is_found_at_once():
    """An http tracking URI that does not answer is a problem naming the setting."""
    (problem,) = mlflow_server_problems(f"http://user:secret@127.0.0.1:{_closed_port()}")
    assert "SALESFLOW_MLFLOW__TRACKING_URI" in problem and "secret" not in problem


def test_unwritable_registry_folder_is_found(tmp_path, monkeypatch):
    """A registry folder where no file can be created is reported before any training."""
    s = _settings(tmp_path)
    real = __import__("tempfile").TemporaryFile

    def refuse(*args, dir=None, **kw):  # an injected read-only filesystem
        if dir is not None and Path(dir) == s.local_dir / "mlartifacts":
            raise PermissionError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr("salesflow.preflight.tempfile.TemporaryFile", refuse)
    (problem,) = environment_problems(s, "train")
    assert "MLflow artifact store folder" in problem and "Read-only file system" in problem
    assert environment_problems(s, "forecast") == []


def test_environment_is_fine_for_the_test_env(tmp_path):
    """Default settings in a fresh folder: no problem (and the folder is created)."""
    assert environment_problems(_settings(tmp_path), "train") == []
    assert (tmp_path / "local").is_dir()


# --- data files: headers and whole files ------------------------------------------------


def _write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def _zip(tmp_path: Path, name: str, members: dict[str, bytes]) -> Path:
    p = tmp_path / name
    with zipfile.ZipFile(p, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    return p


BAD_FILES = [
    ("empty", lambda t: _write(t, "e.csv", b""), "is empty"),
    ("latin1", lambda t: _write(t, "l.csv", "store,d\n1,Caf\xe9\n".encode("latin-1")), "encoding"),
    (
        "binary-zip",
        lambda t: _zip(t, "b.zip", {"x.bin": bytes(range(256))}),
        "holds .x.bin., not a CSV",
    ),
    ("not-a-zip", lambda t: _write(t, "n.zip", "hello"), "not a zip archive"),
    ("empty-parquet", lambda t: _write(t, "p.parquet", b""), "cannot be read as Parquet"),
    (
        "two-in-zip",
        lambda t: _zip(t, "t.zip", {"a.csv": b"a\n1", "b.csv": b"a\n1"}),
        "holds 2 files",
    ),
    ("xlsx", lambda t: _write(t, "x.xlsx", b"x"), "unknown file type"),
]


@pytest.mark.parametrize(
    ("make", "message"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES]
)
def test_unreadable_files_are_source_errors(tmp_path, make, message):
    """Each way a file is unreadable is one SourceError line naming the file."""
    path = make(tmp_path)
    with pytest.raises(SourceError, match=message) as info:
        read_table_file(path)
    assert str(path.name) in str(info.value) and "\n" not in str(info.value)


def test_parquet_without_rows_is_a_source_error(tmp_path):
    """A Parquet file with columns but no rows is refused, naming the columns."""
    p = tmp_path / "n.parquet"
    pd.DataFrame({"store": pd.Series([], dtype=int)}).to_parquet(p)
    with pytest.raises(SourceError, match=r"has no rows \(columns: \['store'\]\)"):
        read_table_file(p)


def test_header_check_finds_a_wrong_column_without_reading_the_file(tmp_path):
    """The long source's mapped columns are checked from the header alone."""
    p = _write(tmp_path, "w.csv", "store,dept,date,revenue\n1,1,2012-01-06,x\n")
    s = _settings(tmp_path, data={"source": "long", "path": str(p)})
    with pytest.raises(SourceError, match=r"missing column\(s\) \['sales'\].*'revenue'"):
        check_source_files(s.data)


def test_walmart_folder_checks(tmp_path):
    """A missing or wrong Walmart folder fails naming --path; the real fixture passes."""
    s = _settings(tmp_path, data={"source": "walmart", "path": str(WALMART_MINI)})
    check_source_files(s.data)
    wrong = _settings(tmp_path, data={"source": "walmart", "path": str(tmp_path)})
    with pytest.raises(SourceNotFound, match="no train.csv"):
        check_source_files(wrong.data)


def test_walmart_duplicate_feature_rows_are_named(tmp_path):
    """Repeated (Store, Date) rows in features.csv fail naming the file, not a MergeError."""
    import shutil

    folder = tmp_path / "w"
    shutil.copytree(WALMART_MINI, folder)
    lines = (folder / "features.csv").read_bytes().splitlines(keepends=True)
    (folder / "features.csv").write_bytes(b"".join([*lines, lines[1]]))
    with pytest.raises(SourceError, match="walmart features file: 1 repeated rows"):
        load_walmart(folder)


def test_sql_missing_table_is_a_source_error(tmp_path):
    """A table that is not in the database is named, with the (redacted) URL."""
    import sqlite3

    from salesflow.data.sources import load_sql

    db = tmp_path / "s.db"
    sqlite3.connect(db).execute("create table other (x int)").connection.commit()
    with pytest.raises(SourceError, match="table 'sales' .*does not exist"):
        load_sql(f"sqlite:///{db}", table="sales")


# --- champion compatibility -----------------------------------------------------------


def test_champion_with_other_keys_and_covariates_is_named(small_data):
    """Expected vs found keys, frequency and covariates are listed, not a KeyError."""
    from salesflow.modelling.model import GlobalForecaster

    model = GlobalForecaster()
    model.keys_, model.freq_ = ["store", "dept"], "W-FRI"
    model.covariates_, model.static_cols_ = [*small_data.covariates, "open"], []
    other = small_data.__class__(
        small_data.history, small_data.future, ["store"], [], [], "D", "long"
    )
    with pytest.raises(ChampionIncompatible) as info:
        check_champion_fits(model, other, "3")
    msg = str(info.value)
    assert "version 3" in msg and "expected ['store', 'dept'], found ['store']" in msg
    assert "expected W-FRI, found D" in msg and "'open'" in msg
    model.covariates_ = list(small_data.covariates)
    check_champion_fits(model, small_data, "3")


# --- retries --------------------------------------------------------------------------


def _task_decorators():
    for path in sorted([*(ROOT / "tasks").glob("*.py"), *(ROOT / "flows").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "task":
                yield path.name, {k.arg: k.value for k in node.keywords}


def test_every_retried_task_retries_only_transient_io():
    """Every @task(retries=...) has retry_condition_fn=retry_transient."""
    retried = [(name, kw) for name, kw in _task_decorators() if "retries" in kw]
    assert retried
    for name, kw in retried:
        fn = kw.get("retry_condition_fn")
        assert getattr(fn, "id", None) == "retry_transient", name


class _State:
    def __init__(self, exc):
        self.exc = exc

    def result(self):
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (SourceError("long-format data: missing column(s) ['sales']"), False),
        (PreflightError("data too short"), False),
        (ConnectionRefusedError("connection refused"), True),
        (RuntimeError("(sqlite3.OperationalError) database is locked"), True),
        (OSError(errno.ENOSPC, "No space left on device"), False),
    ],
)
def test_retry_condition(exc, retried):
    """Source and preflight errors are never retried; refused connections and locks are."""
    assert retry_transient(None, None, _State(exc)) is retried


# --- the CLI's one line ---------------------------------------------------------------


def test_user_error_traceback_is_hidden_from_the_console_only():
    """The console formatter drops a UserError's traceback; other errors keep theirs."""
    from salesflow.commands.cli_errors import _NoUserTracebacks

    fmt = _NoUserTracebacks(logging.Formatter("%(message)s"))
    for exc, shown in ((UserError("bad column"), False), (RuntimeError("bug"), True)):
        try:
            raise exc
        except Exception:
            rec = logging.LogRecord("x", logging.ERROR, "f", 1, "failed", None, sys.exc_info())
        out = fmt.format(rec)
        assert ("Traceback" in out) is shown and out.startswith("failed")
        assert rec.exc_info is not None  # other handlers (Prefect's API log) keep it


def test_disk_full_is_one_line_exit_1(capsys):
    """An ENOSPC anywhere in the chain is said plainly, without a traceback."""
    from salesflow.commands.cli_errors import report

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/w.db")
        except OSError as inner:
            raise RuntimeError("write failed") from inner
    except RuntimeError as exc:
        code = report(exc)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("salesflow: no space left on device writing /data/w.db")


# --- the backtest against a file's dates, before any flow -------------------------------


def test_file_periods_match_the_loaded_data(tmp_path, small_data):
    """The date column alone gives the periods of the loaded history (long and Walmart)."""
    from salesflow.commands.preflight import file_periods
    from salesflow.data.sources import load_sales

    h = small_data.history
    p = tmp_path / "l.csv"
    pd.DataFrame({"store": h["store"], "dept": h["dept"], "date": h["ds"], "sales": h["y"]}).to_csv(
        p, index=False
    )
    for data in (
        _settings(tmp_path, data={"source": "long", "path": str(p)}).data,
        _settings(tmp_path, data={"source": "walmart", "path": str(WALMART_MINI)}).data,
        _settings(tmp_path, data={"source": "long", "path": str(p), "as_of": "2011-06-03"}).data,
    ):
        assert file_periods(data) == n_periods(load_sales(data))
    assert file_periods(_settings(tmp_path).data) is None  # synthetic: nothing to read


def test_cli_check_finds_a_short_file_before_the_flow(tmp_path, small_data):
    """With data_span (the CLI) a file too short for the backtest fails at once; the flows'
    own check waits for the validated data."""
    from salesflow.commands.preflight import check_before_run

    h = small_data.history
    p = tmp_path / "short.csv"
    frame = pd.DataFrame({"store": h["store"], "dept": h["dept"], "date": h["ds"], "sales": h["y"]})
    frame[frame["date"] < "2011-01-01"].to_csv(p, index=False)
    s = _settings(tmp_path, data={"source": "long", "path": str(p)})
    check_before_run(s, "train")
    check_before_run(s, "forecast", data_span=True)
    with pytest.raises(PreflightError, match="data too short for the backtest: 48 periods"):
        check_before_run(s, "train", data_span=True)
