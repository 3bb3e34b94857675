"""``m1 demo``: a bounded synthetic workload against a running M1 API, so that ``make run`` has
traffic to look at on ``/dashboard``.

Agents call the registry's tools: each call is a policy decision (mostly allowed, some denied for
every reason), then a tool execution (lognormal latency, a few failures named by their exception
class), sometimes a priced model call; read tools go through ``m1lib.cached_call`` in this
process (about 70 % hits). With an admin key the demo also issues capability tokens, introspects
them and revokes some, over HTTP; an agent key does the events alone and says what it skipped.

Everything is paced below the API's default rate limits (:class:`Pace`): one event batch per
interval whatever the agent count (agents make batches bigger, never requests more frequent),
and the few token calls spread over the admin and query classes' budgets. A 429 or 503 is waited
out (``ApiClient`` honours ``Retry-After``) and counted. The loop takes its clock and sleep from
the caller, so tests drive it in simulated time.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, TextIO

from m1lib.ops.cost.prices import DEFAULT_MODEL_PRICES, PriceTable, round_micro
from m1lib.settings import RatelimitSettings, parse_duration
from m1lib.vocabulary import VALIDATION_PROBE_TOOL, Reason

if TYPE_CHECKING:
    import httpx

    from m1lib.client import ApiClient
    from m1lib.metrics.pipeline import MetricsRuntime
    from m1lib.settings import Settings

__all__ = [
    "MAX_AGENTS",
    "MAX_DURATION",
    "Access",
    "Demo",
    "DemoError",
    "Pace",
    "Summary",
    "ToolProfile",
    "Workload",
    "add_arguments",
    "connect",
    "main",
]

MAX_DURATION: Final = timedelta(hours=24)
MAX_AGENTS: Final = 1000
DEMO_SHARE: Final = 0.75
"""Of each rate limit the demo plans to use; the rest is left for the dashboard and the CLI."""
QUERY_SHARE: Final = 0.5
"""Of the query class: the dashboard's query box counts against it from the same address."""
MIN_BATCH_S: Final = 0.25  # at most four event batches a second, however high the ingest limit
CALLS_PER_AGENT_S: Final = 0.5  # tool calls an agent makes per second, on average
MAX_CATCHUP_S: Final = 1.0  # time lost waiting out a 429 is skipped, not replayed in one batch
MAX_BATCH_EVENTS: Final = 5000  # well under M1_EVENTS_INGEST_MAX_EVENTS' default of 10,000
EVENTS_PER_CALL: Final = 3  # a decision, an execution and a cost update at most
REVOKED_SHARE: Final = 0.2  # of issued tokens the demo revokes
LIVE_TOKENS: Final = 200  # tokens kept to introspect and revoke; older ones are forgotten
DENIED_SHARE: Final = 0.08
HIT_TARGET: Final = 0.7  # share of cache gets that ask for a key set earlier
CACHE_TTL_S: Final = 120.0
RECENT_KEYS: Final = 256
ALERT_WINDOW_S: Final = 15.0
PROGRESS_EVERY_S: Final = 5.0
MAX_SLOWDOWN_S: Final = 30.0  # a class that met a 429 slows down, at most to this interval
LOST_AFTER: Final = 3  # consecutive unanswered requests after which the API counts as gone
PROBE_TOOL: Final = "m1_demo_no_such_tool"  # issuing it gets a 422 that lists the registry
# Failures by exception class name, as tool_call records them (never the message).
FAILURES: Final = (
    ("TimeoutError", 5),
    ("ConnectionError", 3),
    ("ValueError", 2),
    ("PermissionError", 1),
    ("KeyError", 1),
)
# The models of the built-in price table (m1lib.ops.cost.prices), priced as record_cost does.
MODELS: Final = tuple(DEFAULT_MODEL_PRICES)
COMPONENTS: Final = ("support-bot", "research-agent", "code-assistant", "ops-copilot")
DENIAL_REASONS: Final = tuple(reason.value for reason in Reason if reason is not Reason.OK)
# Common denials more often than forged tokens; every reason appears.
_DENIAL_WEIGHTS: Final = {"expired": 6, "insufficient_scope": 4, "token_required": 3, "revoked": 2,
                          "tool_mismatch": 2, "subject_mismatch": 2}  # fmt: skip
