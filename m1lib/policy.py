"""The policy engine: which tool calls an approval token allows; every verify checks revocation.

A decision walks, in order: the tool registry (data: the built-in ``m1lib/tools/registry.toml``
plus the operator's ``M1_POLICY_TOOLS_FILE``), the token (:mod:`m1lib.tokens`: signature, type,
key, times, issuer, audience), the approval's tool, scope rank and subject, then revocation through
an injected :class:`RevocationCheck` (in memory, no I/O). Each decision is recorded as a
``policy_decisions`` event through an injected recorder.

Scopes rank ``read < write < execute``. The scope a call needs is the higher of what the caller
asks for and what the tool is registered with, so a caller cannot talk a write tool down to read.
Write and execute always need an approval; read only when the tool is flagged.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol

from m1lib.errors import InputError, SettingsError, TokenRejectedError, UsageError
from m1lib.tokens import TokenCodec
from m1lib.vocabulary import SCOPE_RANK, Reason, Scope

if TYPE_CHECKING:
    from m1lib.settings import Settings

__all__ = [
    "EventRecorder",
    "Introspection",
    "PolicyDecision",
    "PolicyEngine",
    "Reason",
    "RevocationCheck",
    "Scope",
    "Tool",
    "load_tool_registry",
    "no_op_recorder",
]

BUILTIN_TOOLS: Final = "tools/registry.toml"  # inside the m1lib package
_TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,127}$")
_TOOL_KEYS = frozenset({"scope", "requires_approval", "description"})
_BY_RANK: Final = (Scope.READ, Scope.WRITE, Scope.EXECUTE)
_perf_counter = time.perf_counter


class RevocationCheck(Protocol):
    """What the engine asks of revocation on every verify (``RevocationManager`` implements it).

    ``denial`` gets verified claims and answers from memory, without I/O: ``None`` to allow,
    ``Reason.REVOKED`` for a revoked ``jti`` or a matching not-before rule,
    ``Reason.REVOCATION_STATE_STALE`` when this process cannot vouch for its revocation state.
    """

    def denial(self, claims: Mapping[str, Any]) -> Reason | None: ...


class EventRecorder(Protocol):
    """``record_event(metric, /, **fields)``: must neither block nor raise (a bounded queue)."""

    def __call__(self, metric: str, /, **fields: Any) -> None: ...


def no_op_recorder(metric: str, /, **fields: Any) -> None:
    """The recorder until an event store is plugged in: takes the event and drops it."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A registered tool: the scope an approval for it needs, and whether a read needs one."""

    name: str
    scope: Scope
    requires_approval: bool
    description: str = ""


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The answer to one verify. ``scope`` is the scope that was needed (see the module notes);
    ``claims`` are the verified token claims when the token decoded, else None."""

    allowed: bool
    reason: Reason
    tool_name: str
    scope: Scope
    requires_approval: bool
    claims: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Introspection:
    """Whether a token is active (RFC 7662): it decodes here and is not revoked. ``reason`` says
    why not (``Reason.OK`` when active); ``claims`` are the verified claims of an active token."""

    active: bool
    reason: Reason
    claims: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """RFC 7662's answer: the claims plus ``"active": true``, or only ``{"active": false}``."""
        if not self.active or self.claims is None:
            return {"active": False}
        return {**self.claims, "active": True}


