"""End to end: `m1 up` serves M1's deployments; an operator runs one as the UI would."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import psutil
import pytest

from deployments.prefect_yaml import load_deployment_specs
from tests.e2e import prefect_api
from tests.e2e.live import LiveM1
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_m1_up_run_from_a_directory_outside_the_checkout_keeps_everything_there(
    live_m1: LiveM1,
) -> None:
    """Started in a directory holding only its `.env`: every child read that `.env` (the API
    answers on the port it names) and the one data directory `./.m1` (the API is ready, so it
    found the signing secret the supervisor generated there)."""
    assert httpx.get(f"{live_m1.api_url}/health/ready", timeout=5).status_code == 200
    assert {d.name for d in live_m1.deployments()} >= {s.name for s in load_deployment_specs()}
    assert sorted(path.name for path in live_m1.workdir.iterdir()) == [".env", ".m1"]
    assert {"admin_key", "jwt_secret", "prefect"} <= {p.name for p in live_m1.data_dir.iterdir()}


def test_every_deployment_of_prefect_yaml_is_served(live_m1: LiveM1) -> None:
    served = {d.name: d for d in live_m1.deployments()}
    for spec in load_deployment_specs():
        assert spec.name in served
        assert served[spec.name].description == spec.description
        assert served[spec.name].entrypoint == spec.entrypoint
        assert set(spec.tags) <= set(served[spec.name].tags)


def test_api_is_ready_and_prints_the_admin_key_once(live_m1: LiveM1) -> None:
    assert httpx.get(f"{live_m1.api_url}/health/ready", timeout=5).status_code == 200
    key = live_m1.admin_key()
    assert key is not None
    assert (live_m1.data_dir / "admin_key").read_text().strip() == key
    assert live_m1.output().count(key) == 1


def test_database_setup_runs_from_the_prefect_api_with_its_artifact(live_m1: LiveM1) -> None:
    deployment = prefect_api.deployment_by_name(live_m1.prefect_api_url, "database-setup")
    run_id = prefect_api.run_deployment(live_m1.prefect_api_url, deployment.id)
    run = prefect_api.wait_for_final_state(live_m1.prefect_api_url, run_id)
    assert run.state is not None
    assert run.state.is_completed(), run.state
    (artifact,) = prefect_api.artifacts_of(live_m1.prefect_api_url, run_id)
    assert artifact.key == "database-schema"
    assert artifact.type == "table"
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert isinstance(rows, list)
    tables = {row["table"] for row in rows}
    assert {"replicas", "control_commands", "control_acks", "api_credentials"} <= tables
    assert "postgresql" in (artifact.description or "")


def test_database_setup_rejects_a_bad_parameter_naming_it(live_m1: LiveM1) -> None:
    deployment = prefect_api.deployment_by_name(live_m1.prefect_api_url, "database-setup")
    with pytest.raises(httpx.HTTPStatusError) as refused:
        prefect_api.run_deployment(
            live_m1.prefect_api_url,
            deployment.id,
            {"params": {"target_revision": "drop table"}},
        )
    assert refused.value.response.status_code == 409
    assert "target_revision" in refused.value.response.text


def test_replica_heartbeat_row_is_written(live_m1: LiveM1) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(live_m1.database_url or "")
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, base_url, rss_bytes FROM replicas WHERE base_url = :u"),
                {"u": live_m1.api_url},
            ).all()
    finally:
        engine.dispose()
    assert rows
    assert rows[0].rss_bytes > 0


def test_printed_admin_key_issues_a_command_the_replica_applies(live_m1: LiveM1) -> None:
    key = live_m1.admin_key()
    headers = {"Authorization": f"Bearer {key}"}
    response = httpx.post(
        f"{live_m1.api_url}/api/m1/control/commands",
        json={"name": "cache.evict"},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 202, response.text
    command_id = response.json()["id"]
    assert response.json()["createdBy"] == "admin"
    acks = wait_for(
        lambda: httpx.get(
            f"{live_m1.api_url}/api/m1/control/commands/{command_id}", headers=headers, timeout=10
        ).json()["acks"],
        f"the replica to acknowledge command {command_id}",
    )
    assert acks[0]["ok"] is True
    assert acks[0]["detail"] == "cache cleared"


def test_admin_routes_refuse_requests_without_a_key(live_m1: LiveM1) -> None:
    response = httpx.post(
        f"{live_m1.api_url}/api/m1/control/commands", json={"name": "cache.evict"}, timeout=10
    )
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_token_issued_by_the_cli_is_revoked_over_http_and_introspects_inactive(
    live_m1: LiveM1,
) -> None:
    issued = live_m1.cli(
        "tokens", "issue", "log_agent_run", "--scope", "write", "--subject", "agent-7"
    )
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip().splitlines()[-1].strip()
    headers = {"Authorization": f"Bearer {live_m1.admin_key()}"}
    introspect = f"{live_m1.api_url}/api/m1/tokens/introspect"

    active = httpx.post(introspect, data={"token": token}, headers=headers, timeout=10).json()
    assert active["active"] is True
    assert active["sub"] == "agent-7"

    revoked = httpx.post(
        f"{live_m1.api_url}/api/m1/tokens/revoke",
        data={"token": token, "reason": "e2e: credential leaked"},
        headers=headers,
        timeout=10,
    )
    assert revoked.status_code == 200, revoked.text
    assert httpx.post(introspect, data={"token": token}, headers=headers, timeout=10).json() == {
        "active": False
    }
    status = httpx.get(
        f"{live_m1.api_url}/api/m1/tokens/{active['jti']}/status", headers=headers, timeout=10
    ).json()
    assert status["revoked"] is True
    assert status["enforcedHere"] is True
    assert status["record"]["revokedBy"] == "admin"  # the credential, not a client field
    assert status["record"]["toolName"] == "log_agent_run"


SEED_QUERY = {
    "metric": "policy_decisions",
    "timeRange": "24h",
    "groupBy": ["toolName", "scope"],
    "filters": [{"field": "allowed", "op": "eq", "value": False}],
    "aggregations": ["count", "percentiles"],
}


def test_the_seed_query_answers_with_another_replicas_events(
    live_m1: LiveM1, tmp_path: Path
) -> None:
    """A second replica (this test process) records denied decisions; the live replica reads
    them from the shared Redis stream and answers the seed's query, unchanged, over HTTP."""
    import redis as redis_lib

    from m1lib.metrics import MetricsRuntime
    from m1lib.settings import Settings

    settings = Settings(
        data_dir=tmp_path,
        redis={"url": live_m1.redis_url, "prefix": live_m1.redis_prefix},
        _env_file=None,
    )
    writer = MetricsRuntime(
        settings,
        redis_client=redis_lib.Redis.from_url(live_m1.redis_url or ""),
        replica_id="e2e-writer",
    )
    writer.start()
    try:
        for n in range(30):
            writer.record_event(
                "policy_decisions",
                toolName="web_search",
                scope="write",
                allowed=False,
                reason="insufficient_scope",
                subject=f"agent-{n}",
                checkMs=0.05 + n / 1000,
            )
        assert writer.flush()
    finally:
        writer.close()

    headers = {"Authorization": f"Bearer {live_m1.admin_key()}"}
    url = f"{live_m1.api_url}/api/m1/dashboard/query"

    def web_search_rows() -> list[dict[str, object]]:
        response = httpx.post(url, json=SEED_QUERY, headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        return [r for r in response.json()["rows"] if r["toolName"] == "web_search"]

    rows = wait_for(
        web_search_rows,
        "the live replica to count the 30 events of the other replica",
        until=lambda rows: bool(rows) and rows[0]["count"] == 30,
    )
    assert rows[0]["scope"] == "write"
    assert {"p50", "p95", "p99"} <= set(rows[0])

    bad = httpx.post(
        url, json={**SEED_QUERY, "aggregations": ["count", "p101"]}, headers=headers, timeout=10
    )
    assert bad.status_code in {400, 422}
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert bad.json()["errors"][0]["path"].startswith("/aggregations")
    assert httpx.post(url, json=SEED_QUERY, timeout=10).status_code == 401


def test_the_runner_alone_holds_a_service_key_the_api_accepts(live_m1: LiveM1) -> None:
    """Flow runs inherit the runner's environment: a key of role service for this start and the
    API's URL, which record and query there; the API child has no such key; nothing logs it."""
    from m1lib.client import ApiClient

    def child(module: str) -> psutil.Process:
        (found,) = [p for p in live_m1.descendants() if module in p.cmdline()]
        return found

    runner_env = child("deployments.serve").environ()
    key = runner_env["M1_API_KEY"]
    assert runner_env["M1_API_URL"] == live_m1.api_url
    assert child("m1lib.api").environ().get("M1_API_KEY", "") == ""  # empty, as configured
    assert key not in live_m1.output()
    events = [
        {"metric": "error_alerts", "level": "warning", "source": "runner-key", "message": "m"}
    ]
    with ApiClient(live_m1.api_url, key) as api:
        assert api.record_events(events) == {"accepted": 1, "dropped": 0}
        query = {"metric": "error_alerts", "timeRange": "1h",
                 "filters": [{"field": "source", "op": "eq", "value": "runner-key"}]}  # fmt: skip
        wait_for(lambda: api.query(query)["rows"], "the recorded event in a query")


def test_housekeeping_runs_from_the_prefect_api_and_prunes_only_what_is_past_its_time(
    live_m1: LiveM1,
) -> None:
    """The daily deployment, run by hand: an expired command and a replica gone for 8 days go;
    the live replica's row stays."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from m1lib.db.models import ControlCommand, Replica
    from m1lib.db.session import Database
    from m1lib.settings import Settings

    long_ago = datetime.now(UTC) - timedelta(days=8)
    settings = Settings(_env_file=None, database={"url": live_m1.database_url})
    with Database(settings) as db:
        with db.transaction() as session:
            expired = ControlCommand(
                name="cache.evict", args={}, target=None, created_by="e2e",
                created_at=long_ago, expires_at=long_ago + timedelta(hours=1),
            )  # fmt: skip
            session.add(expired)
            session.add(
                Replica(
                    id="e2e-gone", base_url="http://gone", hostname="h", pid=1,
                    started_at=long_ago, last_seen=long_ago, cache_backend="memory", rss_bytes=0,
                )
            )  # fmt: skip
        deployment = prefect_api.deployment_by_name(live_m1.prefect_api_url, "housekeeping")
        run_id = prefect_api.run_deployment(live_m1.prefect_api_url, deployment.id)
        run = prefect_api.wait_for_final_state(live_m1.prefect_api_url, run_id)
        assert run.state is not None
        assert run.state.is_completed(), run.state
        with db.transaction() as session:
            commands = session.scalars(select(ControlCommand.id)).all()
            replicas = session.scalars(select(Replica.base_url)).all()
    assert expired.id not in commands
    assert set(replicas) >= {live_m1.api_url}
    assert "http://gone" not in replicas
    (artifact,) = prefect_api.artifacts_of(live_m1.prefect_api_url, run_id)
    assert (artifact.key, artifact.type) == ("housekeeping", "table")
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    pruned = {row["table"]: row["rows"] for row in rows}
    assert pruned["control_commands"] >= 1
    assert pruned["replicas"] == 1
