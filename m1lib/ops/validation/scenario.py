"""The suite's vocabulary: a scenario, its outcome, the context it runs in, and the runner.

A scenario is one named question about the target (``database.connect``: can M1 connect?) that
answers pass, warn or fail with what it observed and the threshold it held that against. The
runner never raises: a scenario that meets an error is a fail naming the error's class (URL
passwords masked), so one broken dependency shows as the scenarios it breaks, not as a crash.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

import httpx
import redis
from sqlalchemy.exc import SQLAlchemyError

from m1lib.errors import M1Error
from m1lib.settings import Settings, redact_url
from m1lib.vocabulary import VALIDATION_PROBE_TOOL

if TYPE_CHECKING:
    from m1lib.client import ApiClient
    from m1lib.db.session import Database
    from m1lib.ops.validation.slo import Slo
    from m1lib.ops.validation.target import Credentials, ResolvedTarget

__all__ = [
    "PROBE_SOURCE",
    "PROBE_TOOL",
    "Context",
    "Outcome",
    "Scenario",
    "Status",
    "p99",
    "percentile",
    "run_scenarios",
]

logger = logging.getLogger("m1.ops.validation")

PROBE_TOOL: Final = VALIDATION_PROBE_TOOL
"""The marked tool of probe tokens (a built-in read tool guarding nothing)."""
PROBE_SOURCE: Final = "m1-validation-probe"
"""The source of probe events, the subject of probe tokens and the reason of their revocation."""

_MESSAGE_MAX = 300
# what a scenario may meet talking to a dependency: graded as a fail, never a crash
_EXPECTED_ERRORS = (M1Error, redis.RedisError, httpx.HTTPError, SQLAlchemyError, OSError)


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a status, not a password
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        return {"pass": 0, "warn": 1, "fail": 2}[self.value]


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=lambda s: s.rank, default=Status.PASS)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one scenario found: status, the figure observed, the threshold, a line for a person."""

    status: Status
    observed: str
    threshold: str
    message: str = ""

    @classmethod
    def graded(
        cls, value: float, target: float, warn_at: float, *, unit: str, what: str
    ) -> Outcome:
        """``value`` against ``target``: fail above it, warn above ``warn_at`` of it."""
        if value > target:
            status = Status.FAIL
        elif value > target * warn_at:
            status = Status.WARN
        else:
            status = Status.PASS
        return cls(status, f"{value:.1f} {unit}", f"<= {target:g} {unit}", what)


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str  # group.name, stable: reports, tests and runbooks name it
    group: str
    title: str
    run: Callable[[Context], Outcome]


@dataclass(frozen=True, slots=True)
class Result:
    scenario: Scenario
    outcome: Outcome
    duration_ms: float

    def row(self) -> dict[str, Any]:
        return {
            "id": self.scenario.id,
            "group": self.scenario.group,
            "title": self.scenario.title,
            "status": self.outcome.status.value,
            "observed": self.outcome.observed,
            "threshold": self.outcome.threshold,
            "message": self.outcome.message,
            "durationMs": round(self.duration_ms, 1),
        }


@dataclass
class Context:
    """What scenarios share: the target, its secrets, the settings, the SLO and the handles
    opened for it (closed by :meth:`close`)."""

    target: ResolvedTarget
    credentials: Credentials
    settings: Settings
    slo: Slo
    http_timeout_s: float = 5.0
    _api: dict[str, ApiClient] = field(default_factory=dict)
    _database: Database | None = None
    _redis: redis.Redis | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)  # handed between scenarios

    @property
    def admin_key(self) -> str | None:
        key = self.credentials.admin_key
        return key.get_secret_value() if key is not None else None

    def api(self, *, authenticated: bool = True, max_wait_s: float = 10.0) -> ApiClient:
        """An API client with the admin key (or none); one per kind, closed by :meth:`close`."""
        from m1lib.client import ApiClient

        name = f"{authenticated}:{max_wait_s}"
        if name not in self._api:
            key = self.admin_key if authenticated else None
            self._api[name] = ApiClient(
                self.target.api_url, key, timeout_s=self.http_timeout_s, max_wait_s=max_wait_s
            )
        return self._api[name]

    @property
    def database(self) -> Database:
        from m1lib.db.session import Database
        from m1lib.ops.validation.target import with_password

        if self._database is None:
            url = with_password(self.target.database_url, self.credentials.database_password)
            self._database = Database(self.settings, url=url)
        return self._database

    @property
    def redis_url(self) -> str | None:
        from m1lib.ops.validation.target import with_password

        url = self.target.redis_url
        return with_password(url, self.credentials.redis_password) if url else None

    @property
    def redis(self) -> redis.Redis:
        url = self.redis_url
        if url is None:
            raise M1Error("no Redis URL configured")
        if self._redis is None:
            timeout = self.settings.redis.timeout_s
            self._redis = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        return self._redis

    def probe_key(self, name: str) -> str:
        return f"{self.target.redis_prefix}:validation:{name}"

    def close(self) -> None:
        """Run the cleanups (newest first), then close every handle; a cleanup that fails is
        logged, not raised: the report is what matters."""
        for undo in reversed(self.cleanup):
            try:
                undo()
            except _EXPECTED_ERRORS as error:
                logger.warning("validation cleanup failed: %s", error_text(error))
        self.cleanup.clear()
        for client in self._api.values():
            client.close()
        self._api.clear()
        if self._database is not None:
            self._database.dispose()
            self._database = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None


def error_text(error: BaseException) -> str:
    """An error as one line, URL passwords masked; a driver error's text may carry its query's
    parameters, so it shows only its class and the first line."""
    text = (
        f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
    )
    text = redact_url(text)
    return text if len(text) <= _MESSAGE_MAX else text[: _MESSAGE_MAX - 1] + "…"


def run_one(scenario: Scenario, context: Context) -> Result:
    started = time.perf_counter()
    try:
        outcome = scenario.run(context)
    except _EXPECTED_ERRORS as error:
        outcome = Outcome(Status.FAIL, "error", "no error", error_text(error))
    return Result(scenario, outcome, (time.perf_counter() - started) * 1000.0)


def run_scenarios(scenarios: Sequence[Scenario], context: Context) -> list[Result]:
    """Each scenario in order, one at a time (so latencies do not disturb each other)."""
    return [run_one(scenario, context) for scenario in scenarios]


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of at least one sample."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100.0 * len(ordered)) - 1)]


def p99(samples: Sequence[float]) -> float:
    return percentile(samples, 99)


def timed_ms(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000.0


def needs_key(context: Context) -> Outcome | None:
    """The warn of a scenario that needs the admin key when none was given."""
    if context.admin_key is None:
        return Outcome(
            Status.WARN,
            "no admin key",
            "an admin key",
            "skipped: give M1_VALIDATION_ADMIN_KEY (or the Secret block) to run it",
        )
    return None
