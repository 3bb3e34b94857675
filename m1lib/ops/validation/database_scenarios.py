"""Database (5 scenarios): connect, migrations current, a rolled-back round trip, latency, pool.

The round trip writes only into a temporary table inside a transaction that is rolled back, so
it leaves nothing behind on the target, whatever happens.
"""

from __future__ import annotations

import threading
import time
from typing import Final

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from m1lib.ops.validation.scenario import Context, Outcome, Scenario, Status, percentile, timed_ms
from m1lib.ops.validation.target import Profile

__all__ = ["SCENARIOS"]


def _is_sqlite(context: Context) -> bool:
    return context.database.engine.dialect.name == "sqlite"


def connect(context: Context) -> Outcome:
    """A connection opens and answers SELECT 1; SQLite outside ``local`` is a fail."""
    started = time.perf_counter()
    with context.database.connect() as connection:
        connection.execute(text("SELECT 1")).scalar_one()
    ms = (time.perf_counter() - started) * 1000.0
    dialect = context.database.engine.dialect.name
    observed = f"{dialect}, connected in {ms:.1f} ms"
    if dialect == "sqlite" and context.target.profile is Profile.PRODUCTION:
        return Outcome(Status.FAIL, observed, "PostgreSQL", "SQLite serves one machine only")
    if dialect == "sqlite" and context.target.profile is Profile.STAGING:
        return Outcome(Status.WARN, observed, "PostgreSQL", "staging should match production")
    return Outcome(Status.PASS, observed, "connects")


def migrations(context: Context) -> Outcome:
    from m1lib.db import migrate

    current, head = migrate.current_revision(context.database), migrate.head_revision()
    observed = f"at {current or 'nothing'}"
    if current == head:
        return Outcome(Status.PASS, observed, f"head {head}")
    return Outcome(
        Status.FAIL, observed, f"head {head}", "run the database-setup flow or `m1 db upgrade`"
    )


def round_trip(context: Context) -> Outcome:
    """Write a row into a temporary table, read it back, roll back: nothing stays."""
    marker = f"probe-{time.time_ns()}"
    with context.database.connect() as connection:
        transaction = connection.begin()
        try:
            connection.execute(
                text("CREATE TEMPORARY TABLE m1_validation_probe (id INTEGER, note VARCHAR(64))")
            )
            connection.execute(
                text("INSERT INTO m1_validation_probe (id, note) VALUES (1, :note)"),
                {"note": marker},
            )
            read = connection.execute(
                text("SELECT note FROM m1_validation_probe WHERE id = 1")
            ).scalar_one()
        finally:
            transaction.rollback()
        if _is_sqlite(context):  # SQLite keeps a temporary table's creation past a rollback
            connection.execute(text("DROP TABLE IF EXISTS temp.m1_validation_probe"))
            connection.commit()
    if read != marker:
        return Outcome(Status.FAIL, "read a different value", "reads what it wrote")
    return Outcome(Status.PASS, "written, read, rolled back", "reads what it wrote")


def latency(context: Context) -> Outcome:
    slo = context.slo.database
    with context.database.connect() as connection:
        query = text("SELECT 1")
        samples = [
            timed_ms(lambda: connection.execute(query).scalar_one()) for _ in range(slo.samples)
        ]
    return Outcome.graded(
        percentile(samples, 95),
        slo.select_p95_ms,
        context.slo.warn_at,
        unit="ms",
        what=f"p95 of {len(samples)} SELECT 1",
    )


def pool(context: Context) -> Outcome:
    """Every connection the pool may open (size + overflow) checked out at once, then all back."""
    engine = context.database.engine
    if _is_sqlite(context):
        return Outcome(Status.PASS, "SQLite: no pool", "n/a", "a file database has no pool")
    size = context.settings.database.pool_size * 2  # pool_size + max_overflow (make_engine)
    slo = context.slo.database
    barrier = threading.Barrier(size, timeout=slo.pool_checkout_s)
    failures: list[str] = []

    def hold() -> None:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1")).scalar_one()
                barrier.wait()  # every connection open at the same time
        except (threading.BrokenBarrierError, SQLAlchemyError, OSError) as error:
            failures.append(type(error).__name__)  # a thread's error: reported, never lost

    started = time.perf_counter()
    threads = [threading.Thread(target=hold, daemon=True) for _ in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(slo.pool_checkout_s + context.settings.database.connect_timeout_s + 5)
    seconds = time.perf_counter() - started
    left = engine.pool.checkedout()  # type: ignore[attr-defined]
    threshold = f"{size} at once within {slo.pool_checkout_s:g} s, all returned"
    if failures or left:
        detail = ", ".join(sorted(set(failures))) or "none failed"
        return Outcome(
            Status.FAIL,
            f"{size - len(failures)} of {size} held; {left} not returned",
            threshold,
            f"errors: {detail}",
        )
    return Outcome(Status.PASS, f"{size} held in {seconds:.2f} s, all returned", threshold)


SCENARIOS: Final[list[Scenario]] = [
    Scenario("database.connect", "database", "connect", connect),
    Scenario("database.migrations", "database", "migrations current", migrations),
    Scenario("database.round_trip", "database", "write, read, roll back", round_trip),
    Scenario("database.latency", "database", "SELECT 1 latency p95", latency),
    Scenario("database.pool", "database", "pool checkouts", pool),
]