DENIAL_WEIGHTS: Final = tuple(_DENIAL_WEIGHTS.get(reason, 1) for reason in DENIAL_REASONS)
INCIDENT_SHARE: Final = 0.25  # of alert windows in which one tool degrades (its failures x4)

EVENTS_ROUTE: Final = "/api/m1/events"
ISSUE_ROUTE: Final = "/api/m1/tokens"
REVOKE_ROUTE: Final = "/api/m1/tokens/revoke"
INTROSPECT_ROUTE: Final = "/api/m1/tokens/introspect"


class DemoError(Exception):
    """The demo cannot go on (API unreachable, key refused); the message says why and what to do."""


# -- command line ------------------------------------------------------------------------------


def duration_arg(text: str) -> float:
    """``--duration``: seconds, as the settings' durations are written (90, 90s, 5m, 1h)."""
    try:
        value = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    seconds = float(value.total_seconds()) if isinstance(value, timedelta) else float(value)
    if not 0 < seconds <= MAX_DURATION.total_seconds():
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range; allowed: more than 0, at most 24h"
        )
    return seconds


def agents_arg(text: str) -> int:
    """``--agents``: how many simulated agents, 1 to :data:`MAX_AGENTS`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_AGENTS:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range; allowed: 1 to {MAX_AGENTS} agents"
        )
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api", help="the API's base URL (default M1_API_URL, else this configuration's own API)"
    )
    parser.add_argument(
        "--key",
        help="API key (default M1_API_KEY): admin for tokens and events, agent for events only",
    )
    parser.add_argument(
        "--duration",
        type=duration_arg,
        default=duration_arg("5m"),
        help="how long to run: 90, 90s, 5m, 1h (at most 24h; default 5m)",
    )
    parser.add_argument(
        "--agents",
        type=agents_arg,
        default=20,
        help=f"simulated agents, 1-{MAX_AGENTS} (default 20): more agents, bigger batches",
    )


def main(
    settings: Settings,
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """``m1 demo``: 0 when it ran (to the end or to Ctrl-C), 1 when the API is unreachable or
    refuses the key, 2 without a key."""
    from m1lib.client import ApiClient
    from m1lib.metrics import pipeline

    out = out or sys.stdout
    url = (args.api or settings.client_api_url).rstrip("/")
    key = args.key or (settings.api.key.get_secret_value() if settings.api.key else None)
    if not key:
        print(
            "m1 demo: no API key: give --key KEY or set M1_API_KEY. An admin key does everything "
            f"(`m1 keys create demo --role admin`; the first `m1 up` wrote one to "
            f"{settings.data_dir / 'admin_key'}); an agent key sends events only.",
            file=sys.stderr,
        )
        return 2
    waits = _Waits()
    with ApiClient(url, key, max_wait_s=65.0, sleep=waits, transport=transport) as client:
        try:
            access = connect(client, local_tools(settings))
        except DemoError as error:
            print(f"m1 demo: {error}", file=sys.stderr)
            return 1
        pace = Pace.for_limits(settings.ratelimit)
        forwarder = _forward_to(settings, url, key) if transport is None else None
        demo = Demo(
            client,
            access,
            agents=args.agents,
            duration_s=args.duration,
            pace=pace,
            max_batch_events=min(MAX_BATCH_EVENTS, settings.events.ingest_max_events),
            waits=waits,
            out=out,
            forwarding=forwarder is not None,
        )
        print(
            f"m1 demo: {args.agents} agents for {_clock_text(args.duration)} against {url} "
            f"({len(access.tools)} tools; {pace.describe()}); Ctrl-C stops",
            file=out,
        )
        for skipped in access.skipped:
            print(f"m1 demo: skipping {skipped}", file=out)
        try:
            summary = demo.run()
        finally:
            if forwarder is not None:
                forwarder.close()  # sends the cache events still queued
                pipeline.install_default(None)
        print(summary.render(), file=out)
        if summary.fatal:
            print(f"m1 demo: {summary.fatal}", file=sys.stderr)
            return 1
        return 0


# -- pacing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pace:
    """Seconds between the demo's requests of each rate-limit class (``M1_RATELIMIT_*``).

    The API limits each class per credential and per client address over a sliding minute; the
    demo plans :data:`DEMO_SHARE` of a limit (:data:`QUERY_SHARE` of the query class) so a
    dashboard open on the same machine keeps its own room. Token issue and revoke share the admin
    class; introspection is a query-class request.
    """

    batch_s: float
    admin_s: float
    introspect_s: float

    @classmethod
    def for_limits(cls, limits: RatelimitSettings | None = None) -> Pace:
        limits = limits or RatelimitSettings()
        return cls(
            batch_s=max(MIN_BATCH_S, 60.0 / (limits.ingest_per_min * DEMO_SHARE)),
            admin_s=60.0 / (limits.admin_per_min * DEMO_SHARE),
            introspect_s=60.0 / (limits.query_per_min * QUERY_SHARE),
        )

    def per_minute(self) -> dict[str, float]:
        """Requests per minute planned for each class (startup probes add one each)."""
        return {
            "ingest": 60.0 / self.batch_s,
            "admin": 60.0 / self.admin_s,
            "query": 60.0 / self.introspect_s,
        }

    def describe(self) -> str:
        rates = self.per_minute()
        return ", ".join(f"{name} {rate:.0f}/min" for name, rate in rates.items())


def batch_events_bound(agents: int) -> int:
    """The most events one batch can carry with ``agents`` agents (time lost to a wait is
    skipped, so a batch covers at most :data:`MAX_CATCHUP_S`)."""
    calls = math.ceil(agents * CALLS_PER_AGENT_S * MAX_CATCHUP_S)
    return calls * EVENTS_PER_CALL + 16  # and a few alerts


# -- the workload ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolProfile:
    """How a simulated tool behaves: its scope, latency (lognormal) and failure rate."""

    name: str
    scope: str
    median_ms: float
    sigma: float
    failure_rate: float

    @classmethod
    def for_tool(cls, name: str, scope: str) -> ToolProfile:
        """A profile derived from the name alone, so a tool behaves alike in every run."""
        own = random.Random(f"m1-demo:{name}")  # noqa: S311 - a simulation, not a secret
        return cls(
            name=name,
            scope=scope,
            median_ms=round(own.uniform(8.0, 400.0), 1),
            sigma=own.uniform(0.5, 1.0),
            failure_rate=own.uniform(0.05, 0.10),
        )

    @property
    def cached(self) -> bool:
        """Read tools' results go through ``cached_call``; writes and executions cannot be cached."""
        return self.scope == "read"


