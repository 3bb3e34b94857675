"""GET /api/m1/incidents (viewer, paging) and POST /api/m1/healing/pause|resume (admin, actor)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import get_args

from fastapi.testclient import TestClient

from m1lib.api.routes.healing import ComponentName
from m1lib.ops import streaks
from m1lib.ops.report import COMPONENTS, CheckResult, HealthReport, Status
from m1lib.ops.streaks import Action, HealingPolicy
from tests.m1lib.api.conftest import Keys, bearer

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_the_schema_names_every_component() -> None:
    assert set(get_args(ComponentName)) == set(COMPONENTS)


def _fail(component: str, at: datetime) -> HealthReport:
    check = CheckResult(component, "probe", Status.UNHEALTHY, 1.0, None, "ms", "down", time=at)
    return HealthReport((check,), time=at)


def test_pause_is_recorded_with_the_credential_and_suppresses_healing(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    answer = client.post(
        "/api/m1/healing/pause",
        json={"component": "redis", "reason": "maintenance"},
        headers=bearer(keys.admin),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["overrides"] == [
        {
            "component": "redis",
            "paused": True,
            "by": "ops-admin",
            "at": answer.json()["overrides"][0]["at"],
            "reason": "maintenance",
        }
    ]
    outcome = streaks.record_report(db, _fail("redis", T0), HealingPolicy(threshold=1))
    assert outcome["redis"].decision.action is Action.SUPPRESSED
    listing = client.get("/api/m1/incidents", headers=bearer(keys.viewer)).json()
    assert listing["items"][0]["suppressedBy"] == "ops-admin"
    assert listing["nextCursor"] is None
    resumed = client.post("/api/m1/healing/resume", headers=bearer(keys.admin))  # no body: all
    assert resumed.status_code == 200
    assert [o["paused"] for o in resumed.json()["overrides"]] == [False, False]  # '*' and redis
    assert streaks.paused_by(db, "redis") is None


def test_bad_override_bodies_are_422_naming_the_field(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    for body, field in (({"component": "kettle"}, "component"), ({"reason": "a\x00b"}, "reason"),
                        ({"extra": 1}, "extra")):  # fmt: skip
        answer = client.post("/api/m1/healing/pause", json=body, headers=bearer(keys.admin))
        assert answer.status_code == 422, answer.text
        assert field in answer.text
    assert client.post("/api/m1/healing/pause", headers=bearer(keys.viewer)).status_code == 403


def test_incidents_page_newest_first_and_refuse_foreign_cursors(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    policy = HealingPolicy(threshold=1, cooldown_s=0)
    for index, component in enumerate(["redis", "api", "memory"]):
        at = T0 + timedelta(minutes=index)
        streaks.record_report(db, _fail(component, at), policy)
    first = client.get("/api/m1/incidents?limit=2", headers=bearer(keys.viewer)).json()
    assert [item["component"] for item in first["items"]] == ["memory", "api"]
    second = client.get(
        f"/api/m1/incidents?limit=2&cursor={first['nextCursor']}", headers=bearer(keys.viewer)
    ).json()
    assert [item["component"] for item in second["items"]] == ["redis"]
    assert second["nextCursor"] is None
    only = client.get("/api/m1/incidents?component=api", headers=bearer(keys.viewer)).json()
    assert [item["component"] for item in only["items"]] == ["api"]
    assert only["items"][0]["runbook"] == "docs/runbooks/api.md"
    foreign = client.get("/api/m1/incidents?cursor=bm90LWEtY3Vyc29y", headers=bearer(keys.viewer))
    assert foreign.status_code == 400
    assert "cursor" in foreign.json()["detail"]
    bad = client.get("/api/m1/incidents?component=kettle", headers=bearer(keys.viewer))
    assert bad.status_code == 422


def test_healing_status_shows_streak_pause_last_heal_and_cooldown_left(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    """The same reading as `m1 healing status`: a heal a minute ago under the default 300 s
    cooldown leaves about 240 s; the pause names its credential; unchecked components are 0."""
    client, keys = keyed_client
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    streaks.record_report(
        db, _fail("redis", now - timedelta(minutes=1)), HealingPolicy(threshold=1)
    )
    client.post("/api/m1/healing/pause", json={"component": "api"}, headers=bearer(keys.admin))
    answer = client.get("/api/m1/healing", headers=bearer(keys.viewer))
    assert answer.status_code == 200, answer.text
    found = {item["component"]: item for item in answer.json()["components"]}
    assert list(found) == list(COMPONENTS)
    redis = found["redis"]
    assert (redis["consecutiveFailures"], redis["healsInStreak"], redis["lastStatus"]) == (
        1, 1, "unhealthy"
    )  # fmt: skip
    assert redis["lastHealAt"] is not None
    assert 200 < redis["cooldownLeftS"] <= 240
    assert (redis["paused"], redis["override"]) == (False, None)
    api = found["api"]
    assert api["paused"] is True
    assert (api["override"]["by"], api["override"]["component"]) == ("ops-admin", "api")
    assert (api["consecutiveFailures"], api["cooldownLeftS"], api["lastHealAt"]) == (0, 0, None)
    client.post("/api/m1/healing/pause", headers=bearer(keys.admin))  # every component
    memory = client.get("/api/m1/healing?component=memory", headers=bearer(keys.viewer)).json()
    (only,) = memory["components"]
    assert (only["component"], only["paused"], only["override"]["component"]) == (
        "memory", True, "*"
    )  # fmt: skip
    assert (
        client.get("/api/m1/healing?component=kettle", headers=bearer(keys.viewer)).status_code
        == 422
    )
    assert client.get("/api/m1/healing").status_code == 401