class PolicyEngine:
    """Issues approval tokens and decides tool calls with them, revocation included.

    Build one per process at start-up; ``verify`` is thread-safe, does no I/O and never raises
    for a bad token (it denies, with the reason). ``from_settings`` wires the real
    ``RevocationManager``, which the process must ``start()`` (until its first load it denies
    with ``revocation_state_stale``).

    >>> engine = PolicyEngine.from_settings()
    >>> engine.revocations.start()
    >>> token = engine.issue_token("log_agent_run", Scope.WRITE, subject="agent-7")
    >>> engine.verify(token, "log_agent_run", Scope.WRITE, subject="agent-7").reason
    <Reason.OK: 'ok'>
    """

    def __init__(
        self,
        *,
        settings: Settings,
        codec: TokenCodec,
        revocation: RevocationCheck,
        recorder: EventRecorder = no_op_recorder,
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.tools: Mapping[str, Tool] = load_tool_registry(settings.policy.tools_file)
        self._revocation = revocation
        self._recorder = recorder
        # Bound once: the hot path does attribute lookups on self only.
        self._tool_get = self.tools.get
        self._decode = codec.decode
        self._denial = revocation.denial

    def reload_tools(self) -> tuple[int, list[str]]:
        """Read the tool registry again (the operator edited ``M1_POLICY_TOOLS_FILE``, or a slow
        engine is being reset): (tools now, names added or removed). A bad file raises and leaves
        the registry in use unchanged. The swap is one attribute bind each: verify never locks."""
        tools = load_tool_registry(self.settings.policy.tools_file)
        changed = sorted(set(tools) ^ set(self.tools))
        self.tools = tools
        self._tool_get = tools.get
        return len(tools), changed

    @property
    def revocations(self) -> RevocationCheck:
        """The revocation check every verify consults (fixed at construction)."""
        return self._revocation

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        revocations: RevocationCheck | None = None,
        recorder: EventRecorder = no_op_recorder,
    ) -> PolicyEngine:
        """The engine of the configured keys, tools and revocation state: the one builder that
        the process-wide engine, an API replica and the command line share.

        ``revocations`` defaults to a new ``RevocationManager`` of ``settings`` (not started); a
        caller that starts, loads or closes its own passes it. ``recorder`` takes each decision.
        """
        from m1lib.settings import get_settings

        settings = settings or get_settings()
        codec = TokenCodec.from_settings(settings)
        if revocations is None:
            try:
                from m1lib.revocation import RevocationManager
            except ImportError as exc:
                raise UsageError(
                    f"PolicyEngine.from_settings needs m1lib.revocation.RevocationManager ({exc}); "
                    "pass revocations=... (another RevocationCheck) instead"
                ) from exc
            revocations = RevocationManager.from_settings(settings)
        return cls(settings=settings, codec=codec, revocation=revocations, recorder=recorder)

    def issue_token(
        self, tool_name: str, scope: Scope, *, subject: str, ttl: timedelta | None = None
    ) -> str:
        """An approval for ``subject`` to call ``tool_name`` up to ``scope``.

        ``ttl`` (whole seconds) defaults to, and may not exceed, ``M1_TOKEN_TTL_S``. Raises
        InputError for an unknown tool, a scope below the tool's, or a bad subject or ttl.
        """
        tool = self._tool_get(tool_name) if isinstance(tool_name, str) else None
        if tool is None:
            raise InputError(
                "tool_name", f"{tool_name!r} is not a registered tool", sorted(self.tools)
            )
        if scope.__class__ not in (str, Scope) or scope not in SCOPE_RANK:
            raise InputError("scope", f"{scope!r} is not a scope", list(Scope))
        if SCOPE_RANK[scope] < SCOPE_RANK[tool.scope]:
            raise InputError(
                "scope",
                f"{scope} is below the {tool.scope} that {tool.name} needs",
                [s.value for s in Scope if s >= tool.scope],
            )
        ttl_s: int | None = None
        if ttl is not None:
            if not isinstance(ttl, timedelta):
                raise InputError("ttl", f"{ttl!r} is not a duration", ["a timedelta"])
            ttl_s = int(ttl.total_seconds())
        return self.codec.issue(subject=subject, tool_name=tool.name, scope=scope, ttl_s=ttl_s)

    def verify(
        self, token: str | None, tool_name: str, scope: Scope, *, subject: str | None = None
    ) -> PolicyDecision:
        """Whether ``token`` approves calling ``tool_name`` at ``scope`` (for ``subject``, if given).

        ``token`` may be None only for a read tool that needs no approval. Raises InputError
        only when ``scope`` is not a scope (a caller's bug, not an attacker's token).
        """
        started = _perf_counter()
        needed = SCOPE_RANK.get(scope) if scope.__class__ in (str, Scope) else None
        if needed is None:
            raise InputError("scope", f"{scope!r} is not a scope", list(Scope))
        claims: dict[str, Any] | None = None
        tool = self._tool_get(tool_name) if isinstance(tool_name, str) else None
        if tool is None:
            reason, requires = Reason.UNKNOWN_TOOL, True
        else:
            needed = max(needed, SCOPE_RANK[tool.scope])
            requires = needed > 0 or tool.requires_approval
            if token is None:
                reason = Reason.TOKEN_REQUIRED if requires else Reason.OK
            else:
                try:
                    claims = self._decode(token)
                except TokenRejectedError as exc:
                    reason = exc.reason
                else:
                    if claims["toolName"] != tool_name:
                        reason = Reason.TOOL_MISMATCH
                    elif SCOPE_RANK[claims["scope"]] < needed:
                        reason = Reason.INSUFFICIENT_SCOPE
                    elif subject is not None and claims["sub"] != subject:
                        reason = Reason.SUBJECT_MISMATCH
                    else:
                        reason = self._denial(claims) or Reason.OK
        allowed = reason is Reason.OK
        decision = PolicyDecision(
            allowed,
            reason,
            tool_name,
            _BY_RANK[needed],
            requires,
            None if claims is None else MappingProxyType(claims),
        )
        self._recorder(
            "policy_decisions",
            toolName=tool_name,
            scope=_BY_RANK[needed],
            allowed=allowed,
            reason=reason,
            subject=claims["sub"] if claims is not None else (subject or ""),
            checkMs=(_perf_counter() - started) * 1000.0,
        )
        return decision

    def introspect(self, token: str) -> Introspection:
        """Whether ``token`` is active, for no particular tool or scope (RFC 7662): it decodes as
        every verify decodes it and its revocation check does not deny it. Records no decision."""
        try:
            claims = self._decode(token)
        except TokenRejectedError as exc:
            return Introspection(active=False, reason=exc.reason)
        denial = self._denial(claims)
        if denial is not None:
            return Introspection(active=False, reason=denial)
        return Introspection(active=True, reason=Reason.OK, claims=claims)


