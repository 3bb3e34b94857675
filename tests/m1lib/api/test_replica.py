"""A started replica is its process's default: the library calls of a service running inside the
API process decide with the replica's engine, cache in its cache and record into its metrics, not
into private copies with revocation threads of their own."""

from __future__ import annotations

from collections.abc import Callable

import m1lib
from m1lib import process_cache, process_engine
from m1lib.api.replica import ReplicaRuntime
from m1lib.db import migrate
from m1lib.metrics import default_runtime, install_default
from m1lib.settings import Settings


def test_a_started_replica_is_the_default_engine_and_metrics_until_it_closes(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = ReplicaRuntime.from_settings(make_settings(jwt={"secret": "s" * 40}))
    migrate.upgrade(runtime.db)
    runtime.start()
    try:
        assert runtime.policy is not None
        assert process_engine.default_engine() is runtime.policy
        assert default_runtime() is runtime.metrics
        assert process_cache.default_cache() is runtime.cache
        m1lib.cached_call("log_agent_run", "k", lambda: 1)  # recorded into the replica's metrics
        assert runtime.metrics.flush()
        rows = runtime.metrics.run_query(
            {"metric": "cache_operations", "timeRange": "1h", "groupBy": ["toolName", "op"]}
        ).rows
        assert [(r["toolName"], r["op"], r["count"]) for r in rows] == [
            ("log_agent_run", "get", 1), ("log_agent_run", "set", 1)
        ]  # fmt: skip
        token = m1lib.issue_token("log_agent_run", "write", subject="agent-1")
        assert runtime.policy.verify(token, "log_agent_run", "write", subject="agent-1").allowed
    finally:
        runtime.close()
    previous_engine = process_engine.install_engine(None)
    previous_metrics = install_default(None)
    previous_cache = process_cache.install_cache(None)
    assert previous_engine is None, "a closed replica left its engine installed"
    assert previous_metrics is None, "a closed replica left its metrics installed"
    assert previous_cache is None, "a closed replica left its cache installed"
