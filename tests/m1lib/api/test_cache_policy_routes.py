"""GET /api/m1/cache/policy (viewer) and PUT/DELETE /api/m1/cache/policy/{tool} (admin)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from m1lib.ops.cost.policy import RELOAD_COMMAND
from tests.m1lib.api.conftest import Keys, bearer

RULE = {"ttl_s": 60, "staleness_budget_s": 300, "stale_while_revalidate_s": 30}


def test_put_stores_the_rule_with_the_credential_and_tells_the_replicas(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    answer = client.put("/api/m1/cache/policy/weather", json=RULE, headers=bearer(keys.admin))
    assert answer.status_code == 200, answer.text
    stored = answer.json()
    assert (stored["ttl_s"], stored["version"], stored["updated_by"]) == (60, 1, "ops-admin")
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    assert RELOAD_COMMAND in runtime.registry
    shown = client.get("/api/m1/cache/policy", headers=bearer(keys.viewer)).json()
    assert [tool["tool"] for tool in shown["tools"]] == ["weather"]
    assert shown["changes"][0]["applied_by"] == "ops-admin"
    answer = client.delete("/api/m1/cache/policy/weather", headers=bearer(keys.admin))
    assert answer.json() == {"tool": "weather", "removed": True}


def test_put_beyond_the_budget_is_a_400_naming_the_field_and_the_limit(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    body = {**RULE, "ttl_s": 290}
    answer = client.put("/api/m1/cache/policy/weather", json=body, headers=bearer(keys.admin))
    assert answer.status_code == 400
    assert "ttl_s: 290 s plus stale_while_revalidate_s exceeds" in answer.json()["detail"]
    assert "allowed: at most 270 s" in answer.json()["detail"]


def test_put_out_of_range_is_a_422_naming_the_field(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    body = {**RULE, "ttl_s": -1}
    answer = client.put("/api/m1/cache/policy/weather", json=body, headers=bearer(keys.admin))
    assert answer.status_code == 422
    assert "ttl_s" in answer.text


def test_a_viewer_cannot_set_a_rule(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    answer = client.put("/api/m1/cache/policy/weather", json=RULE, headers=bearer(keys.viewer))
    assert answer.status_code == 403
