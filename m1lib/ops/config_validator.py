"""Is this configuration fit for its environment? Every problem at once, each with a remedy.

The validator runs the rule table of :mod:`m1lib.ops.config_rules` on a configuration and
answers a :class:`ConfigReport`: findings (rule, severity, variable, problem, remediation),
sorted worst first, with a verdict per mode. Static rules read the values and local files;
live rules probe the database, Redis, Prefect, M1's API and the TLS certificate, each within
``timeout_s``, all at once on threads. Profiles say which rules apply and how bad each is.

>>> report = validate_config(profile="production", live=False)
>>> print(report.to_text())
>>> sys.exit(report.exit_code(strict=True))

Nothing here prints a secret: rules never put one in a finding, and every output passes through
a mask of the configuration's secret values as a last guard. No Prefect import (the flow wraps it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from pydantic import SecretStr

from m1lib.ops import config_rules  # noqa: F401 - registers every rule
from m1lib.ops.config_rules.base import (
    RULES,
    Context,
    Finding,
    Layer,
    Profile,
    Rule,
    Severity,
    profile_for,
)
from m1lib.ops.config_rules.schema import SECRET_VARIABLES, VARIABLES, settings_from_raw
from m1lib.ops.config_rules.urls import split
from m1lib.settings import ENV_FILE_VARIABLE, Settings, raw_environment

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "RULES",
    "VARIABLES",
    "ConfigReport",
    "Finding",
    "Profile",
    "Rule",
    "Severity",
    "Verdict",
    "live_findings",
    "profile_for",
    "static_findings",
    "validate_config",
]

DEFAULT_TIMEOUT_S: Final = 3.0
MASK: Final = "***"
_MIN_MASKED = 4  # shorter secrets are not substituted (they would mask ordinary words)
_STRICT_FAILS: Final = frozenset({Severity.CRITICAL, Severity.HIGH})
_LENIENT_FAILS: Final = frozenset({Severity.CRITICAL})


@dataclass(frozen=True)
class Verdict:
    """Pass or fail of a report in one mode; ``exit_code`` is the gate's (0 pass, 1 fail)."""

    passed: bool
    exit_code: int
    mode: str  # "strict" | "lenient" | "dry-run"
    failing: int  # findings at a failing severity (in a dry run: that would fail strict)
    summary: str

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "exitCode": self.exit_code,
            "mode": self.mode,
            "failing": self.failing,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class ConfigReport:
    """The validator's answer: findings worst first, what the probes saw, and its verdicts."""

    profile: Profile
    live: bool
    findings: tuple[Finding, ...]
    facts: Mapping[str, str]
    variables_checked: int
    rules_checked: int
    _secrets: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def counts(self) -> dict[Severity, int]:
        tally = Counter(finding.severity for finding in self.findings)
        return {severity: tally.get(severity, 0) for severity in Severity}

    def verdict(self, strict: bool = True, dry_run: bool = False) -> Verdict:
        """strict fails on critical or high, lenient on critical; a dry run never fails."""
        failing_at = _STRICT_FAILS if strict or dry_run else _LENIENT_FAILS
        failing = sum(1 for finding in self.findings if finding.severity in failing_at)
        counts = ", ".join(f"{n} {severity.value}" for severity, n in self.counts().items())
        rule = "critical or high" if strict or dry_run else "critical"
        if dry_run:
            outcome = "would fail" if failing else "would pass"
            summary = f"DRY RUN ({outcome} strict; a dry run never fails): {counts}"
            return Verdict(True, 0, "dry-run", failing, summary)
        mode = "strict" if strict else "lenient"
        if failing:
            return Verdict(False, 1, mode, failing, f"FAIL ({mode}: fails on {rule}): {counts}")
        return Verdict(True, 0, mode, 0, f"PASS ({mode}: no {rule} finding): {counts}")

    def exit_code(self, strict: bool = True, dry_run: bool = False) -> int:
        return self.verdict(strict, dry_run).exit_code

    def table(self) -> list[dict[str, str]]:
        """One row per finding, for a Prefect table artifact."""
        return [self._masked_row(finding.to_json()) for finding in self.findings]

    def to_json(self, strict: bool = True, dry_run: bool = False) -> dict[str, Any]:
        return {
            "profile": self.profile.value,
            "live": self.live,
            "verdict": self.verdict(strict, dry_run).to_json(),
            "counts": {severity.value: n for severity, n in self.counts().items()},
            "variablesChecked": self.variables_checked,
            "rulesChecked": self.rules_checked,
            "findings": self.table(),
            "facts": {key: self.mask(value) for key, value in self.facts.items()},
        }

    def to_text(self, strict: bool = True, dry_run: bool = False) -> str:
        lines = [self._headline(), self.verdict(strict, dry_run).summary, ""]
        for row in self.table():
            lines.append(f"{row['severity'].upper():8}  {row['rule']}  {row['variable']}")
            lines.append(f"          problem: {row['problem']}")
            lines.append(f"          fix:     {row['remediation']}")
        if not self.findings:
            lines.append("no findings")
        if self.facts:
            lines.append("")
            lines.append(
                "observed: " + ", ".join(f"{k}={v}" for k, v in sorted(self.facts.items()))
            )
        return self.mask("\n".join(lines))

    def to_markdown(self, strict: bool = True, dry_run: bool = False) -> str:
        verdict = self.verdict(strict, dry_run)
        lines = [f"## {self._headline()}", "", f"**{verdict.summary}**", ""]
        if self.findings:
            lines += [
                "| severity | rule | variable | problem | remediation |",
                "|---|---|---|---|---|",
            ]
            for row in self.table():
                cells = [row[key].replace("|", "\\|") for key in _COLUMNS]
                lines.append("| " + " | ".join(cells) + " |")
        else:
            lines.append("No findings.")
        if self.facts:
            lines += [
                "",
                "Observed: " + ", ".join(f"`{k}={v}`" for k, v in sorted(self.facts.items())),
            ]
        return self.mask("\n".join(lines))

    def mask(self, text: str) -> str:
        """``text`` with every secret value of the configuration replaced by ``***``."""
        return _mask(text, self._secrets)

    def _masked_row(self, row: Mapping[str, str]) -> dict[str, str]:
        return {key: self.mask(value) for key, value in row.items()}

    def _headline(self) -> str:
        layers = "static and live checks" if self.live else "static checks only (offline)"
        return (
            f"M1 configuration, profile {self.profile.value}: {layers}; "
            f"{self.variables_checked} variables, {self.rules_checked} rules"
        )


