"""Reading one data file (CSV, ``.csv.gz``, a CSV inside a ``.zip``, Parquet) with every
way it can be unreadable turned into one :class:`~salesflow.canonical.SourceError` line
that names the file and what to fix. Used by :mod:`salesflow.sources` (whole files) and
:mod:`salesflow.preflight` (headers only, before any work)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd

from salesflow.data.canonical import SourceError, SourceNotFound, require_columns

_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.zip", ".zip")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def _existing_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "not found"
        raise SourceNotFound(f"data file {p} {what}: check data.path (--path)")
    if not p.name.lower().endswith(_PARQUET_SUFFIXES + _CSV_SUFFIXES):
        raise SourceError(
            f"{p.name}: unknown file type; use one of {list(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}"
        )
    if p.name.lower().endswith(".zip"):
        _check_zip(p)
    return p


def _check_zip(p: Path) -> None:
    """A zipped source holds exactly one CSV file."""
    try:
        with zipfile.ZipFile(p) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
    except zipfile.BadZipFile as exc:
        raise SourceError(
            f"data file {p} is not a zip archive ({exc}): rename or re-export it"
        ) from None
    if len(names) != 1:
        raise SourceError(f"data file {p} holds {len(names)} files {names[:5]}: zip one CSV only")
    if not names[0].lower().endswith((".csv", ".txt")):
        raise SourceError(f"data file {p} holds {names[0]!r}, not a CSV file: zip the CSV itself")


def read_columns(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """The column names of a data file, reading only its header (or Parquet schema)."""
    p = _existing_file(path)
    try:
        if p.name.lower().endswith(_PARQUET_SUFFIXES):
            import pyarrow.parquet as pq

            return list(pq.read_schema(p).names)
        return list(pd.read_csv(p, encoding=encoding, nrows=0).columns)
    except Exception as exc:  # noqa: BLE001 - every reader failure becomes one clear line
        raise _unreadable(p, encoding, exc) from exc


def require_header(
    path: str | Path, needed: list[str], what: str, encoding: str, names: dict | None = None
) -> None:
    """SourceError naming the ``needed`` columns missing from the file's header (read
    alone); ``names`` renames header columns first (a source's own names)."""
    cols = [(names or {}).get(c, c) for c in read_columns(path, encoding)]
    require_columns(pd.DataFrame(columns=cols), needed, what)


def read_column(path: str | Path, column: str, encoding: str = "utf-8") -> pd.Series:
    """One column of a data file (its other columns are not parsed)."""
    p = _existing_file(path)
    try:
        if p.name.lower().endswith(_PARQUET_SUFFIXES):
            return pd.read_parquet(p, columns=[column])[column]
        return pd.read_csv(p, encoding=encoding, usecols=[column])[column]
    except Exception as exc:  # noqa: BLE001 - every reader failure becomes one clear line
        raise _unreadable(p, encoding, exc) from exc


def read_table_file(
    path: str | Path,
    encoding: str = "utf-8",
    text_columns: list[str] | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Read a CSV (plain, ``.csv.gz`` or one CSV inside a ``.zip``) or a Parquet file.

    ``text_columns`` of a CSV are read as strings (codes such as ``0``/``a`` would else be a
    mix of numbers and text); ``columns``: only these (all present: check the header first).
    Every way the file can be unreadable (missing, empty, not a zip, not text in
    ``encoding``, not Parquet, no rows) is a :class:`SourceError` naming the file.
    """
    p = _existing_file(path)
    try:
        if p.name.lower().endswith(_PARQUET_SUFFIXES):
            frame = pd.read_parquet(p, columns=columns)
        else:
            dtype = dict.fromkeys(text_columns or [], str)
            frame = pd.read_csv(p, encoding=encoding, dtype=dtype, usecols=columns)
    except Exception as exc:  # noqa: BLE001 - every reader failure becomes one clear line
        raise _unreadable(p, encoding, exc) from exc
    if frame.empty:
        raise SourceError(f"data file {p} has no rows (columns: {list(frame.columns)})")
    return frame


def _unreadable(p: Path, encoding: str, exc: Exception) -> SourceError:
    """Why ``p`` could not be read, as one line that says what to fix."""
    if isinstance(exc, UnicodeDecodeError):
        inside = " (inside the zip: is it a binary file?)" if p.suffix.lower() == ".zip" else ""
        return SourceError(
            f"data file {p}{inside} is not {encoding} text: byte {exc.object[exc.start]:#04x} "
            f"at position {exc.start}; set data.long.encoding to the file's encoding "
            "(e.g. latin-1 or cp1252) or convert the file to UTF-8"
        )
    if isinstance(exc, pd.errors.EmptyDataError):
        return SourceError(f"data file {p} is empty: expected a header row and data rows")
    if isinstance(exc, zipfile.BadZipFile):
        return SourceError(f"data file {p} is not a zip archive: {exc}; rename or re-export it")
    if isinstance(exc, LookupError):
        return SourceError(f"data.long.encoding {encoding!r} is not a known encoding: {exc}")
    kind = "Parquet" if p.name.lower().endswith(_PARQUET_SUFFIXES) else "CSV"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return SourceError(f"data file {p} cannot be read as {kind}: {first}")
