"""Schemathesis fuzzing of the API's OpenAPI schema on a real champion: every operation,
generated valid and invalid inputs; no 5xx, and every response matches the schema."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from salesflow.serving.api import create_app
from salesflow.serving.champion import ChampionHolder
from tests.test_api import TOKEN_ENV, Served, build_served

# The schema is loaded from the app when this module is collected (schemathesis 4's lazy
# fixture loader does not run on pytest 9), so the app is built here on an empty temp dir;
# the champion is trained into that dir by the module fixture before the first call.
LOCAL = Path(tempfile.mkdtemp(prefix="salesflow-fuzz-")) / "local"
SETTINGS = Served(LOCAL, {}, None, None).settings()
HOLDER = ChampionHolder(SETTINGS)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(SETTINGS, HOLDER))
# Examples per operation: a few dozen keep the run under a minute on 2 busy cores.
MAX_EXAMPLES = int(os.environ.get("SALESFLOW_TEST_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module", autouse=True)
def champion():
    """Train and register the champion in the app's dir, load it; the admin token is set."""
    with pytest.MonkeyPatch.context() as mp:
        build_served(LOCAL)
        mp.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
        mp.setenv(TOKEN_ENV, "fuzz-token")
        assert HOLDER.refresh(), HOLDER.reason
        yield


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case):
    """No generated request gets a 5xx; status, content type and body match the schema,
    and invalid input is rejected."""
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            negative_data_rejection,
        ]
    )