_COLUMNS: Final = ("severity", "rule", "variable", "problem", "remediation")


def _mask(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _masked(findings: Iterable[Finding], secrets: frozenset[str]) -> list[Finding]:
    """Findings with every secret value masked: no consumer of a finding ever sees one."""
    return [
        replace(
            finding,
            problem=_mask(finding.problem, secrets),
            remediation=_mask(finding.remediation, secrets),
        )
        for finding in findings
    ]


def _rules(layer: Layer, profile: Profile) -> list[Rule]:
    return [rule for rule in RULES.values() if rule.layer is layer and rule.severity_in(profile)]


def _run(rules: Iterable[Rule], context: Context) -> list[Finding]:
    return [finding for rule in rules for finding in rule.run(context)]


def _context(
    settings: Settings, profile: Profile | str | None, *, raw: Mapping[str, str] | None = None
) -> Context:
    chosen = Profile(profile) if profile is not None else profile_for(settings)
    return Context(settings, chosen, raw)


def static_findings(
    settings: Settings,
    profile: Profile | str | None = None,
    *,
    raw: Mapping[str, str] | None = None,
) -> list[Finding]:
    """The static rules on ``settings`` (no network). With ``raw``, the schema rules judge the
    raw values too (``settings`` should then be :func:`settings_from_raw`'s)."""
    context = _context(settings, profile, raw=raw)
    if raw is not None:
        _, context.schema_hits, context.unknown = settings_from_raw(raw)
    return _masked(_static(context), _secret_values(settings, raw))


def _static(context: Context) -> list[Finding]:
    return _run(_rules(Layer.STATIC, context.profile), context)


def live_findings(
    settings: Settings,
    profile: Profile | str | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    facts: dict[str, str] | None = None,
) -> list[Finding]:
    """The live rules: every probe at once, each within ``timeout_s``; ``facts`` gets what
    they observed."""
    context = _context(settings, profile)
    context.timeout_s = timeout_s
    findings = _live(context)
    secrets = _secret_values(settings, None)
    if facts is not None:
        facts.update({key: _mask(value, secrets) for key, value in context.facts.items()})
    return _masked(findings, secrets)


def _live(context: Context) -> list[Finding]:
    rules = _rules(Layer.LIVE, context.profile)
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="m1-validate") as pool:
        per_rule = list(pool.map(lambda rule: list(rule.run(context)), rules))
    return [finding for findings in per_rule for finding in findings]


