"""Staging provisioning: a pure plan, then idempotent steps that each say what they changed.

`m1 staging setup`, ``scripts/setup-staging.sh`` and the staging-setup flow walk the same steps on
a PostgreSQL and a Redis they are given:

    database          create the staging database when it is missing (through the admin URL)
    migrations        bring its schema to the revision this code expects
    redis             PING, INFO and a write/read/delete under the deployment's key prefix
    env_file          write the env file with a fresh signing secret, mode 0600; an existing
                      file is kept unless ``force`` (new secrets: tokens signed before stop
                      verifying)
    tool_registry     load the tool registry the API will load (built-in + M1_POLICY_TOOLS_FILE):
                      M1's registry is data shipped with the code, so seeding is checking it loads
    admin_credential  create the named admin credential; its key goes to ``deliver_key`` once
                      (the CLI prints it, the flow stores it in a Secret block), never a log
    validator         the configuration validator on the env file's settings, when installed

Each step answers one :class:`Outcome`; a second run on the same inputs answers only
``unchanged``, ``verified`` or ``skipped``: it changes nothing. A step that fails stops the run
(the steps after it answer ``skipped``), since each builds on the ones before.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from m1lib import auth
from m1lib.db import migrate
from m1lib.db.session import Database, normalize_url
from m1lib.errors import InputError, M1Error, UnavailableError
from m1lib.logs import register_secret
from m1lib.ops.config_validator import validate_config
from m1lib.settings import Settings, load_settings, redact_url

__all__ = [
    "STEPS",
    "Outcome",
    "StagingPlan",
    "StagingResult",
    "StepResult",
    "plan_staging",
    "run_validator",
    "setup_staging",
    "verify_api",
]

STEPS = (
    "database",
    "migrations",
    "redis",
    "env_file",
    "tool_registry",
    "admin_credential",
    "validator",
)
# The validator's module (validate-config); imported lazily so staging works without it.
VALIDATOR_PROFILE = "staging"
_SERIOUS = frozenset({"critical", "high"})  # severities named in the validator step's detail
ENV_FILE_MODE = 0o600
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")  # unquoted-safe PostgreSQL identifier
_ENV_LINE = re.compile(r"^(M1_[A-Z0-9_]+)='(.*)'$")
# What the env file must agree on with the inputs before it is kept as it is
_PINNED = ("M1_ENV", "M1_DATABASE_URL", "M1_REDIS_URL", "M1_REDIS_PREFIX")


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    VERIFIED = "verified"
    WOULD_CREATE = "would create"
    WOULD_UPDATE = "would update"
    SKIPPED = "skipped"
    FAILED = "failed"


CHANGES = frozenset({Outcome.CREATED, Outcome.UPDATED})


@dataclass(frozen=True)
class StepResult:
    step: str
    outcome: Outcome
    detail: str  # never a secret
    seconds: float = 0.0

    def row(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class StagingPlan:
    """What a setup run works on; built by :func:`plan_staging`, which checks every input."""

    database_url: str  # the staging database (psycopg driver), password included if given
    admin_url: str  # the same server's maintenance database, where CREATE DATABASE runs
    database_name: str
    redis_url: str
    redis_prefix: str
    env_file: Path
    admin_name: str
    force: bool = False

    def with_password(self, password: str | None) -> StagingPlan:
        """This plan with ``password`` in both database URLs where they carry none (a flow
        reads it from a Secret block inside its task, so it is never a parameter)."""
        if password is None:
            return self

        def fill(url: str) -> str:
            parsed = make_url(url)
            if parsed.password is None:
                parsed = parsed.set(password=password)
            return parsed.render_as_string(hide_password=False)

        return replace(self, database_url=fill(self.database_url), admin_url=fill(self.admin_url))

    def describe(self) -> dict[str, str]:
        """The plan without secrets, for reports."""
        return {
            "database": redact_url(self.database_url),
            "redis": redact_url(self.redis_url),
            "redis_prefix": self.redis_prefix,
            "env_file": str(self.env_file),
            "admin_name": self.admin_name,
        }


@dataclass(frozen=True)
class StagingResult:
    steps: list[StepResult]
    dry_run: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return all(step.outcome is not Outcome.FAILED for step in self.steps)

    @property
    def changed(self) -> list[str]:
        return [step.step for step in self.steps if step.outcome in CHANGES]

    def outcomes(self) -> dict[str, str]:
        return {step.step: step.outcome.value for step in self.steps}


def plan_staging(
    *,
    database_url: str,
    redis_url: str,
    env_file: str | Path,
    admin_url: str | None = None,
    redis_prefix: str = "m1",
    admin_name: str = "staging-admin",
    force: bool = False,
) -> StagingPlan:
    """Check the inputs and derive the rest; pure (no I/O). A password may be in the URLs, in
    PGPASSWORD (psycopg reads it), or added later with :meth:`StagingPlan.with_password`."""
    target = _postgres_url("database_url", database_url)
    name = target.database or ""
    if not _DATABASE_NAME.match(name):
        raise InputError(
            "database_url",
            f"database name {name!r} is not one staging setup creates",
            ["1-63 of a-z 0-9 _, starting with a letter or _"],
        )
    if admin_url is None:
        admin = target.set(database="postgres")
    else:
        admin = _postgres_url("admin_url", admin_url)
        if (admin.host, admin.port) != (target.host, target.port):
            raise InputError(
                "admin_url", "names another server than database_url", ["the same host and port"]
            )
    if not re.match(r"^rediss?://", redis_url):
        raise InputError("redis_url", "is not a Redis URL", ["redis://...", "rediss://..."])
    if not re.match(r"^[A-Za-z0-9_.:-]{1,64}$", redis_prefix):
        raise InputError(
            "redis_prefix", f"{redis_prefix!r} is not a key prefix", ["A-Z a-z 0-9 _ . : -"]
        )
    if not auth.NAME_PATTERN.match(admin_name):
        raise InputError(
            "admin_name", f"{admin_name!r} is not a credential name", ["a-z 0-9 . _ -"]
        )
    rendered = target.render_as_string(hide_password=False)
    for label, value in (("database_url", rendered), ("redis_url", redis_url)):
        if "'" in value or "\n" in value:
            raise InputError(label, "contains a quote or a newline", ["a URL without ' or newline"])
    return StagingPlan(
        database_url=rendered,
        admin_url=admin.render_as_string(hide_password=False),
        database_name=name,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        env_file=Path(env_file),
        admin_name=admin_name,
        force=force,
    )


def _postgres_url(label: str, url: str) -> URL:
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        raise InputError(
            label, "is not a database URL", ["postgresql://user@host:5432/name"]
        ) from None
    if parsed.get_backend_name() != "postgresql":
        raise InputError(
            label, f"{parsed.get_backend_name()!r} is not PostgreSQL", ["postgresql://..."]
        )
    return parsed


# -- the run -------------------------------------------------------------------------------


DeliverKey = Callable[[str, str], str]  # (credential name, key) -> where it went, for the report
Validator = Callable[[Settings], StepResult]


@dataclass
class _Run:
    plan: StagingPlan
    apply: bool
    deliver_key: DeliverKey
    validator: Validator
    results: dict[str, StepResult] = field(default_factory=dict)

    def pending(self, step: str) -> bool:
        """Whether ``step`` would have been created by this dry run (so it cannot be read yet)."""
        found = self.results.get(step)
        return found is not None and found.outcome is Outcome.WOULD_CREATE

    def settings(self) -> Settings:
        """The settings the staging API will run with: the env file's, as written."""
        if self.plan.env_file.exists():
            return load_settings(_env_file=self.plan.env_file)
        return load_settings(
            _env_file=None,
            env="staging",
            database={"url": self.plan.database_url},
            redis={"url": self.plan.redis_url, "prefix": self.plan.redis_prefix},
        )


