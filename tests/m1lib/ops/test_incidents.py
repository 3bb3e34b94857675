"""Incidents: paging newest first, actions, and escalation (webhook to a local server, the alert)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.errors import InputError
from m1lib.metrics import MetricsRuntime
from m1lib.ops import incidents, streaks
from m1lib.ops.report import CheckResult, HealthReport, Status
from m1lib.ops.streaks import HealingPolicy
from m1lib.settings import Settings
from tests.m1lib.test_alerts import alerts, make_default  # noqa: F401 (a fixture)
from tests.waiting import wait_for

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SECRET_PATH = "/hooks/T000-secret-token"


class Hook:
    """A local webhook receiver: records each POSTed JSON body, answers ``status``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 204
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                hook.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


@pytest.fixture
def db(make_settings: Callable[..., Settings]) -> Iterator[Database]:
    database = Database(make_settings())
    migrate.upgrade(database)
    yield database
    database.dispose()


def failing(component: str, at: datetime) -> HealthReport:
    check = CheckResult(component, "probe", Status.UNHEALTHY, 1.0, None, "ms", "down", time=at)
    return HealthReport((check,), time=at)


def test_escalation_posts_the_incident_and_raises_a_critical_alert(
    db: Database,
    hook: Hook,
    make_settings: Callable[..., Settings],
    make_default: Callable[[Settings], MetricsRuntime],  # noqa: F811
) -> None:
    settings = make_settings(alert={"webhook_url": hook.url, "webhook_timeout_s": 5})
    metrics = make_default(settings)
    policy = HealingPolicy(threshold=1, cooldown_s=0, max_attempts=1)
    sent: list[bool] = []

    def escalate(record: incidents.IncidentRecord) -> None:
        sent.append(incidents.escalate(record, settings))

    for index in range(2):  # heal at the 1st failure, escalate at the 2nd
        streaks.record_report(
            db, failing("redis", T0 + timedelta(minutes=index)), policy, escalate=escalate
        )
    assert sent == [True]
    (body,) = hook.bodies
    assert body["type"] == "m1.incident.escalated"
    incident = body["incident"]
    assert (incident["component"], incident["status"]) == ("redis", "escalated")
    assert incident["runbook"] == "docs/runbooks/redis.md"
    assert [a["action"] for a in incident["actions"]] == ["heal", "escalate"]
    rows = wait_for(lambda: alerts(metrics), "the escalation alert in the store", timeout_s=5)
    assert [(row["level"], row["source"]) for row in rows] == [("critical", "m1.healing")]
    assert json.loads(rows[0]["metadata"])["incidentId"] == incident["id"]


@pytest.mark.parametrize("answer", ["http_500", "refused"])
def test_a_failing_webhook_is_logged_masked_and_counted_never_raised(
    db: Database,
    hook: Hook,
    make_settings: Callable[..., Settings],
    make_default: Callable[[Settings], MetricsRuntime],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    answer: str,
) -> None:
    url = hook.url
    if answer == "refused":
        hook.close()
    else:
        hook.status = 500
    settings = make_settings(alert={"webhook_url": url, "webhook_timeout_s": 2})
    make_default(settings)
    (outcome,) = streaks.record_report(
        db, failing("api", T0), HealingPolicy(threshold=1, max_attempts=0), escalate=lambda _r: None
    ).values()
    (record,) = incidents.list_incidents(db).items
    before = incidents.WEBHOOK_FAILURES.value
    with caplog.at_level(logging.INFO, logger="m1.incidents"):
        assert incidents.escalate(record, settings) is False
    assert incidents.WEBHOOK_FAILURES.value == before + 1
    assert "escalation webhook http://127.0.0.1:" in caplog.text
    assert "secret-token" not in caplog.text
    assert outcome.decision.action.value == "escalate"


def test_no_webhook_url_sends_nothing_and_succeeds(make_settings: Callable[..., Settings]) -> None:
    record = incidents.IncidentRecord(
        1, "redis", "k", "t", "escalated", T0, None, T0, None, "docs/runbooks/redis.md", [], {}
    )
    assert incidents.send_webhook(record, make_settings()) is True


def test_listing_pages_newest_first_filters_and_refuses_foreign_cursors(db: Database) -> None:
    policy = HealingPolicy(threshold=1, cooldown_s=0, max_attempts=5)
    for index, component in enumerate(["redis", "api", "redis", "memory", "redis"]):
        at = T0 + timedelta(minutes=2 * index)
        streaks.record_report(db, failing(component, at), policy)
        ok = CheckResult(component, "probe", Status.HEALTHY, 1.0, None, "ms", "ok", time=at)
        streaks.record_report(db, HealthReport((ok,), time=at + timedelta(minutes=1)), policy)
    seen: list[int] = []
    page = incidents.list_incidents(db, limit=2)
    while True:
        seen.extend(item.id for item in page.items)
        if page.next_cursor is None:
            break
        page = incidents.list_incidents(db, limit=2, cursor=page.next_cursor)
    assert len(seen) == 5
    assert seen == sorted(seen, reverse=True)
    redis_only = incidents.list_incidents(db, component="redis", limit=10).items
    assert [item.component for item in redis_only] == ["redis"] * 3
    assert all(item.status == "resolved" for item in redis_only)
    with pytest.raises(InputError, match="cursor"):
        incidents.list_incidents(db, cursor="bm90LWEtY3Vyc29y")
    with pytest.raises(InputError, match="component"):
        incidents.list_incidents(db, component="kettle")
    with pytest.raises(InputError, match="limit"):
        incidents.list_incidents(db, limit=0)


def test_append_action_records_a_remediation_step(db: Database) -> None:
    streaks.record_report(db, failing("memory", T0), HealingPolicy(threshold=1))
    (record,) = incidents.list_incidents(db).items
    after = incidents.append_action(db, record.id, "evict_caches", "verified", "freed 1024 bytes")
    assert after.actions[-1]["action"] == "evict_caches"
    assert after.actions[-1]["outcome"] == "verified"
    with pytest.raises(InputError):
        incidents.append_action(db, 10**9, "x", "y")


def test_every_component_has_a_runbook_page_with_the_three_parts() -> None:
    from m1lib.ops.report import COMPONENTS, runbook
    from m1lib.settings import PROJECT_ROOT

    for component in COMPONENTS:
        page = (PROJECT_ROOT / runbook(component)).read_text()
        for part in (
            "**Symptom.**",
            "**What M1 does by itself.**",
            "**What a person checks next.**",
        ):
            assert part in page, (component, part)


def test_escalation_never_raises_when_the_alert_fails_and_still_posts(
    hook: Hook, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("no runtime")

    monkeypatch.setattr("m1lib.alerts.raise_alert", broken)
    settings = make_settings(alert={"webhook_url": hook.url})
    record = incidents.IncidentRecord(
        3, "redis", "k", "t", "escalated", T0, None, T0, None, "docs/runbooks/redis.md", [], {}
    )
    assert incidents.escalate(record, settings) is False
    assert [body["incident"]["id"] for body in hook.bodies] == [3]
