"""One live `m1 up` for the whole session: starting Prefect costs seconds, so tests share it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from tests.conftest import RUN_ID
from tests.e2e.live import LiveM1


@pytest.fixture(scope="session")
def live_m1(
    tmp_path_factory: pytest.TempPathFactory, deployment_pg_url: str, shared_redis_url: str
) -> Iterator[LiveM1]:
    """`m1 up` on a PostgreSQL database and a Redis prefix of its own (it outlives the e2e tests,
    and its replica applies every command of its database), run from a directory outside the
    checkout that holds only its `.env`."""
    prefix = f"m1test:{RUN_ID}:e2e{uuid.uuid4().hex[:4]}"
    live = LiveM1(
        workdir=Path(tmp_path_factory.mktemp("live-m1")),
        database_url=deployment_pg_url,
        redis_url=shared_redis_url,
        redis_prefix=prefix,
    )
    live.start()
    yield live
    try:
        if live.process is not None:
            assert live.stop() == 0, live.output()[-4000:]
        assert live.alive_descendants() == [], "m1 up left processes behind"
    finally:
        live.kill_everything_left()
        client = redis_lib.Redis.from_url(shared_redis_url)
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
        client.close()
