"""The floor for a forecast write: a raw psycopg binary ``COPY`` into a plain table.

Shared by ``bench_warehouse.py`` and ``bench_batch_cycle.py``. The rows are converted the
way ``write_forecasts`` converts them (``salesflow.sqlconvert``) and written with
``write_row`` into a table with the forecasts table's columns but no key or index; with
``keyed=True`` into a table with the forecasts table's primary key and index (the floor
for any write that keeps the key: PostgreSQL then maintains two btrees per row).
"""

from __future__ import annotations

import time
from typing import Any


def raw_copy_seconds(engine: Any, frame: Any, table: str, keyed: bool = False) -> float:
    """Seconds to convert and COPY ``frame``'s rows into a new plain table ``table``
    (created here; the caller drops it); ``keyed``: a table with the key and index."""
    import pandas as pd
    import sqlalchemy as sa

    from salesflow.storage import sqlconvert
    from salesflow.storage import warehouse as wh

    frame = frame.assign(created_at=pd.Timestamp.now(tz="UTC"))
    for col in ("store", "dept"):  # as write_forecasts fills them from series_keys
        if col not in frame:
            frame[col] = None
    ddl = wh.forecasts_table(table)
    plain = sa.Table(table, sa.MetaData(), *(sa.Column(c.name, c.type) for c in ddl.columns))
    if keyed:
        plain = ddl
    plain.create(engine)
    cols = [c for c in frame.columns if c in plain.c]
    names = ", ".join(cols)
    start = time.perf_counter()
    values = [sqlconvert.convert(frame[c], plain.c[c].type, "postgresql") for c in cols]
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            cur.execute(f"SELECT {names} FROM {table} LIMIT 0")
            oids = [d.type_code for d in cur.description]
            with cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(oids)
                for row in zip(*values, strict=True):
                    copy.write_row(row)
        raw.commit()
    finally:
        raw.close()
    return time.perf_counter() - start