class ToolFailed(Exception):
    """Raised inside a cached call to make the miss fail; the event names ``kind`` instead."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass
class _Held:
    token: str
    jti: str
    agent: str
    tool: str
    revoked: bool = False


class Workload:
    """The agents' activity as events, from a seeded ``random.Random``.

    ``calls(n)`` makes ``n`` tool calls and returns their events (policy_decisions,
    tool_executions, cost_updates, error_alerts) as ``POST /api/m1/events`` takes them; the cache
    traffic of read tools goes through ``cached_call`` and is recorded by it, not returned.
    """

    def __init__(
        self,
        tools: Sequence[tuple[str, str]],
        agents: int,
        rng: random.Random,
        *,
        cached_call: Callable[..., Any] | None = None,
    ) -> None:
        if not tools:
            raise DemoError("the API lists no tools to call")
        self.tools = [ToolProfile.for_tool(name, scope) for name, scope in tools]
        self.agents = [f"demo-agent-{index:04d}" for index in range(1, agents + 1)]
        self.rng = rng
        self._cached_call = cached_call
        self._prices = PriceTable(models=DEFAULT_MODEL_PRICES)
        # A few tools dominate, reads most (agents look things up more than they change them).
        self._weights = [
            (3.0 if tool.cached else 1.0) / (rank + 1) for rank, tool in enumerate(self.tools)
        ]
        self._recent: dict[str, deque[str]] = {
            t.name: deque(maxlen=RECENT_KEYS) for t in self.tools
        }
        self._keys = 0
        self.held: dict[tuple[str, str], _Held] = {}  # (agent, tool) -> its latest token
        self.cache_gets = 0
        self.cache_hits = 0
        self._window: dict[str, list[int]] = {}  # tool -> [calls, failures] since the last check
        self.incident: str | None = None  # the tool degraded in this alert window

    def component(self, agent: str) -> str:
        return COMPONENTS[int(agent.rsplit("-", 1)[1]) % len(COMPONENTS)]

    def pick(self) -> tuple[str, ToolProfile]:
        agent = self.rng.choice(self.agents)
        tool = self.rng.choices(self.tools, self._weights)[0]
        return agent, tool

    def calls(self, n: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for _ in range(n):
            agent, tool = self.pick()
            events.extend(self.call(agent, tool))
        return events

    def call(self, agent: str, tool: ToolProfile) -> list[dict[str, Any]]:
        """One tool call's events: the decision, and if allowed the run and maybe its model cost."""
        rng = self.rng
        held = self.held.get((agent, tool.name))
        if held is not None and held.revoked:
            reason = Reason.REVOKED.value  # the agent still presents the token the demo revoked
            del self.held[(agent, tool.name)]
        elif rng.random() < DENIED_SHARE:
            reason = rng.choices(DENIAL_REASONS, DENIAL_WEIGHTS)[0]
        else:
            reason = Reason.OK.value
        allowed = reason == Reason.OK.value
        events: list[dict[str, Any]] = [
            {
                "metric": "policy_decisions",
                "toolName": tool.name,
                "scope": tool.scope,
                "allowed": allowed,
                "reason": reason,
                "subject": agent,
                "checkMs": round(rng.lognormvariate(math.log(0.03), 0.5), 4),
            }
        ]
        if not allowed:
            return events
        success, duration_ms, error = self._run(agent, tool)
        events.append(
            {
                "metric": "tool_executions",
                "toolName": tool.name,
                "scope": tool.scope,
                "success": success,
                "durationMs": round(duration_ms, 3),
                "error": error,
            }
        )
        counts = self._window.setdefault(tool.name, [0, 0])
        counts[0] += 1
        counts[1] += not success
        if success and rng.random() < 0.4:
            events.append(self._cost(agent, tool))
        return events

    def _failure(self, rate: float) -> str | None:
        if self.rng.random() >= rate:
            return None
        names = [name for name, _ in FAILURES]
        return self.rng.choices(names, [weight for _, weight in FAILURES])[0]

    def _run(self, agent: str, tool: ToolProfile) -> tuple[bool, float, str | None]:
        rng = self.rng
        degraded = tool.name == self.incident
        latency_ms = rng.lognormvariate(
            math.log(tool.median_ms * (3 if degraded else 1)), tool.sigma
        )
        rate = tool.failure_rate * (4 if degraded else 1)
        if not tool.cached or self._cached_call is None:
            failure = self._failure(rate)
            return failure is None, latency_ms, failure
        # Only a miss runs the tool, so a miss fails more often: the tool's rate overall.
        failure = self._failure(min(0.6, rate / (1.0 - HIT_TARGET)))
        recent = self._recent[tool.name]
        if recent and rng.random() < HIT_TARGET:
            key = rng.choice(recent)
        else:
            self._keys += 1
            key = f"{agent}:q{self._keys}"
        ran: list[bool] = []

        def run_tool() -> dict[str, str]:
            ran.append(True)
            if failure is not None:
                raise ToolFailed(failure)
            return {"tool": tool.name, "key": key}

        self.cache_gets += 1
        try:
            self._cached_call(tool.name, key, run_tool, ttl=CACHE_TTL_S)
        except ToolFailed as failed:
            return False, latency_ms, failed.kind
        if not ran:
            self.cache_hits += 1
            return True, rng.lognormvariate(math.log(0.8), 0.4), None  # served from the cache
        recent.append(key)
        return True, latency_ms, None

    def _cost(self, agent: str, tool: ToolProfile) -> dict[str, Any]:
        rng = self.rng
        model = rng.choice(MODELS)
        input_tokens = max(1, int(rng.lognormvariate(math.log(1200), 0.7)))
        output_tokens = max(1, int(rng.lognormvariate(math.log(300), 0.8)))
        cost_pusd = self._prices.cost_pusd(model, input_tokens, output_tokens)
        return {
            "metric": "cost_updates",
            "model": model,
            "toolName": tool.name,
            "component": self.component(agent),
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "costUsd": round_micro(cost_pusd) / 1e6,  # as record_cost's events: half-even to 1e-6
        }

    def alerts(self, window_s: float) -> list[dict[str, Any]]:
        """``error_alerts`` for tools that failed too often since the last check, then a new window."""
        events: list[dict[str, Any]] = []
        for name, (calls, failures) in sorted(self._window.items()):
            ratio = failures / calls if calls else 0.0
            if calls >= 10 and ratio >= 0.15:
                metadata = {"toolName": name, "calls": calls, "failures": failures,
                            "windowS": round(window_s, 1)}  # fmt: skip
                events.append(
                    {
                        "metric": "error_alerts",
                        "level": "critical" if ratio >= 0.25 else "warning",
                        "source": name,
                        "message": f"{name}: {failures} of {calls} calls failed in the last "
                        f"{window_s:.0f} s",
                        "metadata": json.dumps(metadata, separators=(",", ":")),
                    }
                )
        self._window.clear()
        # Now and then a tool degrades for a window (slower, failing more): alerts to look at.
        self.incident = (
            self.rng.choice(self.tools).name if self.rng.random() < INCIDENT_SHARE else None
        )
        return events


