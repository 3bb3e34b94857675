"""Fixtures shared by the whole suite: real services, per-run isolation, settings factories.

PostgreSQL and Redis on the machine are shared: every run creates its own database and Redis key
prefix and drops them after. With CI=true a missing service fails the tests that need it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import redis as redis_lib
from sqlalchemy import create_engine, text

from m1lib.settings import Settings, get_settings
from tests.services import (
    PG_ADMIN_URL,
    OwnRedis,
    ServiceUnavailable,
    create_database,
    drop_database,
    free_port,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
RUN_ID = uuid.uuid4().hex[:10]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# CI replays the same examples every run (a failure there is reproducible, not luck); developers'
# runs keep drawing new ones. No deadline: wall-clock limits are not assertions we make.
hypothesis.settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
hypothesis.settings.register_profile("dev", deadline=None)
hypothesis.settings.load_profile("ci" if IN_CI else "dev")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server (its own SQLite) for every flow run of this test run.

    It takes ~10 s to start, so only tests that ask for it (through ``run_flow``) start it, once;
    Prefect is imported here, not at the top, so the rest of the suite never pays for it.
    """
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with prefect_test_harness(server_startup_timeout=90):
            yield


@pytest.fixture
def run_flow(prefect_harness: None) -> Callable[..., Any]:
    """``tests.flow_runs.run_flow``, with the Prefect harness started."""
    from tests.flow_runs import run_flow

    return run_flow


@pytest.fixture(autouse=True)
def _clear_m1_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer's M1_* variable may leak into a test; tests pass settings explicitly."""
    for name in list(os.environ):
        if name.startswith("M1_"):
            monkeypatch.delenv(name)


def _unavailable(what: str, error: Exception) -> None:
    message = f"{what} is not reachable: {error}"
    if IN_CI:
        pytest.fail(message + " (CI=true: services are required)")
    pytest.skip(message)


@pytest.fixture
def tmp_data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "m1data"
    path.mkdir()
    return path


@pytest.fixture
def task_settings(tmp_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Tasks and flows read settings the way a flow-run subprocess does: from the environment.

    Points M1_DATA_DIR (so a new SQLite database) at ``tmp_data_dir``; a test may set more M1_*
    variables, then ``get_settings.cache_clear()``.
    """
    monkeypatch.setenv("M1_DATA_DIR", str(tmp_data_dir))
    get_settings.cache_clear()
    yield tmp_data_dir
    get_settings.cache_clear()


@pytest.fixture
def make_settings(tmp_data_dir: Path) -> Callable[..., Settings]:
    """Settings on a temporary data directory, SQLite, no Redis unless told otherwise."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_data_dir, "_env_file": None}
        values.update(overrides)
        return Settings(**values)

    return factory


@contextmanager
def _own_database(name: str) -> Iterator[str]:
    """Create database ``name`` on the shared PostgreSQL, yield its URL, drop it after."""
    try:
        url = create_database(name)
    except ServiceUnavailable as error:
        _unavailable("PostgreSQL at 127.0.0.1:5432", error)
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this run's own, dropped at the end."""
    with _own_database(f"m1_test_{RUN_ID}") as url:
        yield url


@pytest.fixture(scope="session")
def deployment_pg_url(pg_url: str) -> Iterator[str]:
    """A database of its own for a long-lived deployment under test (the live `m1 up`).

    Two deployments never share a database: a replica applies every command of its database's
    control channel, so one left running beside other tests would apply (and ack) theirs.
    """
    with _own_database(f"m1_test_{RUN_ID}_deployment") as url:
        yield url


@pytest.fixture
def fresh_pg_url(pg_url: str) -> Iterator[str]:
    """An empty PostgreSQL database for one test (for migrations up and down)."""
    with _own_database(f"m1_test_{RUN_ID}_{uuid.uuid4().hex[:6]}") as url:
        yield url


@pytest.fixture
def unborn_pg_url(pg_url: str) -> Iterator[str]:
    """The URL of a PostgreSQL database of this test's own that does not exist yet (staging setup
    creates it); dropped after, whoever created it."""
    name = f"m1_staging_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def pg_database_exists(name: str) -> bool:
    admin = create_engine(PG_ADMIN_URL)
    try:
        with admin.connect() as connection:
            found = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
    finally:
        admin.dispose()
    return found is not None


@pytest.fixture(scope="session")
def shared_redis_url() -> str:
    client = redis_lib.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis_lib.RedisError as error:
        _unavailable("Redis at 127.0.0.1:6379", error)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(shared_redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted after."""
    prefix = f"m1test:{RUN_ID}:{uuid.uuid4().hex[:6]}"
    yield prefix
    client = redis_lib.Redis.from_url(shared_redis_url)
    for found in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(found)
    client.close()


def subscribers(url: str, channel: str) -> int:
    """How many clients the Redis at ``url`` counts on ``channel`` (0 when it does not answer)."""
    client = redis_lib.Redis.from_url(url, socket_timeout=1)
    try:
        return int(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0))
    except redis_lib.RedisError:
        return 0
    finally:
        client.close()


def started_redis(workdir: Path) -> OwnRedis:
    """A started redis-server of the caller's own (tests.services.OwnRedis) in ``workdir``;
    skipped (failed under CI) when the binary is missing."""
    server = OwnRedis(workdir)
    try:
        server.start()
    except ServiceUnavailable as error:
        _unavailable("redis-server", error)
    return server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A redis-server of the test's own that it may kill and restart; killed at the end."""
    server = started_redis(tmp_path)
    yield server
    server.stop()


class OwnPostgres:
    """A PostgreSQL server of the tests' own, on a free port, that asks for a password
    (scram-sha-256): the shared one trusts every local user, so a wrong password shows only here.

    ``initdb`` refuses to run as root, so the server runs as the ``postgres`` user, in a
    directory of its own under /tmp.
    """

    PASSWORD = "m1-test-scram-password"

    def __init__(self) -> None:
        import tempfile

        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="m1-own-pg-"))
        self.data = self.root / "data"

    def url(self, *, password: str | None = None) -> str:
        auth = f"postgres:{password}" if password is not None else "postgres"
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        for binary in ("initdb", "pg_ctl", "runuser"):
            if shutil.which(binary) is None:
                _unavailable(f"{binary} binary", FileNotFoundError(binary))
        password_file = self.root / "pwfile"
        password_file.write_text(self.PASSWORD + "\n")
        shutil.chown(self.root, "postgres")
        shutil.chown(password_file, "postgres")
        self._as_postgres(
            "initdb", "-D", str(self.data), "--auth=scram-sha-256", "--username=postgres",
            f"--pwfile={password_file}", "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=40"
        )
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        try:
            self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def own_postgres() -> Iterator[OwnPostgres]:
    """:class:`OwnPostgres`, started once per session (initdb takes a few seconds)."""
    server = OwnPostgres()
    try:
        server.start()
    except subprocess.CalledProcessError as error:
        shutil.rmtree(server.root, ignore_errors=True)
        _unavailable("a PostgreSQL of the tests' own", RuntimeError(error.stderr))
    yield server
    server.stop()
