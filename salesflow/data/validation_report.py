"""What the validation gate reports: each check's result, the whole report (one line per
failure, a markdown table for the Prefect UI) and the error that stops the pipeline.

Kept apart from :mod:`salesflow.validation` (which runs the Great Expectations suites) so
the report can be read, formatted and raised without loading Great Expectations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from salesflow.errors import UserError


@dataclass
class CheckResult:
    """One check of the gate; counts and sample are None/empty for table-level checks."""

    name: str
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: list[dict[str, Any]] = field(default_factory=list)
    unit: str = "rows"
    observed: str | None = None
    checked: int | None = None  # rows (or series) the check looked at: its percent's base
    mostly: float | None = None  # passes while at least this share is as expected

    def describe(self) -> str:
        """One line: ``<check>: <column>: <count> rows (<pct>%) e.g. <sample>``."""
        head = f"{self.name}: {self.column or '-'}: "
        if self.unexpected_count is None:
            return head + (self.observed or "failed")
        pct = self.unexpected_percent or 0.0
        line = head + f"{self.unexpected_count} {self.unit} ({pct:.2f}%)"
        return line + (f" e.g. {_fmt_sample(self.sample)}" if self.sample else "")


@dataclass
class ValidationReport:
    """Outcome of the gate: every check, and the size of the history it looked at."""

    passed: bool
    checks: list[CheckResult]
    n_rows: int
    n_series: int
    skipped: list[str] = field(default_factory=list)
    short_series: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    def summary(self) -> str:
        """One line per failed check (empty when all passed)."""
        return "\n".join(c.describe() for c in self.failed)

    def to_markdown(self) -> str:
        """A markdown table of every check with status, counts and sample offending rows."""
        status = "PASSED" if self.passed else f"FAILED ({len(self.failed)} of {len(self.checks)})"
        lines = [
            f"## Data validation: {status}",
            "",
            f"{self.n_rows:,} rows, {self.n_series:,} series, {len(self.checks)} checks.",
            "",
            "| status | check | column | expectation | unexpected | % | sample |",
            "| --- | --- | --- | --- | ---: | ---: | --- |",
        ]
        for c in self.checks:
            count = c.observed or ""
            if c.unexpected_count is not None:
                count = f"{c.unexpected_count:,} {c.unit}"
            pct = "" if c.unexpected_percent is None else f"{c.unexpected_percent:.2f}"
            cells = [
                "pass" if c.success else "**FAIL**",
                c.name,
                c.column or "",
                f"`{c.expectation}`",
                count,
                pct,
                "" if c.success else _fmt_sample(c.sample, sep="<br>"),
            ]
            lines.append("| " + " | ".join(_md_cell(x) for x in cells) + " |")
        if self.skipped:
            lines += ["", "Skipped: " + "; ".join(self.skipped)]
        return "\n".join(lines) + "\n"


class DataValidationError(UserError, ValueError):
    """Sales data failed the validation gate; ``.report`` holds every check's result. A
    user error: its message is one line (the failed checks joined by '; ')."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        failed = report.failed
        head = (
            f"sales data failed validation: {len(failed)} of {len(report.checks)} checks failed "
            f"({report.n_rows:,} rows, {report.n_series:,} series)"
        )
        body = "".join(f"\n  - {c.describe()}" for c in failed)
        tail = "".join(f"\n  (skipped: {s})" for s in report.skipped)
        super().__init__(head + body + tail)


def _fmt_value(v: Any) -> str:
    if isinstance(v, pd.Timestamp):
        return f"{v:%Y-%m-%d}" if v == v.normalize() else v.isoformat()
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT:
        return "null"
    if isinstance(v, float | np.floating):
        return f"{float(v):g}"
    return str(v)


def _fmt_sample(sample: list[dict[str, Any]], sep: str = "; ") -> str:
    # Quote string values so a number stored as text reads as text.
    def fmt(k: str, v: Any) -> str:
        return f"{k}={v!r}" if k == "value" and isinstance(v, str) else f"{k}={_fmt_value(v)}"

    return sep.join(" ".join(fmt(k, v) for k, v in row.items()) for row in sample)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