# -- the tool registry, as data ---------------------------------------------------------------


def load_tool_registry(tools_file: Path | None = None) -> Mapping[str, Tool]:
    """The built-in tools plus the operator's; a bad entry fails here, named with its file.

    An operator's file may not redefine a built-in tool: a silent override could turn
    ``request_approval`` into a read tool nobody approves.
    """
    builtin = resources.files("m1lib").joinpath(BUILTIN_TOOLS).read_text(encoding="utf-8")
    tools = _parse_tools(builtin, source=f"m1lib/{BUILTIN_TOOLS}")
    if tools_file is not None:
        source = f"M1_POLICY_TOOLS_FILE ({tools_file})"
        try:
            text = tools_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{source}: cannot read the file: {exc}") from exc
        for name, tool in _parse_tools(text, source=source).items():
            if name in tools:
                raise SettingsError(
                    f"{source}: tools.{name}: is a built-in tool; allowed: a name not in "
                    f"{', '.join(sorted(tools))}"
                )
            tools[name] = tool
    return MappingProxyType(tools)


def _parse_tools(text: str, *, source: str) -> dict[str, Tool]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{source}: not valid TOML: {exc}") from exc
    if data.keys() - {"tools"}:
        raise SettingsError(
            f"{source}: {sorted(data.keys() - {'tools'})[0]}: unknown; allowed: tools"
        )
    table = data.get("tools", {})
    if not isinstance(table, dict):
        raise SettingsError(f"{source}: tools: must be a table of [tools.<name>] entries")
    tools: dict[str, Tool] = {}
    for name, entry in table.items():
        where = f"{source}: tools.{name}"
        if not _TOOL_NAME.match(name):
            raise SettingsError(
                f"{where}: not a tool name; allowed: a letter, then up to 127 of A-Z a-z 0-9 _ . : -"
            )
        if not isinstance(entry, dict):
            raise SettingsError(f'{where}: must be a table, e.g. scope = "read"')
        if entry.keys() - _TOOL_KEYS:
            unknown = sorted(entry.keys() - _TOOL_KEYS)[0]
            raise SettingsError(
                f"{where}.{unknown}: unknown; allowed: {', '.join(sorted(_TOOL_KEYS))}"
            )
        scope_text = entry.get("scope")
        if not isinstance(scope_text, str) or scope_text not in SCOPE_RANK:
            raise SettingsError(
                f"{where}.scope: {scope_text!r} is not a scope; allowed: read, write, execute"
            )
        scope = Scope(scope_text)
        flag = entry.get("requires_approval", scope is not Scope.READ)
        if not isinstance(flag, bool):
            raise SettingsError(f"{where}.requires_approval: must be true or false")
        if scope is not Scope.READ and not flag:
            raise SettingsError(
                f"{where}.requires_approval: {scope} tools always need approval; "
                "allowed: true, or leave it out"
            )
        description = entry.get("description", "")
        if not isinstance(description, str):
            raise SettingsError(f"{where}.description: must be text")
        tools[name] = Tool(name=name, scope=scope, requires_approval=flag, description=description)
    return tools
