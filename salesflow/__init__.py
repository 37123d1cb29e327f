"""salesflow: retail sales forecasting as Prefect flows.

The package is grouped by lifecycle stage: ``config`` (settings), ``data`` (sources,
validation), ``modelling`` (forecaster, backtest, registry), ``storage`` (the warehouse),
``monitor`` (realized accuracy, drift), ``governance`` (promotion, rollback, audit),
``serving`` (REST API, dashboard) and ``commands`` (the CLI).

The modules used to sit flat in this folder (``salesflow.model``, ``salesflow.settings``,
...). Those paths keep working: champions registered before the move were pickled with
them, so ``import salesflow.modelling.model`` returns the very module ``salesflow.modelling.model``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

_GROUPS = {
    "config": ("settings", "settings_checks", "settings_sections", "identifiers"),
    "data": (
        "canonical",
        "datafiles",
        "long_format",
        "schema",
        "sources",
        "synthetic",
        "validation",
        "validation_report",
    ),
    "modelling": (
        "model",
        "backtest",
        "metrics",
        "training",
        "scoring",
        "registry",
        "report",
        "plots",
    ),
    "storage": (
        "warehouse",
        "forecast_runs",
        "sqlconvert",
        "sqlengine",
        "sqlreplace",
        "sqlstore",
        "locks",
    ),
    "monitor": ("drift", "drift_result", "drift_shift", "drift_windows", "monitoring", "loop"),
    "governance": ("policy", "promotion", "lifecycle", "retraining"),
    "commands": ("cli", "cli_errors", "cli_lifecycle", "cli_status", "status", "preflight"),
}
#: old flat module name -> its path now (``model`` -> ``salesflow.modelling.model``)
MOVED_MODULES = {m: f"{__name__}.{g}.{m}" for g, ms in _GROUPS.items() for m in ms}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolve ``salesflow.<old name>`` to the moved module itself (one module object, so
    pickles, ``isinstance`` and monkeypatching see the same classes and functions)."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        parent, _, name = fullname.rpartition(".")
        if parent != __name__ or name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED_MODULES[spec.name.rpartition(".")[2]])

    def exec_module(self, module: ModuleType) -> None:
        """The moved module has run already."""


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
