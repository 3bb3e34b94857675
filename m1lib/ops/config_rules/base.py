"""The vocabulary of the configuration validator: severities, profiles, findings and the rule table.

A rule is a named check with one severity per profile (none: the rule does not apply there). Its
check function yields :class:`Hit` values (variable, problem, remediation); the rule stamps its id
and the profile's severity on each to make a :class:`Finding`. Rules register themselves with
:func:`static_rule` or :func:`live_rule` in the modules beside this one, so the table in
:data:`RULES` is the whole catalogue (docs/contracts.md lists it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, TypeVar

from m1lib.settings import Environment, Settings

__all__ = [
    "RULES",
    "Context",
    "Finding",
    "Hit",
    "Layer",
    "Profile",
    "Rule",
    "Severity",
    "live_rule",
    "profile_for",
    "static_rule",
]

T = TypeVar("T")


class Severity(StrEnum):
    """How bad a finding is; strict mode fails on critical and high."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for critical up to 3 for low: findings sort worst first by it."""
        return _RANK[self]


_RANK: Final = {Severity.CRITICAL: 0, Severity.HIGH: 1, Severity.MEDIUM: 2, Severity.LOW: 3}
_LETTERS: Final = {
    "C": Severity.CRITICAL,
    "H": Severity.HIGH,
    "M": Severity.MEDIUM,
    "L": Severity.LOW,
}


class Profile(StrEnum):
    """Which rules apply: ``local`` (the embedded default and loopback services: no TLS or
    encryption-in-transit rules), ``staging`` and ``production``."""

    LOCAL = "local"
    STAGING = "staging"
    PRODUCTION = "production"


_PROFILE_OF_ENV: Final = {
    Environment.DEVELOPMENT: Profile.LOCAL,
    Environment.STAGING: Profile.STAGING,
    Environment.PRODUCTION: Profile.PRODUCTION,
}
PROFILES: Final = (Profile.LOCAL, Profile.STAGING, Profile.PRODUCTION)


def profile_for(settings: Settings) -> Profile:
    """The default profile: ``M1_ENV`` development -> local, staging -> staging, and so on."""
    return _PROFILE_OF_ENV[settings.env]


class Layer(StrEnum):
    STATIC = "static"  # the configuration and local files only: what --offline runs
    LIVE = "live"  # connects to what the configuration names


@dataclass(frozen=True)
class Finding:
    """One problem of a configuration: which rule, how bad, which variable, what and how to fix.

    >>> Finding("database.sqlite", Severity.CRITICAL, "M1_DATABASE_URL", "...", "...").to_json()
    """

    rule: str
    severity: Severity
    variable: str
    problem: str
    remediation: str

    def to_json(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "severity": self.severity.value,
            "variable": self.variable,
            "problem": self.problem,
            "remediation": self.remediation,
        }


@dataclass(frozen=True)
class Hit:
    """What a rule's check found; the rule adds its id and severity."""

    variable: str
    problem: str
    remediation: str


@dataclass
class Context:
    """What a check reads: the settings, the profile, the raw values (when validated from the
    environment), the live probes' timeout, and a memo so rules share one probe."""

    settings: Settings
    profile: Profile
    raw: Mapping[str, str] | None = None
    timeout_s: float = 3.0
    schema_hits: list[Hit] = field(default_factory=list)  # values the loader would refuse
    unknown: list[str] = field(default_factory=list)  # M1_* names no setting has
    facts: dict[str, str] = field(default_factory=dict)
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _memo: dict[str, Any] = field(default_factory=dict)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    @property
    def production_like(self) -> bool:
        return self.profile is not Profile.LOCAL

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per validation: several rules read one probe's answer (live rules
        run on threads, so the first caller computes and the others wait for it)."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._memo:
                self._memo[key] = compute()
            value: T = self._memo[key]
        return value


Check = Callable[[Context], Iterable[Hit]]


@dataclass(frozen=True)
class Rule:
    """A named check and its severity per profile (absent: the rule does not apply there)."""

    id: str
    layer: Layer
    title: str
    severities: Mapping[Profile, Severity]
    check: Check

    def severity_in(self, profile: Profile) -> Severity | None:
        return self.severities.get(profile)

    def run(self, context: Context) -> Iterator[Finding]:
        severity = self.severity_in(context.profile)
        if severity is None:
            return
        for hit in self.check(context):
            yield Finding(self.id, severity, hit.variable, hit.problem, hit.remediation)


RULES: dict[str, Rule] = {}
"""Every rule by id, in registration order (module by module)."""


def _severities(spec: str) -> dict[Profile, Severity]:
    """``"-HC"``: no rule locally, high in staging, critical in production."""
    if len(spec) != len(PROFILES):
        raise ValueError(f"severity spec {spec!r}: one letter (C H M L or -) per profile")
    return {
        profile: _LETTERS[letter]
        for profile, letter in zip(PROFILES, spec, strict=True)
        if letter != "-"
    }


def _register(layer: Layer, rule_id: str, spec: str, title: str) -> Callable[[Check], Check]:
    def add(check: Check) -> Check:
        if rule_id in RULES:
            raise ValueError(f"rule {rule_id!r} is registered twice")
        RULES[rule_id] = Rule(rule_id, layer, title, _severities(spec), check)
        return check

    return add


def static_rule(rule_id: str, spec: str, title: str) -> Callable[[Check], Check]:
    """Register a static check; ``spec`` gives the severity in local, staging, production."""
    return _register(Layer.STATIC, rule_id, spec, title)


def live_rule(rule_id: str, spec: str, title: str) -> Callable[[Check], Check]:
    """Register a live check (a probe of what the configuration names)."""
    return _register(Layer.LIVE, rule_id, spec, title)
