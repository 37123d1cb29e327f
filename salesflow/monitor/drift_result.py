"""The verdict of a drift check (:mod:`salesflow.drift`): per-column scores, how much each
drifted column moved (:mod:`salesflow.drift_shift`) and the overall decision, as a Markdown
report (Prefect artifact; business terms first, test scores after) and a JSON-safe event
payload."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

P_VALUE_METHODS = frozenset({"ks", "anderson"})


@dataclass
class ColumnDrift:
    """One column's verdict; ``score`` is the deciding one of ``scores`` (one per reference)."""

    column: str
    method: str
    threshold: float
    score: float
    drifted: bool
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class ColumnShift:
    """How much a column moved: ``change`` in its units, ``sigma`` in standard deviations of
    the champion's reference window, ``share`` relative to its level (sales); ``moved`` the
    groups (values of the key ``group``, e.g. stores) that moved, of ``n_groups``."""

    column: str
    change: float
    sigma: float | None
    share: float | None
    group: str | None
    moved: list[str] = field(default_factory=list)
    n_groups: int = 0

    def describe(self) -> str:
        """E.g. ``temperature +14.2 (+1.6 σ) in stores 1-4`` or ``sales +38 % in stores 1-4``."""
        if self.share is not None:
            size = f"{self.share:+.0%}".replace("%", " %")
        else:
            size = _signed(self.change)
            if self.sigma is not None:
                size += f" ({self.sigma:+.1f} σ)"
        return f"{self.column} {size} {self.where()}".rstrip()

    def where(self) -> str:
        if self.group is None or not self.moved:
            return ""
        if len(self.moved) == self.n_groups > 1:
            return f"in all {self.n_groups} {self.group}s ({_ranges(self.moved)})"
        if len(self.moved) == 1:
            return f"in {self.group} {self.moved[0]}"
        return f"in {self.group}s {_ranges(self.moved)} (of {self.n_groups})"

    def to_payload(self) -> dict[str, Any]:
        return {
            "change": _json_float(self.change),
            "sigma": None if self.sigma is None else _json_float(self.sigma),
            "share": None if self.share is None else _json_float(self.share),
            "group": self.group,
            "moved": list(self.moved),
            "summary": self.describe(),
        }


@dataclass
class DriftResult:
    """Per-column verdicts and the overall one (``detected``) of one drift check."""

    columns: list[ColumnDrift]
    n_drifted: int
    share_drifted: float
    detected: bool
    reference_rows: int
    current_rows: int
    kind: str
    rule: str = ""
    references: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    shifts: dict[str, ColumnShift] = field(default_factory=dict)
    comparison: str = ""

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def _ordered(self) -> list[ColumnDrift]:
        def severity(c: ColumnDrift) -> float:
            s = c.score if np.isfinite(c.score) else np.inf
            return s if c.method in P_VALUE_METHODS else -s

        return sorted(self.columns, key=lambda c: (not c.drifted, severity(c)))

    def business_lines(self) -> list[str]:
        """What moved, in units / sigma / percent and where, drifted columns first."""
        drifted = [c for c in self._ordered() if c.drifted and c.column in self.shifts]
        if not drifted:
            return []
        lines = [f"**What moved** ({self.comparison}):" if self.comparison else "**What moved**:"]
        lines += [f"- {self.shifts[c.column].describe()}" for c in drifted]
        steady = [c.column for c in self.columns if not c.drifted]
        if steady:
            lines.append(f"- no significant change: {', '.join(steady)}")
        return lines

    def to_markdown(self) -> str:
        """A report: verdict, what moved by how much (business terms), then the rule and one
        row per column (test scores), drifted and strongest first."""
        verdict = "**drift detected**" if self.detected else "no drift"
        business = self.business_lines()
        lines = [
            f"### {self.kind.capitalize()} drift: {verdict}",
            "",
            *business,
            *([""] if business else []),
            f"Rule: {self.rule}.",
            f"{self.n_drifted} of {len(self.columns)} columns drifted "
            f"({self.share_drifted:.0%}); {self.reference_rows} reference and "
            f"{self.current_rows} current rows.",
            "",
            "| column | drifted | score | " + " | ".join(self.references) + " |",
            "| --- | --- | ---: | " + " | ".join("---:" for _ in self.references) + " |",
        ]
        for c in self._ordered():
            legs = " | ".join(_fmt(c.scores.get(r)) for r in self.references)
            lines.append(
                f"| {c.column} | {'yes' if c.drifted else 'no'} | {_fmt(c.score)} | {legs} |"
            )
        if self.notes:
            lines += ["", "Notes:", *(f"- {n}" for n in self.notes)]
        return "\n".join(lines).rstrip() + "\n"

    def to_payload(self) -> dict[str, Any]:
        """JSON-safe summary for an event payload: verdict, counts, drifted columns, scores."""
        return {
            "kind": self.kind,
            "detected": bool(self.detected),
            "n_drifted": int(self.n_drifted),
            "n_columns": len(self.columns),
            "share_drifted": round(float(self.share_drifted), 4),
            "drifted_columns": self.drifted_columns,
            "scores": {c.column: _json_float(c.score) for c in self.columns},
            "method": self.columns[0].method if self.columns else None,
            "threshold": self.columns[0].threshold if self.columns else None,
            "reference_rows": int(self.reference_rows),
            "current_rows": int(self.current_rows),
            "moved": {
                k: v.to_payload() for k, v in self.shifts.items() if k in self.drifted_columns
            },
        }


def _fmt(v: float | None) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.4f}"


def _signed(v: float) -> str:
    """A change with its sign and a precision that suits its size (+26.8, +0.62, +1,234)."""
    if not np.isfinite(v):
        return "n/a"
    a = abs(v)
    return (
        f"{v:+,.0f}"
        if a >= 100
        else f"{v:+.1f}"
        if a >= 10
        else f"{v:+.2f}"
        if a >= 0.1
        else f"{v:+.2g}"
    )


def _ranges(labels: list[str]) -> str:
    """``1, 2, 3, 4, 6`` -> ``1-4, 6`` for integer labels; others joined as they are."""
    if not all(lab.lstrip("-").isdigit() for lab in labels):
        return ", ".join(labels)
    nums = sorted(int(lab) for lab in labels)
    runs: list[list[int]] = [[nums[0], nums[0]]]
    for n in nums[1:]:
        if n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(
        f"{a}" if a == b else f"{a}, {b}" if b == a + 1 else f"{a}-{b}" for a, b in runs
    )


def _json_float(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None