def validate_config(
    settings: Settings | Mapping[str, str] | None = None,
    *,
    profile: Profile | str | None = None,
    live: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    env_file: Path | None = None,
) -> ConfigReport:
    """Validate a configuration: the environment's (None), raw values by name, or ``Settings``.

    Never raises for what the configuration holds: a value the loader would refuse is a
    ``schema.invalid`` finding and the other rules run on the rest.
    """
    raw: dict[str, str] | None = None
    if settings is None:
        raw = raw_environment(env_file)
        if env_file is not None:
            raw.setdefault(ENV_FILE_VARIABLE, str(env_file))
    elif not isinstance(settings, Settings):
        raw = {name.upper(): value for name, value in settings.items()}
    if raw is not None:
        built, schema_hits, unknown = settings_from_raw(raw)
    else:
        assert isinstance(settings, Settings)
        built, schema_hits, unknown = settings, [], []
    context = _context(built, profile, raw=raw)
    context.schema_hits, context.unknown, context.timeout_s = schema_hits, unknown, timeout_s
    secrets = _secret_values(built, raw)
    findings = _masked(_static(context) + (_live(context) if live else []), secrets)
    layers = {Layer.STATIC, Layer.LIVE} if live else {Layer.STATIC}
    return ConfigReport(
        profile=context.profile,
        live=live,
        findings=tuple(sorted(findings, key=lambda f: (f.severity.rank, f.rule, f.variable))),
        facts={key: _mask(value, secrets) for key, value in context.facts.items()},
        variables_checked=len(VARIABLES),
        rules_checked=sum(
            1
            for rule in RULES.values()
            if rule.layer in layers and rule.severity_in(context.profile)
        ),
        _secrets=secrets,
    )


def _secret_values(settings: Settings, raw: Mapping[str, str] | None) -> frozenset[str]:
    """Every secret the configuration holds: secret variables (raw and parsed) and URL passwords."""
    values: set[str] = set()
    for name, doc in VARIABLES.items():
        if not doc.secret:
            continue
        value: Any = settings
        for part in doc.path:
            value = getattr(value, part, None)
        if isinstance(value, SecretStr):
            values.add(value.get_secret_value())
        if raw is not None and name in raw:
            values.add(raw[name])
    for text in list(values):
        parts = split(text)
        if parts is not None and parts.password:
            values.add(parts.password)
    for name in SECRET_VARIABLES:  # entries of a comma-separated secret list, one by one
        if raw is not None and "," in raw.get(name, ""):
            values.update(item.partition("=")[2].strip() for item in raw[name].split(","))
    return frozenset(value for value in values if len(value) >= _MIN_MASKED)
