"""One verdict from the validation gate run per shard of series (Dask ingestion).

Every check of :func:`salesflow.data.validation.validate_sales` looks at one row (nulls,
types, ranges, dates after today / as-of / the anchor weekday, future bounds) or at one
series (its length, its (series, date) pairs being unique, its steps, its future after its
own last date), and a shard holds whole series: a row or a series fails in its shard exactly
when it fails in the whole panel. So the counts of unexpected rows add up, and a check
without ``mostly`` passes when it passes in every shard. Two checks are not per shard:

- the ones with ``mostly`` (``minimum history``: at most ``max_short_series_share`` of the
  series may be short; ``regular frequency``: at most ``max_gap_share`` of the rows may
  follow a gap) judge a share of the whole panel: their unexpected and checked counts are
  added over the shards and the share is judged once, as GX does
  (``(checked - unexpected) / checked >= mostly``);
- ``history not empty``: the panel has rows when any shard has (each shard holds at least
  one series of the index, so every shard has rows).

Checks that only some shards ran (the future suite runs where a shard has future rows)
merge over those shards. Pure Python: no Great Expectations, no Prefect.
"""

from __future__ import annotations

from dataclasses import replace

from salesflow.data.validation_report import CheckResult, ValidationReport


def merge_reports(reports: list[ValidationReport], sample_rows: int = 5) -> ValidationReport:
    """The shards' reports as one (checks in the order they were planned, rows and series
    added, short series and skipped notes united); at most ``sample_rows`` example rows
    per failed check."""
    if not reports:
        raise ValueError("no validation reports to merge: the panel has no shard")
    groups: dict[tuple[str, str, str | None], list[CheckResult]] = {}
    for report in reports:
        for check in report.checks:
            groups.setdefault((check.name, check.expectation, check.column), []).append(check)
    checks = [_merge_check(parts, sample_rows) for parts in groups.values()]
    return ValidationReport(
        passed=all(c.success for c in checks),
        checks=checks,
        n_rows=sum(r.n_rows for r in reports),
        n_series=sum(r.n_series for r in reports),
        skipped=list(dict.fromkeys(s for r in reports for s in r.skipped)),
        short_series=sorted(i for r in reports for i in r.short_series),
    )


def _merge_check(parts: list[CheckResult], sample_rows: int) -> CheckResult:
    """One check over every shard that ran it (see the module docstring)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    failing = [p for p in parts if not p.success]
    observed = (failing or parts)[0].observed
    if first.expectation == "expect_table_row_count_to_be_between":
        observed = f"{sum(_rows(p) for p in parts)} rows"
    out = replace(first, success=not failing, observed=observed, sample=[])
    counts = [p.unexpected_count for p in parts]
    if any(c is None for c in counts):
        return out
    unexpected = sum(c or 0 for c in counts)
    checked = sum(p.checked or 0 for p in parts)
    out.unexpected_count, out.checked = unexpected, checked
    out.unexpected_percent = 100.0 * unexpected / checked if checked else 0.0
    if first.mostly is not None:
        out.success = not checked or (checked - unexpected) / checked >= first.mostly
    if not out.success:
        out.sample = [row for p in parts for row in p.sample][:sample_rows]
    return out


def _rows(check: CheckResult) -> int:
    """The row count a ``history not empty`` check observed ("123 rows")."""
    try:
        return int(str(check.observed).split()[0])
    except (ValueError, IndexError):
        return 0
