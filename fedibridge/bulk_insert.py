"""Many rows inserted with the driver directly, inside the caller's transaction (a `Store.write` function):
`INSERT … ON CONFLICT DO NOTHING RETURNING <key>`, the keys that were new.

Why: SQLAlchemy's multi-row insert runs every parameter of every row through its compiled-statement
machinery. For a handled batch of 1,000 comments (24 columns) that was ~25 % of a `--role worker`'s busy time
(py-spy, 2026-12-04), more than writing them cost PostgreSQL. Here each column's own bind processor converts its
values, as the inbox writer does (inbox_sink), so rows are stored exactly as a Core insert stores them
(tests/test_bulk_insert.py compares both), and the statement (shared with inbox_sink) is:

- PostgreSQL: `INSERT … SELECT * FROM unnest($1::type[], …)`: one parameter per column, the same text for any
  number of rows, so asyncpg prepares it once;
- SQLite: `INSERT … VALUES (?, …), (?, …)…`, in chunks within SQLite's limit on bound parameters.

The statement is handed to the driver as text: doc_cache names the table it writes from that text.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection

SQLITE_MAX_PARAMETERS = 32_766  # SQLite ≥ 3.32's SQLITE_MAX_VARIABLE_NUMBER


def insert_new(conn: Connection, table: Table, key: str, rows: list[dict[str, Any]]) -> set[Any]:
    """Insert `rows` (each with the same columns) skipping any that conflict; the `key` values inserted."""
    if not rows:
        return set()
    columns = tuple(rows[0])
    if any(len(row) != len(columns) or row.keys() != rows[0].keys() for row in rows):
        raise ValueError(f"rows for {table.name} must all have the same columns")
    dialect = conn.dialect
    procs = [table.c[name].type.bind_processor(dialect) for name in columns]
    if dialect.name == "postgresql":
        arrays = tuple([row[name] for row in rows] if p is None else [p(row[name]) for row in rows]
                       for name, p in zip(columns, procs, strict=True))
        sql = postgres_insert_sql(table, columns, key)
        return set(conn.exec_driver_sql(sql, arrays).scalars())
    new: set[Any] = set()
    chunk = SQLITE_MAX_PARAMETERS // len(columns)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        params = tuple(row[name] if p is None else p(row[name]) for row in part
                       for name, p in zip(columns, procs, strict=True))
        new.update(conn.exec_driver_sql(sqlite_insert_sql(table.name, columns, key, len(part)), params).scalars())
    return new


@lru_cache(maxsize=32)
def postgres_insert_sql(table: Table, columns: tuple[str, ...], key: str) -> str:
    """`INSERT … SELECT * FROM unnest($1::type[], …) ON CONFLICT DO NOTHING RETURNING key`: one array per column."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    quote = dialect.identifier_preparer.quote
    # The arrays' element types without their lengths: `'…'::varchar(35)` would cut an over-long value where the
    # column's own check refuses it, as the Core insert does.
    kinds = [re.sub(r"\(.*?\)", "", table.c[name].type.compile(dialect=dialect)) for name in columns]
    arrays = ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(kinds, 1))
    return (f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, columns))}) SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT DO NOTHING RETURNING {quote(key)}")


@lru_cache(maxsize=256)  # the inbox sink writes every n up to intake.MAX_BATCH (200)
def sqlite_insert_sql(name: str, columns: tuple[str, ...], key: str, n: int) -> str:
    """`INSERT … VALUES (?, …) × n ON CONFLICT DO NOTHING RETURNING key`."""
    row = "(" + ", ".join("?" * len(columns)) + ")"
    names = ", ".join(_quoted(c) for c in columns)
    return (f"INSERT INTO {_quoted(name)} ({names}) VALUES {', '.join([row] * n)} "
            f"ON CONFLICT DO NOTHING RETURNING {_quoted(key)}")


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