# -- the API: what this key may do -------------------------------------------------------------


@dataclass
class Access:
    """What the demo may do with its key, and the tools it calls (name, scope)."""

    tools: list[tuple[str, str]]
    issue_tokens: bool
    skipped: list[str] = field(default_factory=list)


def local_tools(settings: Settings) -> dict[str, str]:
    """This configuration's tool registry (name -> scope), for scopes the API does not list."""
    from m1lib.errors import SettingsError
    from m1lib.policy import load_tool_registry

    try:
        registry = load_tool_registry(settings.policy.tools_file)
    except SettingsError:  # the operator's file is the API's business; the built-ins will do
        registry = load_tool_registry(None)
    return {name: tool.scope.value for name, tool in registry.items()}


def connect(client: ApiClient, scopes: Mapping[str, str]) -> Access:
    """Probe the API: may this key record events (an empty batch) and issue tokens (a token for a
    tool that does not exist, whose 422 lists the registry's tools)? DemoError when the API does
    not answer, refuses the key, or the key may not even record events."""
    from m1lib.errors import (
        AuthenticationError,
        InputError,
        M1Error,
        PermissionDeniedError,
        UnavailableError,
    )

    try:
        client.record_events([])
    except UnavailableError as error:
        raise DemoError(f"{error}; is it running (`make run`), and is --api right?") from None
    except AuthenticationError as error:
        raise DemoError(
            f"the API refused the key: {error}. Give an admin key (`m1 keys create demo --role "
            "admin`) with --key or M1_API_KEY"
        ) from None
    except PermissionDeniedError as error:
        raise DemoError(
            f"this key may not record events: {error}. The demo needs an agent key (events only) "
            "or an admin key (events and tokens)"
        ) from None
    except M1Error as error:
        raise DemoError(f"the API refused an empty event batch: {error}") from None
    skipped: list[str] = []
    names: list[str] = []
    issue = True
    try:
        client.post_json(ISSUE_ROUTE, {"toolName": PROBE_TOOL, "scope": "execute",
                                       "subject": "demo-probe"})  # fmt: skip
    except InputError as error:
        names = [str(name) for name in error.allowed or ()]
    except PermissionDeniedError as error:
        issue = False
        skipped.append(f"issuing, introspecting and revoking tokens: {error}")
    except UnavailableError as error:
        issue = False
        skipped.append(f"issuing, introspecting and revoking tokens: {error}")
    except M1Error as error:
        raise DemoError(f"the API refused the token probe: {error}") from None
    if not names:
        names = sorted(scopes)  # no listing from the API: this configuration's registry
    tools = [(name, scopes.get(name, "execute")) for name in names if name != VALIDATION_PROBE_TOOL]
    return Access(tools=tools, issue_tokens=issue, skipped=skipped)


