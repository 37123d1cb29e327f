"""The model lock (salesflow.locks) on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa

from salesflow.storage.locks import LockHeld, acquire_lock, model_lock, read_lock, release_lock
from tests.pg import PG_URL, drop_table, postgres_or_skip

LEASE_S = 600.0


@pytest.fixture()
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


def test_second_holder_fails_fast_naming_the_holder(sqlite_url):
    """While one run holds the lock, another gets LockHeld naming the holder; after the
    release the lock is free again."""
    lease = acquire_lock(sqlite_url, "m", "flow run A, ann@host pid 1", LEASE_S)
    with pytest.raises(LockHeld, match=r"another retrain of model 'm' is running: flow run A"):
        acquire_lock(sqlite_url, "m", "flow run B, bob@host pid 2", LEASE_S)
    assert read_lock(sqlite_url, "m")["holder"] == "flow run A, ann@host pid 1"
    assert release_lock(lease) is True
    assert read_lock(sqlite_url, "m") is None
    release_lock(acquire_lock(sqlite_url, "m", "flow run B, bob@host pid 2", LEASE_S))


def test_locks_are_per_model(sqlite_url):
    """Holding model a's lock does not block model b."""
    with model_lock(sqlite_url, "a", "A", LEASE_S), model_lock(sqlite_url, "b", "B", LEASE_S):
        assert read_lock(sqlite_url, "a")["holder"] == "A"
        assert read_lock(sqlite_url, "b")["holder"] == "B"
    assert read_lock(sqlite_url, "a") is None and read_lock(sqlite_url, "b") is None


def test_expired_lease_of_a_crashed_run_is_taken_over(sqlite_url):
    """A lease past its expiry (its holder crashed) is replaced; the crashed run's late
    release then leaves the new holder's lock alone."""
    crashed = acquire_lock(sqlite_url, "m", "crashed", LEASE_S)
    with sa.create_engine(sqlite_url).begin() as conn:  # age the lease instead of waiting
        conn.exec_driver_sql("UPDATE model_locks SET expires_at = '2000-01-01 00:00:00.000000'")
    fresh = acquire_lock(sqlite_url, "m", "fresh", LEASE_S)
    assert release_lock(crashed) is False
    assert read_lock(sqlite_url, "m")["holder"] == "fresh"
    assert release_lock(fresh) is True


def test_retried_acquire_by_the_same_holder_is_reentrant(sqlite_url):
    """A retried acquire of the same run (same holder) gets the lock it already holds."""
    first = acquire_lock(sqlite_url, "m", "run X", LEASE_S)
    again = acquire_lock(sqlite_url, "m", "run X", LEASE_S)
    assert again.holder == first.holder and read_lock(sqlite_url, "m")["holder"] == "run X"


def test_lock_is_released_when_the_block_fails(sqlite_url):
    """model_lock releases the lock even when the run inside it raises."""
    with pytest.raises(RuntimeError), model_lock(sqlite_url, "m", "A", LEASE_S):
        raise RuntimeError("training failed")
    assert read_lock(sqlite_url, "m") is None


def _race(url: str, table: str, n: int = 4) -> tuple[list[str], list[str]]:
    """``n`` threads take the same model's lock at once; (winners, LockHeld messages)."""
    start, wins, held = threading.Barrier(n), [], []

    def take(i: int) -> None:
        start.wait()
        try:
            acquire_lock(url, "m", f"thread {i}", LEASE_S, table_name=table)
            wins.append(f"thread {i}")
        except LockHeld as exc:
            held.append(str(exc))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wins, held


def test_concurrent_acquires_on_sqlite_have_one_winner(sqlite_url):
    """Of four threads taking the lock at once, exactly one wins; the others are told who."""
    wins, held = _race(sqlite_url, "model_locks")
    assert len(wins) == 1 and len(held) == 3
    assert all(wins[0] in msg for msg in held)


@pytest.mark.postgres
def test_concurrent_acquires_on_postgres_have_one_winner():
    """The same race on PostgreSQL: one winner, the others get LockHeld naming it."""
    postgres_or_skip()
    table = f"locks_{uuid.uuid4().hex[:8]}"
    try:
        wins, held = _race(PG_URL, table)
        assert len(wins) == 1 and len(held) == 3
        assert all(wins[0] in msg for msg in held)
        assert read_lock(PG_URL, "m", table)["holder"] == wins[0]
    finally:
        drop_table(PG_URL, table)
