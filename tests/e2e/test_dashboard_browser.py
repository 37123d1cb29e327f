"""`salesflow dashboard` as a process, driven by Debian's Chromium through Playwright: pick
a series, and the forecast table beside the chart shows that series' warehouse rows.

The screenshot of the page is saved with the test output (its path is printed; keep it
with ``pytest -s`` or find it under pytest's temp dir). Without /usr/bin/chromium the test
is skipped locally and fails in CI (CI=true).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from .procs import REPO_ROOT, Background, Processes, clean_env, free_port, log_tail

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium; skip when missing, unless CI=true (then fail)."""
    if not CHROMIUM.is_file():
        reason = f"{CHROMIUM} is missing: apt-get install chromium"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local dir with a small champion and its forecasts (test env), made in-process."""
    from prefect.testing.utilities import prefect_test_harness

    root = tmp_path_factory.mktemp("dashboard-e2e")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(root))
        mp.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
        with prefect_test_harness(server_startup_timeout=120):
            from flows.batch_forecast import batch_forecast_flow
            from flows.training import training_flow

            training_flow(env="test")
            batch_forecast_flow(env="test")
    return root


@pytest.fixture(scope="module")
def dashboard(local: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``salesflow dashboard --env test`` on a free port; its URL once it answers."""
    procs = Processes()
    port = free_port()
    salesflow = Path(sys.executable).parent / "salesflow"
    log = tmp_path_factory.mktemp("dashboard-log") / "dashboard.log"
    bg = procs.start(
        "dashboard",
        [str(salesflow), "dashboard", "--env", "test", "--port", str(port)],
        env=clean_env(SALESFLOW_PATHS__LOCAL_DIR=str(local)),
        cwd=REPO_ROOT,
        log=log,
        stop_signal=signal.SIGINT,  # Ctrl-C
        grace_s=15,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(bg, url, timeout=90)
    yield url
    bg.stop()
    assert bg.proc.returncode == 0, f"Ctrl-C did not stop it cleanly:\n{log_tail(log)}"


def _wait_healthy(bg: Background, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not bg.alive():
            pytest.fail(f"salesflow dashboard exited:\n{log_tail(bg.log)}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"salesflow dashboard not healthy in {timeout:.0f} s:\n{log_tail(bg.log)}")


def _pick(page, label: str, value: str) -> None:
    """Choose ``value`` in the select box labelled ``label``."""
    box = page.get_by_test_id("stSelectbox").filter(has_text=label)
    box.click()
    page.get_by_role("option", name=value, exact=True).click()


def _table(page) -> pd.DataFrame:
    """The first HTML table (st.table) of the page as text."""
    table = page.get_by_test_id("stTable").first
    head = [th.inner_text().strip() for th in table.locator("thead th").all()]
    rows = [
        [td.inner_text().strip() for td in tr.locator("th, td").all()]
        for tr in table.locator("tbody tr").all()
    ]
    return pd.DataFrame(rows, columns=head[-len(rows[0]) :] if rows else head)


def test_picked_series_shows_its_warehouse_forecast(chromium, local, dashboard, tmp_path):
    """Store 3 / dept 2 in the browser: the table shows its 8 stored forecasts and bounds."""
    from playwright.sync_api import expect, sync_playwright

    from salesflow.storage.warehouse import read_forecasts

    rows = read_forecasts(f"sqlite:///{local}/warehouse.db").query("unique_id == '3/2'")
    rows = rows.sort_values("target_date")
    shot = tmp_path / "dashboard.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium), args=["--no-sandbox"], headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(dashboard)
            expect(page.get_by_test_id("stTable").first).to_be_visible(timeout=60_000)
            _pick(page, "store", "3")
            _pick(page, "dept", "2")
            # the caption above the chart (the chart's own title "series 3/2" matches too)
            caption = page.get_by_text(re.compile(r"^Series 3/2 · forecast origin"))
            expect(caption).to_be_visible(timeout=30_000)
            expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible()
            page.wait_for_timeout(1000)  # let the chart finish drawing for the picture
            shown = _table(page)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"\ndashboard screenshot: {shot}")
    assert list(shown["target_date"]) == list(rows["target_date"].dt.strftime("%Y-%m-%d"))
    for col in ("forecast", "lo_80", "hi_80", "lo_95", "hi_95"):
        got = shown[col].str.replace(",", "").astype(float).to_numpy()
        assert abs(got - rows[col].to_numpy()).max() < 0.006, col
    assert shot.stat().st_size > 10_000
