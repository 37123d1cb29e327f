"""The package's layout: modules grouped by lifecycle stage, old flat import paths kept."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import salesflow

PACKAGE = Path(salesflow.__file__).parent


@pytest.mark.parametrize("old", sorted(salesflow.MOVED_MODULES))
def test_old_module_path_is_the_moved_module(old):
    """``salesflow.<old name>`` is the very module object at its new path."""
    new = salesflow.MOVED_MODULES[old]
    assert importlib.import_module(f"salesflow.{old}") is importlib.import_module(new)


def test_no_flat_modules_left():
    """Only errors.py sits at the top; every other module lives in a stage subpackage."""
    flat = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert flat == ["errors.py"]
    for new in salesflow.MOVED_MODULES.values():
        assert (PACKAGE.parent / (new.replace(".", "/") + ".py")).is_file(), new


def test_object_pickled_under_old_path_loads():
    """A pickle naming ``salesflow.model.GlobalForecaster`` (champions registered before
    the move) loads in a fresh interpreter as the moved class."""
    from salesflow.modelling.model import GlobalForecaster

    blob = pickle.dumps(GlobalForecaster, protocol=0)  # text: the module path is plain bytes
    old = blob.replace(b"salesflow.modelling.model", b"salesflow.model")
    assert old != blob
    code = (
        "import pickle, sys; cls = pickle.loads(sys.stdin.buffer.read()); "
        "print(cls.__module__, cls.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=old, capture_output=True, check=True
    ).stdout.decode()
    assert out.split() == ["salesflow.modelling.model", "GlobalForecaster"]


def test_unknown_flat_name_still_fails():
    """A name that never existed is still an ImportError (the alias covers only moved ones)."""
    with pytest.raises(ImportError):
        importlib.import_module("salesflow.no_such_module")
