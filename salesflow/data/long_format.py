"""The generic long format: one row per series x date, mapped to the canonical columns by
``data.long`` (:class:`~salesflow.settings.LongFormatSection`).

Beside the history (a file, or a SQL table) the mapping may name a static-attributes file
(``static_path``, joined on ``static_keys``), a file of the known future (``future_path``:
rows after the history, no target) or a covariates file (``covariates_path``: history and
future covariates in one file). When ``data.path`` is a folder the history is
``history_file`` inside it and relative side-file paths are read inside it too.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.calendar import is_holiday_period
from salesflow.config.settings import LongFormatSection
from salesflow.data.canonical import (
    RESERVED,
    SourceError,
    SourceNotFound,
    canonical_frame,
    holiday_flag,
    no_repeats,
    require_columns,
    to_dates,
)
from salesflow.data.datafiles import read_columns, read_table_file, require_header
from salesflow.data.schema import DATE, HOLIDAY, TARGET, SalesData


@dataclass(frozen=True)
class LongFiles:
    """The files of a long-format source, resolved; ``history`` is None for SQL."""

    history: Path | None
    static: Path | None = None
    future: Path | None = None
    covariates: Path | None = None


def long_files(path: str | Path | None, mapping: LongFormatSection) -> LongFiles:
    """Resolve the history file (``path``, or ``history_file`` inside the folder ``path``)
    and the side files; SourceNotFound naming the setting of a side file that is missing."""
    folder, history = None, None
    if path is not None:
        p = Path(path)
        if mapping.history_file:
            folder, history = _history_in_folder(p, mapping.history_file)
        elif p.is_dir():
            raise SourceError(
                f"data file {p} is a folder, not a file: point data.path (--path) at the "
                "file, set data.long.history_file to the history file inside the folder, or "
                f"give a glob of its files (e.g. {p / '*.csv'}) to read each as one partition"
            )
        else:
            history = p  # a missing file is reported by the reader, naming data.path
    return LongFiles(
        history,
        _side_file(mapping.static_path, "data.long.static_path", folder),
        _side_file(mapping.future_path, "data.long.future_path", folder),
        _side_file(mapping.covariates_path, "data.long.covariates_path", folder),
    )


def _history_in_folder(folder: Path, name: str) -> tuple[Path, Path]:
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "not found"
        raise SourceNotFound(
            f"data folder {folder} {what}: data.long.history_file ({name}) needs data.path "
            "(--path) to be the folder holding it"
        )
    history = folder / name
    if not history.is_file():
        found = sorted(p.name for p in folder.iterdir())[:10]
        raise SourceNotFound(
            f"data.long.history_file {name!r} not found in {folder} (found: {found})"
        )
    return folder, history


def _side_file(value: str | None, setting: str, folder: Path | None) -> Path | None:
    if not value:
        return None
    p = Path(value)
    if folder is not None and not p.is_absolute():
        p = folder / p
    if not p.is_file():
        where = f" (relative paths are read inside data.path {folder})" if folder else ""
        raise SourceNotFound(f"{setting}: file {p} not found{where}")
    return p


def is_glob(path: str | Path | None) -> bool:
    """``data.path`` is a pattern (``*``, ``?``, ``[``): every file it matches is read."""
    return path is not None and glob.has_magic(str(path))


def history_paths(path: str | Path, mapping: LongFormatSection) -> list[Path]:
    """The history files of ``data.path``: the files a glob matches (sorted; each is one
    partition on Dask), else ``[path]``. SourceNotFound when a glob matches no file."""
    if not is_glob(path):
        return [Path(path)]
    if mapping.history_file:
        raise SourceError(
            f"data.path {str(path)!r} is a glob, but data.long.history_file needs a folder: "
            "unset one of them"
        )
    found = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
    if not found:
        raise SourceNotFound(f"no file matches data.path {str(path)!r}: check the pattern")
    return found


# --- which columns each file must hold ------------------------------------------------


def varying_columns(mapping: LongFormatSection) -> list[str]:
    """The time-varying columns: numeric covariates, then categorical ones."""
    return [*mapping.covariates, *mapping.categorical]


def _holiday(mapping: LongFormatSection) -> list[str]:
    return [mapping.holiday] if mapping.holiday else []


def _history_own(mapping: LongFormatSection, files: LongFiles) -> list[str]:
    """Keys, and the covariates and statics not taken from their own files."""
    own = [] if files.covariates else varying_columns(mapping)
    static = [] if files.static else list(mapping.static)
    return [*mapping.key_columns, *own, *static]


def history_columns(mapping: LongFormatSection, files: LongFiles) -> list[str]:
    """Columns the history must hold (covariates/statics come from their files if set)."""
    base = [mapping.date, mapping.target, *_holiday(mapping)]
    return list(dict.fromkeys([*base, *_history_own(mapping, files)]))


def static_columns(mapping: LongFormatSection) -> list[str]:
    return list(dict.fromkeys([*(mapping.static_keys or mapping.key_columns), *mapping.static]))


def future_columns(mapping: LongFormatSection) -> list[str]:
    """Columns the future file must hold; other covariates are optional (carried forward)."""
    base = [*mapping.key_columns, mapping.date, *_holiday(mapping), *mapping.known_ahead]
    return list(dict.fromkeys(base))


def covariate_file_columns(mapping: LongFormatSection) -> list[str]:
    ckeys = mapping.covariate_keys or mapping.key_columns
    return list(dict.fromkeys([*ckeys, mapping.date, *varying_columns(mapping)]))


def text_columns(mapping: LongFormatSection) -> list[str]:
    """Columns read as text: categorical ones and a holiday column holding codes."""
    codes = _holiday(mapping) if mapping.holiday_none is not None else []
    return [*mapping.categorical, *codes]


def check_mapping(mapping: LongFormatSection) -> None:
    """SourceError when mapped names repeat or use a reserved canonical name."""
    names = [*mapping.key_columns, *varying_columns(mapping), *mapping.static]
    clash = sorted({n for n in names if n in RESERVED or names.count(n) > 1})
    if clash:
        raise SourceError(
            f"data.long: keys/covariates/categorical/static {clash} repeat a name or use a "
            f"reserved one {list(RESERVED)}; rename them in the source"
        )


def check_long_files(path: str | Path | None, mapping: LongFormatSection) -> LongFiles:
    """Before reading any data: the files exist and their headers hold the mapped columns
    (every file of a glob)."""
    check_mapping(mapping)
    paths = history_paths(path, mapping) if path is not None else []
    files = long_files(paths[0] if paths else None, mapping)
    enc = mapping.encoding
    histories = paths if is_glob(path) else [files.history] if files.history else []
    for p in histories:
        require_header(p, history_columns(mapping, files), f"long-format file {p}", enc)
    for p, cols, what, _ in _side_specs(files, mapping):
        require_header(p, cols, what, enc)
    return files


def _side_specs(
    files: LongFiles, mapping: LongFormatSection
) -> list[tuple[Path, list[str], str, str]]:
    """(file, columns it must hold, what to call it, keyword of sales_from_long)."""
    specs = [
        (files.static, static_columns(mapping), "static file {} (data.long.static_path)", "static"),
        (files.future, future_columns(mapping), "future file {} (data.long.future_path)", "future"),
        (files.covariates, covariate_file_columns(mapping), "covariates file {}", "covariate"),
    ]
    return [(p, c, what.format(p), f"{kw}_rows") for p, c, what, kw in specs if p is not None]


# --- reading ---------------------------------------------------------------------------


def _read(path: Path, needed: list[str], what: str, mapping: LongFormatSection) -> pd.DataFrame:
    """The ``needed`` columns of a file (plus the future file's optional covariates)."""
    header = read_columns(path, mapping.encoding)
    require_columns(pd.DataFrame(columns=header), needed, what)
    wanted = set(needed) | set(varying_columns(mapping)) | set(_holiday(mapping))
    cols = [c for c in header if c in wanted]
    return read_table_file(path, mapping.encoding, text_columns(mapping), cols)


def read_side_files(files: LongFiles, mapping: LongFormatSection) -> dict[str, pd.DataFrame]:
    """The side files' frames as keyword arguments of :func:`sales_from_long`."""
    return {kw: _read(p, cols, what, mapping) for p, cols, what, kw in _side_specs(files, mapping)}


def load_long(path: str | Path, mapping: LongFormatSection, freq: str = "W-FRI") -> SalesData:
    """A long-format file (CSV, .csv.gz, zipped CSV, Parquet), a folder holding
    ``mapping.history_file``, or a glob of files (their rows concatenated), mapped by
    ``mapping``; text is read in ``mapping.encoding``. See :func:`sales_from_long` for the
    columns."""
    check_mapping(mapping)
    paths = history_paths(path, mapping)
    files = long_files(paths[0], mapping)
    assert files.history is not None
    cols = history_columns(mapping, files)
    if len(paths) == 1:
        raw = _read(files.history, cols, f"long-format file {files.history}", mapping)
    else:
        frames = [_read(p, cols, f"long-format file {p}", mapping) for p in paths]
        raw = pd.concat(frames, ignore_index=True)
    return sales_from_long(raw, mapping, freq, "long", **read_side_files(files, mapping))


# --- mapping frames --------------------------------------------------------------------


def _mapped(
    raw: pd.DataFrame,
    mapping: LongFormatSection,
    cols: list[str],
    keep: list[str],
    what: str,
    freq: str,
) -> pd.DataFrame:
    """``cols`` of ``raw`` with ``ds`` parsed, ``y`` renamed and ``is_holiday`` from the
    holiday column (dropped unless in ``keep``) or, without one, from the calendar."""
    require_columns(raw, cols, what)
    frame = raw[list(dict.fromkeys(cols))].rename(
        columns={mapping.date: DATE, mapping.target: TARGET}
    )
    frame[DATE] = to_dates(frame[DATE], mapping.date, mapping.date_format)
    if mapping.holiday and mapping.holiday in frame.columns:
        flag = holiday_flag(frame[mapping.holiday], mapping.holiday, mapping.holiday_none)
        if mapping.holiday not in keep:
            frame = frame.drop(columns=mapping.holiday)
        frame[HOLIDAY] = flag
    elif not mapping.holiday:
        frame[HOLIDAY] = is_holiday_period(frame[DATE], freq)
    return frame


def _join(
    left: pd.DataFrame, right: pd.DataFrame, on: list[str], what: str, how: str = "left"
) -> pd.DataFrame:
    """Join one row of ``right`` per ``on``; SourceError when the key types differ or no
    row matches at all (e.g. "001" against 1)."""
    try:
        matched = left[on].drop_duplicates().merge(right[on], on=on)
        out = left.merge(right, on=on, how=how, validate="many_to_one")
    except ValueError as exc:
        first = str(exc).split(". ")[0]
        raise SourceError(
            f"cannot join the {what} on {on}: {first}; give the key columns one type in both"
        ) from None
    if len(left) and matched.empty:
        sample = left[on].iloc[0].to_dict()
        theirs = right[on].iloc[0].to_dict() if len(right) else "no rows"
        raise SourceError(f"no row of the {what} matches on {on}: e.g. {sample} vs {theirs}")
    return out


def _static_rows(
    static_raw: pd.DataFrame, mapping: LongFormatSection
) -> tuple[pd.DataFrame, list[str]]:
    skeys = mapping.static_keys or mapping.key_columns
    require_columns(static_raw, static_columns(mapping), "static file (data.long.static_path)")
    rows = static_raw[static_columns(mapping)]
    no_repeats(rows, skeys, "static file (data.long.static_path)")
    return rows, skeys


def _future_rows(
    frame: pd.DataFrame, fut_raw: pd.DataFrame, mapping: LongFormatSection, freq: str
) -> pd.DataFrame:
    """Rows of the future file after the history's last date, with each series' statics.
    Covariates the file lacks are NaN (scoring carries them forward unless known ahead)."""
    varying = varying_columns(mapping)
    optional = [c for c in varying if c in fut_raw.columns]
    what = "future file (data.long.future_path)"
    fut = _mapped(fut_raw, mapping, [*future_columns(mapping), *optional], varying, what, freq)
    for c in varying:
        if c not in fut.columns:
            fut[c] = float("nan")
    no_repeats(fut, [*mapping.key_columns, DATE], what)
    fut = fut[fut[DATE] > frame[DATE].max()]
    keys = mapping.key_columns
    series = frame.drop_duplicates(keys, keep="last")[[*keys, *mapping.static]]
    # Only series with a history: a forecast needs one.
    return _join(fut, series, keys, "future file", how="inner")


def _covariate_rows(cov_raw: pd.DataFrame, mapping: LongFormatSection, freq: str) -> pd.DataFrame:
    """Columns out: covariate keys, ds, [is_holiday], covariates; one row per keys x ds."""
    ckeys = mapping.covariate_keys or mapping.key_columns
    outside = [k for k in ckeys if k not in [*mapping.key_columns, *mapping.static]]
    if outside:
        raise SourceError(f"data.long.covariate_keys {outside} are neither keys nor static")
    holiday = [h for h in _holiday(mapping) if h in cov_raw.columns]
    cols = [*covariate_file_columns(mapping), *holiday]
    keep = [*ckeys, *varying_columns(mapping)]
    cov = _mapped(cov_raw, mapping, cols, keep, "covariates file", freq)
    if not holiday:
        cov = cov.drop(columns=HOLIDAY, errors="ignore")
    no_repeats(cov, [*ckeys, DATE], "covariates file")
    return cov


def _join_covariates(
    frame: pd.DataFrame, cov: pd.DataFrame, mapping: LongFormatSection, freq: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """History with covariates joined on, and future rows after the last target date."""
    ckeys = mapping.covariate_keys or mapping.key_columns
    history = frame.merge(cov.drop(columns=HOLIDAY, errors="ignore"), on=[*ckeys, DATE], how="left")
    series = frame.drop_duplicates(mapping.key_columns, keep="last")[
        [*mapping.key_columns, *mapping.static]
    ]
    future = series.merge(cov[cov[DATE] > frame[DATE].max()], on=ckeys)
    if HOLIDAY not in future.columns:
        future[HOLIDAY] = is_holiday_period(future[DATE], freq)
    return history, future


def sales_from_long(
    raw: pd.DataFrame,
    mapping: LongFormatSection,
    freq: str,
    source: str = "long",
    covariate_rows: pd.DataFrame | None = None,
    static_rows: pd.DataFrame | None = None,
    future_rows: pd.DataFrame | None = None,
) -> SalesData:
    """Map a long-format frame (one row per series x date) to :class:`SalesData`.

    Columns in: ``mapping.key_columns``, ``mapping.date``, ``mapping.target``, optionally
    ``mapping.holiday`` (a flag, or codes with ``holiday_none``; else the calendar for
    ``freq``), the covariates and categorical columns (from ``covariate_rows`` when given,
    whose rows after the last target date become ``future``) and the statics (from
    ``static_rows`` when given). ``future_rows`` after the last target date become
    ``future``. Columns out: the canonical ones.
    """
    check_mapping(mapping)
    files = LongFiles(
        None,
        static=Path() if static_rows is not None else None,
        covariates=Path() if covariate_rows is not None else None,
    )
    cols, keep = history_columns(mapping, files), _history_own(mapping, files)
    frame = _mapped(raw, mapping, cols, keep, "long-format data", freq)
    if static_rows is not None:
        rows, skeys = _static_rows(static_rows, mapping)
        frame = _join(frame, rows, skeys, "static file")
    future = frame.iloc[:0].drop(columns=TARGET)
    if covariate_rows is not None:
        frame, future = _join_covariates(
            frame, _covariate_rows(covariate_rows, mapping, freq), mapping, freq
        )
    elif future_rows is not None:
        future = _future_rows(frame, future_rows, mapping, freq)
    keys, cov = list(mapping.key_columns), list(mapping.covariates)
    static, cat = list(mapping.static), list(mapping.categorical)
    return SalesData(
        history=canonical_frame(frame, keys, cov, static, categorical=cat),
        future=canonical_frame(future, keys, cov, static, target=False, categorical=cat),
        keys=keys,
        covariates=cov,
        static=static,
        freq=freq,
        source=source,
        categorical=cat,
        known_ahead=list(mapping.known_ahead),
        open=mapping.open,
    )
