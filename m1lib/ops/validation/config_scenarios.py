"""Configuration (8 scenarios): thin adapters over the configuration validator's findings.

The rules themselves live in :mod:`m1lib.ops.config_validator` (``m1 validate config``); each
scenario here answers for one group of them, chosen by the variable (or rule) a finding names:
critical or high fails it, medium or low warns, none passes. The admin-credential scenario also asks
the target's database whether an active admin credential exists: without one, admin routes are
closed and nobody can revoke a token through the API.
"""

from __future__ import annotations

from typing import Final

from m1lib.ops.config_rules.base import Finding, Severity
from m1lib.ops.config_validator import validate_config
from m1lib.ops.validation.scenario import Context, Outcome, Scenario, Status, worst
from m1lib.ops.validation.target import Profile
from m1lib.settings import Settings

__all__ = ["SCENARIOS", "config_findings"]

# severity -> what it makes the scenario
_GRADE: Final = {
    Severity.CRITICAL: Status.FAIL,
    Severity.HIGH: Status.FAIL,
    Severity.MEDIUM: Status.WARN,
    Severity.LOW: Status.WARN,
}


def config_findings(settings: Settings, profile: Profile) -> list[Finding]:
    """The validator's static findings for ``settings`` graded as ``profile`` (the live rules are
    the other groups' scenarios here: they probe the target, not this process's settings)."""
    return list(validate_config(settings, profile=profile.value, live=False).findings)


def _grade_group(context: Context, prefixes: tuple[str, ...], threshold: str) -> Outcome:
    """The scenario's answer from the findings whose variable or rule starts with a prefix."""
    if "config_findings" not in context.notes:
        context.notes["config_findings"] = config_findings(context.settings, context.target.profile)
    found: list[Finding] = context.notes["config_findings"]
    mine = [
        f
        for f in found
        if f.variable.upper().startswith(prefixes) or f.rule.lower().startswith(_rules(prefixes))
    ]
    if not mine:
        return Outcome(Status.PASS, "no finding", threshold)
    status = worst(_GRADE[f.severity] for f in mine)
    shown = "; ".join(f"{f.variable}: {f.problem} ({f.severity.value})" for f in mine[:3])
    more = f" (and {len(mine) - 3} more)" if len(mine) > 3 else ""
    return Outcome(status, f"{len(mine)} finding(s)", threshold, shown + more)


def _rules(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """``M1_DATABASE_`` -> ``database``: a rule id named after its group matches too."""
    return tuple(p.removeprefix("M1_").rstrip("_").lower() for p in prefixes)


def _group(name: str, title: str, prefixes: tuple[str, ...], threshold: str) -> Scenario:
    def run(context: Context) -> Outcome:
        return _grade_group(context, prefixes, threshold)

    return Scenario(f"config.{name}", "config", title, run)


def _admin_credential(context: Context) -> Outcome:
    """The validator's credential rules, and an active admin credential in the database."""
    from m1lib import auth

    rules = _grade_group(context, ("M1_API_KEY", "M1_AUTH_"), "an active admin credential")
    active = [
        row
        for row in auth.list_credentials(context.database)
        if row.role == "admin" and row.revoked_at is None
    ]
    live = (
        Outcome(Status.PASS, f"{len(active)} active admin", "an active admin credential")
        if active
        else Outcome(
            Status.FAIL,
            "no active admin credential",
            "an active admin credential",
            "admin routes are closed: create one with `m1 keys create NAME --role admin`",
        )
    )
    status = worst([rules.status, live.status])
    message = "; ".join(m for m in (live.message, rules.message) if m)
    return Outcome(status, live.observed, live.threshold, message)


_GROUPS: Final[list[tuple[str, str, tuple[str, ...], str]]] = [
    ("database", "database URL and engine", ("M1_DATABASE_",), "PostgreSQL in production"),
    ("redis", "Redis URL and timeouts", ("M1_REDIS_",), "Redis in production"),
    ("secrets", "signing secret and keys", ("M1_JWT_", "M1_TOKEN_"), "no weak or generated secret"),
    (
        "revocation",
        "revocation fails closed",
        ("M1_REVOCATION_",),
        "enabled, fail-closed, fresh",
    ),
    ("cors", "CORS origins", ("M1_CORS_",), "explicit origins, no *"),
    (
        "tls",
        "TLS and proxy",
        ("M1_TLS_", "M1_API_PUBLIC_URL", "M1_API_HOST"),
        "https in production",
    ),
    ("rate_limits", "rate limits", ("M1_RATELIMIT_",), "limits set"),
]

SCENARIOS: Final[list[Scenario]] = [
    *[_group(name, title, prefixes, threshold) for name, title, prefixes, threshold in _GROUPS],
    Scenario("config.admin_credential", "config", "admin credential", _admin_credential),
]
"""Eight scenarios; the validator's rules are grouped by the variable each finding names."""
