"""The verdict of a drift check (:mod:`salesflow.drift`): per-column scores and the
overall decision, as a Markdown report (Prefect artifact) and a JSON-safe event payload."""

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

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def _ordered(self) -> list[ColumnDrift]:
        def severity(c: ColumnDrift) -> float:
            s = c.score if np.isfinite(c.score) else np.inf
            return s if c.method in P_VALUE_METHODS else -s

        return sorted(self.columns, key=lambda c: (not c.drifted, severity(c)))

    def to_markdown(self) -> str:
        """A report: verdict, rule, then one row per column, drifted and strongest first."""
        verdict = "**drift detected**" if self.detected else "no drift"
        lines = [
            f"### {self.kind.capitalize()} drift: {verdict}",
            "",
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
        }


def _fmt(v: float | None) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.4f}"


def _json_float(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None