def setup_staging(
    plan: StagingPlan,
    *,
    apply: bool = True,
    deliver_key: DeliverKey,
    validator: Validator | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> StagingResult:
    """Walk every step; ``apply=False`` only reads and answers what a run would change."""
    run = _Run(plan, apply, deliver_key, validator or run_validator)
    started = clock()
    steps: list[StepResult] = []
    failed = False
    for name in STEPS:
        if failed:
            steps.append(StepResult(name, Outcome.SKIPPED, "a step before it failed"))
            continue
        began = clock()
        try:
            result = _STEP_FUNCTIONS[name](run)
        except M1Error as error:
            result = StepResult(name, Outcome.FAILED, str(error))
        result = StepResult(result.step, result.outcome, result.detail, clock() - began)
        run.results[name] = result
        steps.append(result)
        failed = result.outcome is Outcome.FAILED
    return StagingResult(steps, dry_run=not apply, seconds=clock() - started)


@contextmanager
def _admin_connection(plan: StagingPlan) -> Iterator[Connection]:
    engine = create_engine(
        plan.admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with engine.connect() as connection:
            yield connection
    except DBAPIError as error:
        kind = type(error.orig or error).__name__
        raise UnavailableError(
            f"PostgreSQL at {redact_url(plan.admin_url)} refused or did not answer ({kind}): "
            f"{redact_url(str(error.orig or error)).strip()}"
        ) from error
    finally:
        engine.dispose()


def _database(run: _Run) -> StepResult:
    name = run.plan.database_name
    with _admin_connection(run.plan) as connection:
        found = connection.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        ).first()
        if found is not None:
            return StepResult("database", Outcome.UNCHANGED, f"{name} exists")
        if not run.apply:
            return StepResult("database", Outcome.WOULD_CREATE, f"{name} is missing")
        connection.execute(text(f'CREATE DATABASE "{name}"'))  # name checked by the plan
    return StepResult("database", Outcome.CREATED, f"{name} created")


def _migrations(run: _Run) -> StepResult:
    head = migrate.head_revision()
    if run.pending("database"):
        return StepResult("migrations", Outcome.WOULD_CREATE, f"nothing -> {head}")
    with Database(run.settings(), url=run.plan.database_url) as db:
        before = migrate.current_revision(db)
        if before == head:
            return StepResult("migrations", Outcome.UNCHANGED, f"at {head}")
        if not run.apply:
            would = Outcome.WOULD_CREATE if before is None else Outcome.WOULD_UPDATE
            return StepResult("migrations", would, f"{before or 'nothing'} -> {head}")
        after = migrate.upgrade(db)
    outcome = Outcome.CREATED if before is None else Outcome.UPDATED
    return StepResult("migrations", outcome, f"{before or 'nothing'} -> {after}")


def _redis(run: _Run) -> StepResult:
    client = redis.Redis.from_url(run.plan.redis_url, socket_timeout=3, socket_connect_timeout=3)
    probe = f"{run.plan.redis_prefix}:staging-setup:probe"
    try:
        client.ping()
        version = str(client.info("server").get("redis_version", "?"))
        client.set(probe, b"1", px=10_000)
        readable = client.get(probe) == b"1"
        client.delete(probe)
    except redis.RedisError as error:
        raise UnavailableError(
            f"Redis at {redact_url(run.plan.redis_url)}: {type(error).__name__}: {error}"
        ) from error
    finally:
        client.close()
    if not readable:
        return StepResult("redis", Outcome.FAILED, f"a key written under {probe} read back wrong")
    return StepResult(
        "redis",
        Outcome.VERIFIED,
        f"redis {version}: PING, write, read and delete under {run.plan.redis_prefix}:",
    )


def env_file_text(plan: StagingPlan, jwt_secret: str) -> str:
    """The env file's content: pure, so a test reads what a run writes."""
    values = _pinned_values(plan) | {"M1_JWT_SECRET": jwt_secret}
    lines = [
        "# M1 staging configuration, written by `m1 staging setup`. Holds secrets: mode 0600.",
        "# Rewritten only with --force, which makes new secrets (tokens signed before stop",
        "# verifying). Add settings below (docs/deployment.md); `m1 config show` lists them all.",
        *(f"{name}='{value}'" for name, value in values.items()),
    ]
    return "\n".join(lines) + "\n"


def _pinned_values(plan: StagingPlan) -> dict[str, str]:
    return {
        "M1_ENV": "staging",
        "M1_DATABASE_URL": plan.database_url,
        "M1_REDIS_URL": plan.redis_url,
        "M1_REDIS_PREFIX": plan.redis_prefix,
    }


def read_env_values(path: Path) -> dict[str, str]:
    """The ``M1_*='value'`` lines of an env file this module wrote (others are ignored)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _ENV_LINE.match(line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    return values


def _env_file(run: _Run) -> StepResult:
    import secrets

    path = run.plan.env_file
    if path.exists() and not run.plan.force:
        return _keep_env_file(run, path)
    if not run.apply:
        verb = Outcome.WOULD_UPDATE if path.exists() else Outcome.WOULD_CREATE
        return StepResult("env_file", verb, f"{path} with a new M1_JWT_SECRET")
    secret = secrets.token_urlsafe(48)
    register_secret(secret)
    content = env_file_text(run.plan, secret)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # force: write aside, then replace in one rename
        spare = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        _write_exclusive(spare, content)
        spare.replace(path)
        return StepResult("env_file", Outcome.UPDATED, f"{path} rewritten: new M1_JWT_SECRET")
    _write_exclusive(path, content)
    return StepResult("env_file", Outcome.CREATED, f"{path} (mode 0600) with a new M1_JWT_SECRET")


def write_key_file(path: Path, key: str) -> None:
    """A new admin key into ``path`` (mode 0600), for a setup whose output lands in a log; it
    replaces an older file (that key belonged to an earlier credential)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spare = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _write_exclusive(spare, key + "\n", what="admin_key_file")
    spare.replace(path)


def _write_exclusive(path: Path, content: str, *, what: str = "env_file") -> None:
    """Create ``path`` with mode 0600; refuse one that exists (another run's, or an old key)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, ENV_FILE_MODE)
    except FileExistsError:
        raise InputError(what, f"{path} exists", ["a path that does not exist yet"]) from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)


def _keep_env_file(run: _Run, path: Path) -> StepResult:
    existing = read_env_values(path)
    wanted = _pinned_values(run.plan)
    differ = [name for name in _PINNED if existing.get(name) != wanted[name]]
    if differ:
        raise InputError(
            "env_file",
            f"{path} exists with other values of {', '.join(differ)}",
            ["the same inputs", "--force to rewrite it (new secrets)"],
        )
    if "M1_JWT_SECRET" not in existing:
        raise InputError("env_file", f"{path} has no M1_JWT_SECRET", ["--force to rewrite it"])
    mode = path.stat().st_mode & 0o777
    if mode != ENV_FILE_MODE:
        if not run.apply:
            return StepResult("env_file", Outcome.WOULD_UPDATE, f"mode {mode:o} -> 600")
        path.chmod(ENV_FILE_MODE)
        return StepResult("env_file", Outcome.UPDATED, f"{path} kept; mode {mode:o} -> 600")
    return StepResult("env_file", Outcome.UNCHANGED, f"{path} kept (--force rewrites it)")


def _tool_registry(run: _Run) -> StepResult:
    from m1lib.policy import load_tool_registry

    if run.pending("env_file"):
        tools = load_tool_registry(None)
    else:
        tools = load_tool_registry(run.settings().policy.tools_file)
    return StepResult(
        "tool_registry", Outcome.VERIFIED, f"{len(tools)} tools: {', '.join(sorted(tools))}"
    )


def _admin_credential(run: _Run) -> StepResult:
    name = run.plan.admin_name
    if run.pending("database"):
        return StepResult("admin_credential", Outcome.WOULD_CREATE, f"admin {name!r}")
    with Database(run.settings(), url=run.plan.database_url) as db:
        if run.pending("migrations"):
            existing = None
        else:
            existing = next((c for c in auth.list_credentials(db) if c.name == name), None)
        if existing is not None:
            if existing.revoked_at is not None or existing.role != auth.Role.ADMIN.value:
                state = "revoked" if existing.revoked_at is not None else f"role {existing.role}"
                raise InputError(
                    "admin_name",
                    f"credential {name!r} exists but is {state}",
                    ["another --admin-name"],
                )
            return StepResult(
                "admin_credential",
                Outcome.UNCHANGED,
                f"admin {name!r} exists (created by {existing.created_by}); its key was "
                "handed over when it was made",
            )
        if not run.apply:
            return StepResult("admin_credential", Outcome.WOULD_CREATE, f"admin {name!r}")
        key = auth.create_credential(db, name, auth.Role.ADMIN, created_by="m1 staging setup")
    register_secret(key)
    where = run.deliver_key(name, key)
    return StepResult("admin_credential", Outcome.CREATED, f"admin {name!r}; key {where}")


def _validator(run: _Run) -> StepResult:
    if not run.apply:
        return StepResult("validator", Outcome.SKIPPED, "runs after the changes are applied")
    return run.validator(run.settings())


_STEP_FUNCTIONS: Mapping[str, Callable[[_Run], StepResult]] = {
    "database": _database,
    "migrations": _migrations,
    "redis": _redis,
    "env_file": _env_file,
    "tool_registry": _tool_registry,
    "admin_credential": _admin_credential,
    "validator": _validator,
}


# -- the seams: the configuration validator, and the API ----------------------------------


def run_validator(settings: Settings) -> StepResult:
    """The configuration validator (``m1 validate config``) on ``settings``, profile staging,
    live probes on, as one step's result.

    The gate is lenient (critical findings fail): setup runs before any API of this staging is
    started, so the live probe of the API cannot pass yet; the high findings are named in the
    detail, and ``scripts/setup-staging.sh`` runs ``m1 validate config`` again once its API is
    ready. Reads ``ConfigReport.verdict(strict=False)`` and ``findings`` (rule, severity).
    """
    report = validate_config(settings, profile=VALIDATOR_PROFILE, live=True)
    verdict = report.verdict(strict=False)
    serious = [
        f"{finding.rule} ({finding.severity.value})"
        for finding in report.findings
        if finding.severity.value in _SERIOUS
    ]
    named = f"; {', '.join(serious[:8])}" if serious else ""
    outcome = Outcome.VERIFIED if verdict.passed else Outcome.FAILED
    return StepResult(
        "validator", outcome, f"profile {VALIDATOR_PROFILE}: {verdict.summary}{named}"
    )


def verify_api(
    base_url: str, *, timeout_s: float = 5.0, client: httpx.Client | None = None
) -> StepResult:
    """An API's /health/live and /health/ready, as one step's result: verified when both answer
    200. Touches nothing else and starts nothing."""
    base = base_url.rstrip("/")
    own = client is None
    http = client or httpx.Client(timeout=timeout_s)
    try:
        live = http.get(f"{base}/health/live")
        ready = http.get(f"{base}/health/ready")
    except httpx.HTTPError as error:
        return StepResult("api", Outcome.FAILED, f"{base}: {type(error).__name__}: {error}")
    finally:
        if own:
            http.close()
    if live.status_code == 200 and ready.status_code == 200:
        return StepResult("api", Outcome.VERIFIED, f"{base}: live and ready")
    why = ready.json().get("detail", "") if _is_json(ready) else ready.text[:200]
    return StepResult(
        "api",
        Outcome.FAILED,
        f"{base}: live {live.status_code}, ready {ready.status_code} {why}".strip(),
    )


def _is_json(response: httpx.Response) -> bool:
    return "json" in response.headers.get("content-type", "")