# -- the loop ----------------------------------------------------------------------------------


class _Waits:
    """ApiClient's sleep: counts the 429/503 waits, then sleeps with the demo's own sleep."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.sleep: Callable[[float], None] = time.sleep

    def __call__(self, seconds: float) -> None:
        self.count += 1
        self.seconds += seconds
        self.sleep(seconds)


@dataclass
class Summary:
    """What the demo did; ``render()`` is the final report, ``progress()`` the periodic line."""

    duration_s: float
    elapsed_s: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    issued: int = 0
    revoked: int = 0
    introspected: Counter[str] = field(default_factory=Counter)
    waits: int = 0
    waited_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    cache_gets: int = 0
    cache_hits: int = 0
    cache_forwarded: bool = False
    stopped: str = "end of --duration"
    fatal: str | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def events_sent(self) -> int:
        return sum(self.events.values())

    def progress(self) -> str:
        hits = f"{self.cache_hits / self.cache_gets:.0%}" if self.cache_gets else "-"
        return (
            f"m1 demo {_clock_text(self.elapsed_s)}/{_clock_text(self.duration_s)}: "
            f"{self.events_sent:,} events, tokens {self.issued} issued {self.revoked} revoked, "
            f"cache hits {hits}, 429/503 waits {self.waits}, errors {sum(self.errors.values())}"
        )

    def render(self) -> str:
        lines = [f"m1 demo: stopped after {_clock_text(self.elapsed_s)} ({self.stopped})"]
        lines.append("  requests: " + _counts(self.requests))
        lines.append(f"  events sent: {self.events_sent:,} ({_counts(self.events)})")
        if self.dropped:
            lines.append(f"  of which the API dropped (its queue full): {self.dropped:,}")
        introspected = _counts(self.introspected) if self.introspected else "none"
        lines.append(
            f"  tokens: {self.issued} issued, {self.revoked} revoked; introspected: {introspected}"
        )
        where = "forwarded to the API" if self.cache_forwarded else "recorded in this process only"
        ratio = f" ({self.cache_hits / self.cache_gets:.0%} hits)" if self.cache_gets else ""
        lines.append(f"  cache gets through cached_call: {self.cache_gets:,}{ratio}, {where}")
        lines.append(f"  429/503 waits: {self.waits} ({self.waited_s:.0f} s)")
        lines.append("  errors: " + (_counts(self.errors) if self.errors else "none"))
        lines.extend(f"  skipped: {text}" for text in self.skipped)
        return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in sorted(counter.items())) or "none"


def _clock_text(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _forward_to(settings: Settings, api_url: str, key: str) -> MetricsRuntime | None:
    """Make this process's default metrics runtime forward to the demo's API, so the
    ``cache_operations`` that ``cached_call`` records here reach it (the forwarding rule of
    ``docs/contracts.md``, with ``--api``/``--key`` in place of ``M1_API_URL``/``M1_API_KEY``;
    with ``M1_REDIS_URL`` set it forwards through that Redis, which must be the API's).

    Returns the runtime to close at the end (which sends what is still queued), or None when
    the process already has a default runtime (a test's, or a replica's) that it keeps.
    """
    from pydantic import SecretStr

    from m1lib.metrics import pipeline

    if pipeline._default is not None:
        return None
    api = settings.api.model_copy(update={"url": api_url, "key": SecretStr(key)})
    runtime = pipeline.MetricsRuntime(settings.model_copy(update={"api": api}), forwarding=True)
    runtime.start()
    if pipeline.install_default(runtime) is not None:  # another thread built one meanwhile
        runtime.close()
        return None
    return runtime


class Demo:
    """The paced loop: event batches, token calls, progress lines, until the duration or a stop.

    >>> Demo(client, access, agents=20, duration_s=300, pace=Pace.for_limits()).run().render()
    """

    def __init__(
        self,
        client: ApiClient,
        access: Access,
        *,
        agents: int,
        duration_s: float,
        pace: Pace,
        max_batch_events: int = MAX_BATCH_EVENTS,
        waits: _Waits | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        cached_call: Callable[..., Any] | None = None,
        out: TextIO | None = None,
        progress_every_s: float = PROGRESS_EVERY_S,
        forwarding: bool = False,
    ) -> None:
        if cached_call is None:
            from m1lib.process_cache import cached_call as process_cached_call

            cached_call = process_cached_call
        self.client = client
        self.access = access
        self.pace = pace
        self.max_batch_events = max_batch_events
        self.rng = rng or random.Random()  # noqa: S311 - a simulation, not a secret
        self.workload = Workload(access.tools, agents, self.rng, cached_call=cached_call)
        self.clock = clock
        self.sleep = sleep
        self.waits = waits or _Waits()
        self.waits.sleep = sleep
        self.out = out
        self.progress_every_s = progress_every_s
        self.summary = Summary(duration_s=duration_s, skipped=list(access.skipped))
        self.summary.cache_forwarded = forwarding
        self._owed_calls = 0.0
        self._tokens: deque[_Held] = deque(maxlen=LIVE_TOKENS)
        self._unanswered = 0
        self._last_batch = 0.0
        self._next_alerts = 0.0

    def run(self) -> Summary:
        """Run until the duration is over, Ctrl-C, or the API is lost; never raises for the API."""
        from m1lib.errors import AuthenticationError, M1Error, UnavailableError

        summary = self.summary
        start = self.clock()
        end = start + summary.duration_s
        self._last_batch = start
        self._next_alerts = start + ALERT_WINDOW_S
        # Each class on its own schedule; after a wait the schedule restarts from now, so time
        # lost is not made up with a burst, and the class that was told to wait slows down.
        steps: list[tuple[float, Callable[[float], None], bool]] = [
            (self.pace.batch_s, self._batch, False),
            (self.pace.admin_s, lambda _now: self._admin(), True),
            (self.pace.introspect_s, lambda _now: self._introspect(), True),
        ]
        intervals = [interval for interval, _, _ in steps]
        due = [start, start, start + self.pace.introspect_s / 2]
        next_progress = start + self.progress_every_s
        try:
            while True:
                now = self.clock()
                summary.elapsed_s = now - start
                if now >= end:
                    break
                for index, (_, step, tokens) in enumerate(steps):
                    if now >= due[index] and (self.access.issue_tokens or not tokens):
                        waits = self.waits.count
                        step(now)
                        if self.waits.count > waits:  # the API's limit is lower than planned
                            intervals[index] = min(2 * intervals[index], MAX_SLOWDOWN_S)
                        due[index] = max(due[index] + intervals[index], now)
                        now = self.clock()
                if now >= next_progress and self.out is not None:
                    summary.elapsed_s = now - start
                    summary.cache_gets = self.workload.cache_gets
                    summary.cache_hits = self.workload.cache_hits
                    print(summary.progress(), file=self.out, flush=True)
                    next_progress = now + self.progress_every_s
                pending = [
                    d
                    for d, (_, _, t) in zip(due, steps, strict=True)
                    if self.access.issue_tokens or not t
                ]
                wake = min(*pending, end, next_progress)
                if wake > now:
                    self.sleep(wake - now)
        except KeyboardInterrupt:
            summary.stopped = "Ctrl-C"
        except AuthenticationError as error:
            summary.stopped = "the API refused the key"
            summary.fatal = f"the API refused the key: {error}"
        except UnavailableError as error:
            summary.stopped = "lost the API"
            summary.fatal = f"{error} ({LOST_AFTER} times in a row)"
        except M1Error as error:  # not expected: a bug in the demo's own requests
            summary.stopped = "an error"
            summary.fatal = str(error)
        summary.elapsed_s = self.clock() - start
        summary.waits, summary.waited_s = self.waits.count, self.waits.seconds
        summary.cache_gets = self.workload.cache_gets
        summary.cache_hits = self.workload.cache_hits
        return summary

    # -- one request each; errors counted, the API's loss raised --------------------------------

    def _call(self, name: str, send: Callable[[], Any]) -> Any:
        """``send()``'s answer, or None after counting its error; UnavailableError raised when
        the API has not answered :data:`LOST_AFTER` times in a row, AuthenticationError at once."""
        from m1lib.errors import (
            AuthenticationError,
            M1Error,
            PermissionDeniedError,
            RateLimitedError,
            UnavailableError,
        )

        self.summary.requests[name] += 1
        try:
            answer = send()
        except AuthenticationError:
            raise
        except UnavailableError:
            self._unanswered += 1
            self.summary.errors[f"{name}: unavailable"] += 1
            if self._unanswered >= LOST_AFTER:
                raise
            return None
        except RateLimitedError as error:  # a Retry-After past ApiClient's bound: waited here
            self.waits(float(error.retry_after_s or 1))
            return None
        except PermissionDeniedError as error:
            if self.access.issue_tokens and name != f"POST {EVENTS_ROUTE}":
                self.access.issue_tokens = False
                self.summary.skipped.append(f"tokens from now on: {error}")
            self.summary.errors[f"{name}: {type(error).__name__}"] += 1
            return None
        except M1Error as error:
            self.summary.errors[f"{name}: {type(error).__name__}"] += 1
            return None
        self._unanswered = 0
        return answer

    def _batch(self, now: float) -> None:
        """The calls made since the last batch (at most :data:`MAX_CATCHUP_S` of them), sent."""
        dt = min(now - self._last_batch, MAX_CATCHUP_S)
        self._last_batch = now
        self._owed_calls += len(self.workload.agents) * CALLS_PER_AGENT_S * dt
        calls = int(self._owed_calls)
        self._owed_calls -= calls
        events = self.workload.calls(calls)
        if now >= self._next_alerts:
            events.extend(self.workload.alerts(ALERT_WINDOW_S))
            self._next_alerts = now + ALERT_WINDOW_S
        if len(events) > self.max_batch_events:
            self.summary.errors["events over the batch bound (not sent)"] += (
                len(events) - self.max_batch_events
            )
            events = events[: self.max_batch_events]
        if not events:
            return
        answer = self._call(f"POST {EVENTS_ROUTE}", lambda: self.client.record_events(events))
        if answer is None:
            return
        self.summary.events.update(str(event["metric"]) for event in events)
        self.summary.dropped += answer["dropped"]  # validated, then dropped: the API's queue full

    def _admin(self) -> None:
        """Issue a token, or revoke one when fewer than :data:`REVOKED_SHARE` of them are."""
        live = [held for held in self._tokens if not held.revoked]
        if live and self.summary.revoked < REVOKED_SHARE * self.summary.issued:
            held = self.rng.choice(live)
            body = {"token": held.token, "reason": "m1 demo: simulated compromise"}
            answer = self._call(
                f"POST {REVOKE_ROUTE}", lambda: self.client.post_json(REVOKE_ROUTE, body)
            )
            if answer is not None:
                held.revoked = True
                self.summary.revoked += 1
            return
        agent, tool = self.workload.pick()
        body = {"toolName": tool.name, "scope": tool.scope, "subject": agent}
        answer = self._call(f"POST {ISSUE_ROUTE}", lambda: self.client.post_json(ISSUE_ROUTE, body))
        if answer is None:
            return
        held = _Held(str(answer["token"]), str(answer["jti"]), agent, tool.name)
        self._tokens.append(held)
        self.workload.held[(agent, tool.name)] = held
        self.summary.issued += 1

    def _introspect(self) -> None:
        if not self._tokens:
            return
        held = self.rng.choice(self._tokens)
        body = {"token": held.token}
        answer = self._call(
            f"POST {INTROSPECT_ROUTE}", lambda: self.client.post_json(INTROSPECT_ROUTE, body)
        )
        if answer is not None:
            self.summary.introspected["active" if answer.get("active") else "inactive"] += 1
