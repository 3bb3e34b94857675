"""End to end: `m1 up` serves M1's deployments; an operator runs one as the UI would."""

from __future__ import annotations

import json

import httpx
import pytest

from deployments.prefect_yaml import load_deployment_specs
from m1lib.settings import PROJECT_ROOT
from tests.e2e import prefect_api
from tests.e2e.live import LiveM1

pytestmark = pytest.mark.e2e


def test_every_deployment_of_prefect_yaml_is_served(live_m1: LiveM1) -> None:
    served = {d["name"]: d for d in live_m1.deployments()}
    for spec in load_deployment_specs(PROJECT_ROOT / "prefect.yaml"):
        assert spec.name in served
        assert served[spec.name]["description"] == spec.description
        assert set(spec.tags) <= set(served[spec.name]["tags"])


def test_api_is_ready_and_prints_the_admin_key_once(live_m1: LiveM1) -> None:
    assert httpx.get(f"{live_m1.api_url}/health/ready", timeout=5).status_code == 200
    key = live_m1.admin_key()
    assert key is not None
    assert (live_m1.workdir / "data" / "admin_key").read_text().strip() == key
    assert live_m1.output().count(key) == 1


def test_database_setup_runs_from_the_prefect_api_with_its_artifact(live_m1: LiveM1) -> None:
    deployment = prefect_api.deployment_by_name(live_m1.prefect_api_url, "database-setup")
    run_id = prefect_api.run_deployment(live_m1.prefect_api_url, deployment["id"])
    run = prefect_api.wait_for_final_state(live_m1.prefect_api_url, run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    (artifact,) = [a for a in prefect_api.artifacts_of(live_m1.prefect_api_url, run_id)]
    assert artifact["key"] == "database-schema"
    assert artifact["type"] == "table"
    rows = json.loads(artifact["data"]) if isinstance(artifact["data"], str) else artifact["data"]
    tables = {row["table"] for row in rows}
    assert {"replicas", "control_commands", "control_acks", "api_credentials"} <= tables
    assert "postgresql" in artifact["description"]


def test_database_setup_rejects_a_bad_parameter_naming_it(live_m1: LiveM1) -> None:
    deployment = prefect_api.deployment_by_name(live_m1.prefect_api_url, "database-setup")
    response = httpx.post(
        f"{live_m1.prefect_api_url}/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": {"params": {"target_revision": "drop table"}}},
        timeout=10,
    )
    assert response.status_code == 409
    assert "target_revision" in response.text


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
    import time

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
    deadline = time.monotonic() + 30
    while True:
        acks = httpx.get(
            f"{live_m1.api_url}/api/m1/control/commands/{command_id}", headers=headers, timeout=10
        ).json()["acks"]
        if acks:
            break
        assert time.monotonic() < deadline, "the replica never acknowledged the command"
        time.sleep(0.2)
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
    import subprocess
    import sys

    from m1lib.settings import PROJECT_ROOT

    issued = subprocess.run(
        [
            sys.executable,
            "-m",
            "m1lib.cli",
            "tokens",
            "issue",
            "log_agent_run",
            "--scope",
            "write",
            "--subject",
            "agent-7",
        ],
        cwd=PROJECT_ROOT,
        env=live_m1.environment(),
        capture_output=True,
        text=True,
        timeout=60,
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
