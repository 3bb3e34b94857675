"""End to end: the production-validation suite against the live local deployment (`m1 up`).

With the ``local`` profile nothing fails: every configuration, database, Redis, API and security
scenario passes; only a latency or performance figure near its SLO on a busy machine may warn. Broken deployments are in
tests/m1lib/ops/test_validation.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e import prefect_api
from tests.e2e.live import LiveM1

pytestmark = pytest.mark.e2e

MUST_PASS = ("config", "database", "redis", "api", "security")


def _table(rows: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{r['status']:4}  {r['id']:28} {r['observed']:36} {r['threshold']}" for r in rows
    )


def _no_fail(answer: dict[str, Any]) -> None:
    rows = answer["scenarios"]
    print("\n" + _table(rows))  # the run's table, for the record (pytest -s)
    assert answer["verdict"] != "fail", _table(rows)
    assert len(rows) >= 25
    for row in rows:  # a latency near its SLO on a busy machine may warn; nothing else
        if row["group"] in MUST_PASS and not row["id"].endswith(".latency"):
            assert row["status"] == "pass", row


def test_m1_validate_production_passes_the_live_local_deployment(live_m1: LiveM1) -> None:
    """Run where `m1 up` runs: its configuration and generated admin key, no flag needed."""
    done = live_m1.cli("validate", "production", "--profile", "local", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    answer = json.loads(done.stdout)
    assert answer["exitStatus"] == 0
    assert answer["target"]["apiUrl"] == live_m1.api_url
    _no_fail(answer)
    streamed = next(r for r in answer["scenarios"] if r["id"] == "api.stream")
    assert float(streamed["observed"].split()[0]) <= 1000.0


def test_the_production_validation_deployment_reports_as_artifacts(live_m1: LiveM1) -> None:
    deployment = prefect_api.deployment_by_name(live_m1.prefect_api_url, "production-validation")
    run_id = prefect_api.run_deployment(
        live_m1.prefect_api_url, deployment.id, {"params": {"profile": "local"}}
    )
    run = prefect_api.wait_for_final_state(live_m1.prefect_api_url, run_id)
    assert run.state is not None
    assert run.state.is_completed(), run.state
    artifacts = {a.key: a for a in prefect_api.artifacts_of(live_m1.prefect_api_url, run_id)}
    assert {"production-validation", "production-validation-summary"} <= set(artifacts)
    table = artifacts["production-validation"]
    rows: list[dict[str, Any]] = json.loads(str(table.data))
    assert table.type == "table"
    assert artifacts["production-validation-summary"].type == "markdown"
    assert not [row for row in rows if row["status"] == "fail"], _table(rows)
