"""The `m1` command: thin verbs over the library and the flows.

Prefect is imported only by the verbs that need it, so `m1 config show` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from m1lib.errors import M1Error
from m1lib.settings import Settings, load_settings, masked_values, use_env_file

# m1lib.auth.Role's values (auth is imported when a verb needs it; a test keeps the two equal)
ROLE_CHOICES = ("viewer", "agent", "service", "admin")

if TYPE_CHECKING:
    from m1lib.ops.cost.policy import ToolTtl
    from m1lib.revocation import RevocationManager


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from deployments.local import up

    return up(settings, serve=not args.no_serve)


def _api(settings: Settings, args: argparse.Namespace) -> int:
    """One API replica in the foreground: no migrations, no supervisor, no Prefect. For
    containers and service managers, which restart it themselves (`m1 up` does all three)."""
    from m1lib.api.__main__ import main as serve_api

    serve_api()
    return 0


def _db(settings: Settings, args: argparse.Namespace) -> int:
    from m1lib.db import migrate
    from m1lib.db.session import Database

    db = Database(settings)
    try:
        if args.action == "upgrade":
            print(f"database at revision {migrate.upgrade(db, args.revision or 'head')}")
        elif args.action == "downgrade":
            if not args.revision:
                print("m1 db downgrade: give a revision (e.g. base)", file=sys.stderr)
                return 2
            print(f"database at revision {migrate.downgrade(db, args.revision) or 'base'}")
        else:
            current, head = migrate.current_revision(db), migrate.head_revision()
            state = "current" if current == head else "behind"
            print(f"database at {current or 'nothing'}; code expects {head} ({state})")
            return 0 if current == head else 1
        return 0
    finally:
        db.dispose()


def _config(settings: Settings, args: argparse.Namespace) -> int:
    from m1lib import config_docs

    if args.action == "show":
        for name, value in masked_values(settings).items():
            print(f"{name}={value}")
        return 0
    stale = config_docs.write_docs(Path(args.root), check=args.check)
    if args.check and stale:
        print("stale: " + ", ".join(stale) + " (run `m1 config docs`)", file=sys.stderr)
        return 1
    print("up to date" if args.check else "wrote the README configuration table and .env.example")
    return 0


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from m1lib import auth
    from m1lib.db.session import Database

    db = Database(settings)
    try:
        if args.action == "create":
            if not args.name:
                print("m1 keys create: give a NAME", file=sys.stderr)
                return 2
            key = auth.create_credential(db, args.name, args.role, created_by=_operator())
            if args.secret_block:
                from flows.credentials import store_api_key

                store_api_key(args.secret_block, key)
                print(
                    f"created {args.role} credential {args.name!r}; its key is in the Prefect "
                    f"Secret block {args.secret_block!r} (flow runs read it when M1_API_KEY "
                    "is not set)"
                )
            else:
                print(f"created {args.role} credential {args.name!r}; its key (shown once):\n{key}")
        elif args.action == "revoke":
            if not args.name:
                print("m1 keys revoke: give a NAME", file=sys.stderr)
                return 2
            if not auth.revoke_credential(db, args.name):
                print(f"no active credential named {args.name!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.name!r}: replicas refuse it within {settings.auth.refresh_s:g} s")
        else:
            for row in auth.list_credentials(db):
                state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
                print(f"{row.name:24} {row.role:7} {state:24} created by {row.created_by}")
        return 0
    finally:
        db.dispose()


def _query(settings: Settings, args: argparse.Namespace) -> int:
    """A query or template answered by the API (M1_API_URL, M1_API_KEY), printed as JSON."""
    import json

    from m1lib.client import ApiClient
    from m1lib.metrics.pipeline import query_json
    from m1lib.metrics.query import parse_query
    from m1lib.metrics.templates import template

    sources = [bool(args.template), args.query is not None, args.file is not None]
    if sum(sources) != 1:
        print("m1 query: give exactly one of QUERY, --template NAME, --file FILE", file=sys.stderr)
        return 2
    if args.template:
        query = template(args.template)
    elif args.file is not None:
        query = parse_query(sys.stdin.read() if args.file == "-" else Path(args.file).read_text())
    else:
        query = parse_query(args.query)
    with ApiClient.from_settings(settings) as api:
        print(json.dumps(api.query(query_json(query)), indent=2))
    return 0


def _cost_report(settings: Settings, args: argparse.Namespace) -> int:
    """`m1 cost report`: the optimize-cost flow's report, read from the API as `m1 query` reads;
    budgets are shown against M1_COST_BUDGET_*, no alert is raised and nothing is written."""
    import json
    from collections.abc import Mapping
    from datetime import UTC, datetime
    from typing import Any

    from m1lib.client import ApiClient
    from m1lib.metrics.pipeline import query_json
    from m1lib.metrics.query import parse_query
    from m1lib.metrics.result import QueryResult
    from m1lib.ops.cost.analysis import fetch_analysis
    from m1lib.ops.cost.budgets import BudgetPolicy, budget_statuses
    from m1lib.ops.cost.prices import load_prices
    from m1lib.ops.cost.recommend import rates_of, recommend
    from m1lib.ops.cost.report import CostReport

    with ApiClient.from_settings(settings) as api:

        def ask(query: Mapping[str, Any]) -> QueryResult:
            return QueryResult.from_dict(api.query(query_json(parse_query(query))))

        analysis = fetch_analysis(
            ask, datetime.now(UTC), lookback_days=args.days, top=args.top, peak_k=args.peak_k
        )
    statuses = budget_statuses(analysis, BudgetPolicy.from_settings(settings))
    rates = rates_of(load_prices(settings.cost.prices_file))
    report = CostReport(analysis, statuses, recommend(analysis, statuses, rates=rates), None)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.markdown(), end="")
    if args.json:
        print()
    return 0


def _operator() -> str:
    """The actor recorded for CLI actions: the operating-system user at the terminal."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"


def _tokens(settings: Settings, args: argparse.Namespace) -> int:
    """Capability tokens and their revocation, from a terminal; the actor is ``cli:<os user>``."""
    if args.action in {"issue", "introspect"}:
        return _tokens_policy(settings, args)
    from m1lib.revocation import RevocationManager

    manager = RevocationManager.from_settings(settings)
    try:
        return _TOKEN_ACTIONS[args.action](manager, args)
    finally:
        manager.close()


def _tokens_policy(settings: Settings, args: argparse.Namespace) -> int:
    import json
    from datetime import timedelta

    from m1lib.policy import PolicyEngine, Scope
    from m1lib.revocation import RevocationManager

    manager = RevocationManager.from_settings(settings)
    try:
        engine = PolicyEngine.from_settings(settings, revocations=manager)
        if args.action == "issue":
            ttl = timedelta(seconds=args.ttl_s) if args.ttl_s else None
            print(engine.issue_token(args.tool, Scope(args.scope), subject=args.subject, ttl=ttl))
            return 0
        presented = sys.stdin.read().strip() if args.presented == "-" else args.presented
        manager.load()  # the answer needs the current revocations, not an empty set
        answer = engine.introspect(presented)
        print(json.dumps(answer.to_json()))
        if not answer.active:
            print(f"inactive: {answer.reason}", file=sys.stderr)
            return 1
        return 0
    finally:
        manager.close()


def _tokens_revoke(manager: RevocationManager, args: argparse.Namespace) -> int:
    record = manager.revoke_token(args.jti, args.reason, _operator(), tool_name=args.tool)
    state = "revoked" if record.created else f"already revoked by {record.revoked_by}"
    print(f"{record.jti}: {state} at {record.revoked_at:%Y-%m-%d %H:%M:%S}Z")
    return 0


def _tokens_revoke_all(manager: RevocationManager, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    before = datetime.now(UTC)
    if args.issued_before:
        try:
            before = datetime.fromisoformat(args.issued_before)
        except ValueError:
            print(
                f"--issued-before: {args.issued_before!r} is not an ISO 8601 time", file=sys.stderr
            )
            return 2
    rule = manager.revoke_all(
        tool_name=args.tool,
        subject=args.subject,
        issued_before=before,
        reason=args.reason,
        revoked_by=_operator(),
    )
    print(
        f"rule {rule.id}: tokens for tool {rule.tool_name or '(any)'}, subject "
        f"{rule.subject or '(any)'} issued before {rule.issued_before.isoformat()} are denied"
    )
    return 0


def _tokens_list(manager: RevocationManager, args: argparse.Namespace) -> int:
    if args.rules:
        for rule in manager.get_rules():
            print(
                f"rule {rule.id:<6} tool={rule.tool_name or '*'} subject={rule.subject or '*'} "
                f"before={rule.issued_before:%Y-%m-%d %H:%M:%S}Z by {rule.created_by}: {rule.reason}"
            )
        return 0
    page = manager.get_revocation_list(args.tool, cursor=args.cursor, limit=args.limit)
    for record in page.items:
        print(
            f"{record.jti:36}  {record.tool_name or '-':20} {record.revoked_at:%Y-%m-%d %H:%M}Z "
            f"by {record.revoked_by}: {record.reason}"
        )
    if page.next_cursor:
        print(f"more: m1 tokens list --cursor {page.next_cursor}")
    return 0


def _tokens_status(manager: RevocationManager, args: argparse.Namespace) -> int:
    record = manager.get_record(args.jti)
    if record is None:
        print(f"{args.jti}: not revoked")
        return 1
    print(
        f"{record.jti}: revoked at {record.revoked_at:%Y-%m-%d %H:%M:%S}Z by {record.revoked_by} "
        f"(tool {record.tool_name or '-'}): {record.reason}; record kept until "
        f"{record.expires_at:%Y-%m-%d %H:%M:%S}Z"
    )
    return 0


def _tokens_purge(manager: RevocationManager, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    cutoff = datetime.now(UTC) - timedelta(hours=args.older_than_hours)
    summary = manager.purge(cutoff, actor=_operator(), dry_run=args.dry_run)
    verb = "would purge" if summary.dry_run else "purged"
    print(
        f"{verb} {summary.tokens} token records and {summary.rules} rules "
        f"expired before {cutoff:%Y-%m-%d %H:%M}Z"
    )
    for row in summary.rows():
        print(f"  {row['kind']:5} {row['tool']:24} {row['records']}")
    return 0


def _healing(settings: Settings, args: argparse.Namespace) -> int:
    """Pause, resume or show self-healing; the actor recorded is ``cli:<os user>``."""
    from m1lib.db.session import Database
    from m1lib.ops import streaks

    db = Database(settings)
    try:
        if args.action in {"pause", "resume"}:
            change = streaks.pause if args.action == "pause" else streaks.resume
            change(db, args.component, _operator(), args.reason)
            target = args.component or "every component"
            verb = "paused" if args.action == "pause" else "resumed"
            print(f"healing {verb} for {target} by {_operator()}")
            if args.action == "resume" and args.component:
                still = streaks.paused_by(db, args.component)
                if still is not None:
                    print(f"{args.component} is still paused: every component is, by {still}")
            return 0
        from m1lib.ops.healing_status import healing_status

        everything = next(
            (row for row in streaks.overrides(db) if row.component == "*" and row.paused), None
        )
        if everything is not None:
            print(
                f"every component paused by {everything.by} at "
                f"{everything.at:%Y-%m-%d %H:%M}Z: {everything.reason}"
            )
        for found in healing_status(db, components=[args.component] if args.component else None):
            print(found.line())
        return 0
    finally:
        db.dispose()


def _incidents(settings: Settings, args: argparse.Namespace) -> int:
    from m1lib.db.session import Database
    from m1lib.ops import incidents

    db = Database(settings)
    try:
        page = incidents.list_incidents(
            db, component=args.component, cursor=args.cursor, limit=args.limit
        )
        for item in page.items:
            ended = f"resolved {item.resolved_at:%Y-%m-%d %H:%M}Z" if item.resolved_at else ""
            suppressed = f" suppressed by {item.suppressed_by}" if item.suppressed_by else ""
            print(
                f"#{item.id:<6} {item.component:16} {item.status:9} "
                f"started {item.started_at:%Y-%m-%d %H:%M}Z {ended}{suppressed}"
            )
            print(f"        {item.trigger[:160]}  ({item.runbook})")
            for action in item.actions[-5:]:
                print(f"        {action['at'][:19]} {action['action']}: {action['outcome']}")
        if page.next_cursor:
            print(f"more: m1 incidents --cursor {page.next_cursor}")
        return 0
    finally:
        db.dispose()


def _validate(args: argparse.Namespace) -> int:
    """`m1 validate config`: every finding at once; the exit status is the gate's answer.

    Reads the raw variables (environment, env file), not loaded settings: a configuration the
    loader refuses is exactly what this command must describe, value by value.
    """
    import json

    from m1lib.ops.config_validator import validate_config

    report = validate_config(profile=args.profile, live=not args.offline, timeout_s=args.timeout_s)
    if args.json:
        print(json.dumps(report.to_json(args.strict, args.dry_run), indent=2))
    else:
        print(report.to_text(args.strict, args.dry_run))
    return report.exit_code(args.strict, args.dry_run)


def _staging(settings: Settings, args: argparse.Namespace) -> int:
    """Provision staging on a given PostgreSQL and Redis, or check an API; docs/deployment.md."""
    from m1lib.ops import staging

    if args.action == "verify":
        return _staging_verify(args)
    if not (args.database_url and args.redis_url):
        print("m1 staging setup: give --database-url and --redis-url", file=sys.stderr)
        return 2
    plan = staging.plan_staging(
        database_url=args.database_url,
        redis_url=args.redis_url,
        env_file=args.staging_env_file,
        admin_url=args.admin_url,
        redis_prefix=args.redis_prefix,
        admin_name=args.admin_name,
        force=args.force,
    )

    def hand_over_key(name: str, key: str) -> str:
        if args.admin_key_file:  # a container's log is no terminal: the key goes to a file
            staging.write_key_file(Path(args.admin_key_file), key)
            return f"written to {args.admin_key_file} (mode 0600): read it, then delete it"
        print(f"created admin credential {name!r}; its key (shown once):\n{key}", flush=True)
        return "shown once on the terminal"

    result = staging.setup_staging(plan, apply=not args.dry_run, deliver_key=hand_over_key)
    for step in result.steps:
        print(f"{step.step:17} {step.outcome.value:13} {step.seconds:6.2f} s  {step.detail}")
    changed = ", ".join(result.changed) or "nothing"
    verb = "would change" if result.dry_run else "changed"
    state = "ok" if result.ok else "FAILED"
    print(f"staging setup {state} in {result.seconds:.1f} s; {verb}: {changed}")
    return 0 if result.ok else 1


def _staging_verify(args: argparse.Namespace) -> int:
    import time

    from m1lib.ops.staging import Outcome, verify_api

    if not args.api_url:
        print("m1 staging verify: give --api-url", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.wait_s
    while True:
        result = verify_api(args.api_url)
        if result.outcome is Outcome.VERIFIED or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    print(f"api {result.outcome.value}: {result.detail}")
    return 0 if result.outcome is Outcome.VERIFIED else 1


def _cache_policy(settings: Settings, args: argparse.Namespace) -> int:
    """Show, set or reset the cache TTL policy; writes tell every replica at once."""
    from m1lib.db.session import Database
    from m1lib.ops.cost import policy_store
    from m1lib.ops.cost.policy import ToolTtl

    db = Database(settings)
    try:
        if args.action == "show":
            rules = policy_store.load_policy(db)
            for rule in rules.values():
                if args.tool in (None, rule.tool):
                    print(_describe_rule(rule))
            if not rules:
                print(f"no tool has a rule: every call uses {settings.cache.default_ttl_s:g} s")
            for change in policy_store.list_changes(db, tool=args.tool, limit=10):
                state = "reverted" if change.reverted_at else "in force"
                print(f"change {change.id} {change.tool} {change.applied_at:%Y-%m-%d %H:%M}Z by "
                      f"{change.applied_by} ({state}): {change.reason}")  # fmt: skip
            return 0
        if not args.tool:
            print(f"m1 cache policy {args.action}: give a TOOL", file=sys.stderr)
            return 2
        if args.action == "reset":
            found = policy_store.reset_tool(db, settings, args.tool, actor=_operator())
            print(f"{args.tool}: rule removed" if found else f"{args.tool}: had no rule")
            return 0
        if args.ttl is None or args.budget is None:
            print("m1 cache policy set: give --ttl and --budget (seconds)", file=sys.stderr)
            return 2
        rule = ToolTtl(
            tool=args.tool,
            ttl_s=args.ttl,
            staleness_budget_s=args.budget,
            peak_ttl_s=args.peak_ttl,
            offpeak_ttl_s=args.offpeak_ttl,
            peak_hours=args.peak_hours,
            stale_while_revalidate_s=args.swr,
        )
        stored = policy_store.set_tool(db, settings, rule, actor=_operator())
        print(_describe_rule(stored))
        return 0
    finally:
        db.dispose()


def _describe_rule(rule: ToolTtl) -> str:
    text = f"{rule.tool}: ttl {rule.ttl_s:g} s, budget {rule.staleness_budget_s:g} s"
    if rule.peak_hours is not None:
        start, end = rule.peak_hours
        peak, offpeak = rule.peak_ttl_s or rule.ttl_s, rule.offpeak_ttl_s or rule.ttl_s
        text += f", {start:02d}-{end:02d}h UTC {peak:g} s else {offpeak:g} s"
    if rule.stale_while_revalidate_s:
        text += f", stale-while-revalidate {rule.stale_while_revalidate_s:g} s"
    return text + f" (v{rule.version}, {rule.updated_by})"


def _peak_hours(text: str) -> tuple[int, int]:
    start, sep, end = text.partition("-")
    try:
        if sep:
            return int(start), int(end)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not START-END (UTC hours 0-23, e.g. 8-18)")


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from m1lib import demo

    return demo.main(settings, args)


def _cost_prices(settings: Settings, args: argparse.Namespace) -> int:
    """`m1 cost prices`: the effective price table (built-in plus M1_COST_PRICES_FILE)."""
    from m1lib.ops.cost.prices import BUILT_IN, load_prices

    table = load_prices(settings.cost.prices_file)  # a bad file: SettingsError, exit 2
    print("prices: built-in" + ("" if table.source == BUILT_IN else f", with {table.source}"))
    print(f"{'model':40} {'input USD/Mtok':>16} {'output USD/Mtok':>16}")
    for price in table.models.values():
        print(f"{price.model:40} {price.input_usd_per_mtok:>16} {price.output_usd_per_mtok:>16}")
    if table.tools:
        print(f"{'paid tool':40} {'USD per call':>16}")
        for tool, per_call in table.tools.items():
            print(f"{tool:40} {per_call:>16}")
    else:
        print("no paid tools (add them under [tools] in M1_COST_PRICES_FILE)")
    return 0


def _validate_production(settings: Settings, args: argparse.Namespace) -> int:
    """The production-validation suite against the target; exit 0 no fail, 1 a fail (--strict:
    or a warn), 2 a bad target."""
    import json

    from pydantic import ValidationError

    from m1lib.ops.validation.suite import run_suite
    from m1lib.ops.validation.target import Credentials, Target

    try:
        target = Target(
            profile=args.profile,
            api_url=args.api_url,
            database_url=args.database_url,
            redis_url=args.redis_url,
            prefect_url=args.prefect_url,
            tls_cert_file=args.tls_cert_file,
        )
    except ValidationError as error:
        first = error.errors()[0]
        flag = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "target"
        print(f"m1 validate production: {flag}: {first['msg']}", file=sys.stderr)
        return 2
    report = run_suite(target, Credentials.from_settings(settings), settings)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for row in report.rows():
            print(
                f"{row['status']:4}  {row['id']:28} {row['observed'][:40]:40} "
                f"{row['threshold'][:36]:36} {row['message']}".rstrip()
            )
        counts = report.counts()
        print(
            f"verdict {report.verdict.value}: {counts['pass']} pass, {counts['warn']} warn, "
            f"{counts['fail']} fail (SLO file {report.slo_source})"
        )
    return report.exit_status(strict=args.strict)


def _add_validate_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`m1 validate config` (this configuration's rules) and `m1 validate production` (scenarios
    against a running deployment); both exit 1 when they fail, so either can gate a pipeline."""
    validate = verbs.add_parser(
        "validate", help="check a deployment: its configuration, or production readiness"
    )
    checks = validate.add_subparsers(dest="what", required=True)
    config = checks.add_parser(
        "config",
        help="validate this configuration for its environment (exit 1 when it fails: a gate)",
        description="Exit codes: 0 pass (or any dry run), 1 findings at a failing severity.",
    )
    config.add_argument(
        "--profile",
        choices=["local", "staging", "production"],
        help="which rules apply (default from M1_ENV: development is local)",
    )
    config.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fail on critical or high findings (default); --no-strict fails on critical only",
    )
    config.add_argument(
        "--dry-run", action="store_true", help="report everything, never fail (exit 0)"
    )
    config.add_argument(
        "--offline", action="store_true", help="static checks only: connect to nothing"
    )
    config.add_argument("--json", action="store_true", help="the report as JSON")
    config.add_argument(
        "--timeout-s", type=float, default=3.0, help="time allowed to each live probe (s)"
    )
    config.set_defaults(handler=None, raw_handler=_validate)
    production = checks.add_parser(
        "production",
        help="29 scenarios against a deployment: config, database, Redis, API, security, SLOs",
        description="Secrets come from the environment (M1_VALIDATION_ADMIN_KEY, "
        "M1_VALIDATION_DATABASE_PASSWORD, M1_API_KEY, the configured URLs), never flags. "
        "Exit codes: 0 no scenario failed; 1 one failed (--strict: or warned); 2 bad usage.",
    )
    production.add_argument(
        "--profile", choices=["local", "staging", "production"], default="local"
    )
    production.add_argument("--api-url", help="M1 API base URL (default: M1_API_URL or own)")
    production.add_argument(
        "--database-url", help="database URL without password (default: M1_DATABASE_URL)"
    )
    production.add_argument(
        "--redis-url", help="Redis URL without password (default: M1_REDIS_URL)"
    )
    production.add_argument("--prefect-url", help="Prefect API URL (reported)")
    production.add_argument(
        "--tls-cert-file", type=Path, help="PEM certificate the API serves (M1_TLS_CERT_FILE)"
    )
    production.add_argument("--json", action="store_true", help="print the report as JSON")
    production.add_argument("--strict", action="store_true", help="a warn fails the gate too")
    production.set_defaults(handler=_validate_production)


_TOKEN_ACTIONS: dict[str, Callable[[RevocationManager, argparse.Namespace], int]] = {
    "revoke": _tokens_revoke,
    "revoke-all": _tokens_revoke_all,
    "list": _tokens_list,
    "status": _tokens_status,
    "purge": _tokens_purge,
}


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``, else argparse's usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range; allowed: {low}-{high}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m1", description="M1 control plane for AI agents' tool calls"
    )
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help="read the configuration from this dotenv file instead of ./.env (sets M1_ENV_FILE "
        "for this command and every process it starts; the environment still wins)",
    )
    verbs = parser.add_subparsers(dest="verb", required=True)

    up = verbs.add_parser(
        "up", help="run the whole control plane (Prefect server and UI, API, runner)"
    )
    up.add_argument(
        "--no-serve",
        action="store_true",
        help="run only the API: no Prefect server, no runner (workers run the flows)",
    )
    up.set_defaults(handler=_up)

    api = verbs.add_parser(
        "api",
        help="one API replica in the foreground (no migrations, no Prefect): containers, "
        "service managers",
    )
    api.set_defaults(handler=_api)

    db = verbs.add_parser("db", help="database migrations")
    db.add_argument("action", choices=["upgrade", "downgrade", "current"])
    db.add_argument("revision", nargs="?", help="target revision (upgrade: default head)")
    db.set_defaults(handler=_db)

    config = verbs.add_parser("config", help="show the configuration, regenerate its docs")
    config.add_argument("action", choices=["show", "docs"])
    config.add_argument("--check", action="store_true", help="docs: fail if the files are stale")
    config.add_argument(
        "--root", default=".", help="docs: project directory (README, .env.example)"
    )
    config.set_defaults(handler=_config)

    keys = verbs.add_parser("keys", help="API credentials: create, list, revoke")
    keys.add_argument("action", choices=["create", "list", "revoke"])
    keys.add_argument("name", nargs="?", help="credential name (the actor in audits)")
    keys.add_argument(
        "--role",
        choices=ROLE_CHOICES,
        default="viewer",
        help="viewer: read; agent: record events, introspect tokens; service: both (M1's own "
        "flow runs); admin: everything",
    )
    keys.add_argument(
        "--secret-block",
        metavar="BLOCK",
        help="create: store the key in this Prefect Secret block (flow runs on workers read "
        "M1_API_KEY_BLOCK) instead of printing it",
    )
    keys.set_defaults(handler=_keys)

    query = verbs.add_parser(
        "query", help="run a dashboard query on the API (M1_API_URL, M1_API_KEY); JSON out"
    )
    query.add_argument("query", nargs="?", help="the query as JSON (docs/contracts.md)")
    query.add_argument("--template", metavar="NAME", help="a ready-made query by name")
    query.add_argument("--file", metavar="FILE", help="the query's JSON from a file (- : stdin)")
    query.set_defaults(handler=_query)

    _add_tokens_parser(verbs)
    _add_healing_parsers(verbs)
    _add_validate_parser(verbs)
    _add_staging_parser(verbs)

    _add_cache_parser(verbs)

    from m1lib.demo import add_arguments as add_demo_arguments  # light: no HTTP client imported

    cost = verbs.add_parser("cost", help="cost tracking: prices and the optimize-cost report")
    cost_verbs = cost.add_subparsers(dest="action", required=True)
    prices = cost_verbs.add_parser(
        "prices",
        help="model prices (USD per million tokens) and paid tools (USD per call): built-in "
        "plus M1_COST_PRICES_FILE",
    )
    prices.set_defaults(handler=_cost_prices)
    report = cost_verbs.add_parser(
        "report",
        help="spend, budgets, peaks and recommendations from the API (M1_API_URL, M1_API_KEY)",
    )
    report.add_argument("--json", action="store_true", help="the report as JSON")
    report.add_argument(
        "--days", type=_bounded_int(1, 60), default=7, help="complete days of history (1-60)"
    )
    report.add_argument(
        "--top", type=_bounded_int(1, 100), default=10, help="highest-cost operations (1-100)"
    )
    report.add_argument(
        "--peak-k", type=float, default=3.0, help="k of the peak-hour rule (default 3)"
    )
    report.set_defaults(handler=_cost_report)
    demo = verbs.add_parser(
        "demo",
        help="a synthetic workload against a running API, for the dashboard (make run first)",
    )
    add_demo_arguments(demo)
    demo.set_defaults(handler=_demo)
    return parser


def _add_healing_parsers(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from m1lib.ops.report import COMPONENTS  # light: the shared vocabulary only

    healing = verbs.add_parser(
        "healing",
        help="pause, resume or show self-healing (checks go on while paused; actions do not)",
        description="The actor recorded is cli:<os user>; incidents say who suppressed them.",
    )
    healing.add_argument("action", choices=["pause", "resume", "status"])
    healing.add_argument(
        "component", nargs="?", choices=COMPONENTS, help="one component (default: all)"
    )
    healing.add_argument("--reason", default="", help="pause/resume: kept with the override")
    healing.set_defaults(handler=_healing)

    listing = verbs.add_parser("incidents", help="incidents, newest first")
    listing.add_argument("--limit", type=int, default=20, help="incidents per page (1-500)")
    listing.add_argument("--component", choices=COMPONENTS)
    listing.add_argument("--cursor", help="continue a listing (printed after a full page)")
    listing.set_defaults(handler=_incidents)


def _add_staging_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    staging = verbs.add_parser(
        "staging",
        help="provision staging on a PostgreSQL and Redis (idempotent), or check an API",
        description="setup: create the database if missing, migrate, verify Redis, write the "
        "env file (0600, kept unless --force), check the tool registry, create the admin "
        "credential (key shown once), run the validator. Exit 1 when a step failed. "
        "verify: poll an API's /health/live and /health/ready until both answer 200.",
    )
    staging.add_argument("action", choices=["setup", "verify"])
    staging.add_argument(
        "--database-url",
        help="the staging database, created if missing (password: in the URL or PGPASSWORD)",
    )
    staging.add_argument(
        "--admin-url", help="where CREATE DATABASE runs (default: same server, database postgres)"
    )
    staging.add_argument("--redis-url")
    staging.add_argument("--redis-prefix", default="m1", help="M1_REDIS_PREFIX of staging")
    staging.add_argument(  # its own dest: `m1 --env-file` (what to read) is another option
        "--env-file",
        dest="staging_env_file",
        default=".env.staging",
        help="setup: the env file to write, mode 0600",
    )
    staging.add_argument("--admin-name", default="staging-admin", help="admin credential name")
    staging.add_argument(
        "--force", action="store_true", help="rewrite an existing env file (new secrets)"
    )
    staging.add_argument(
        "--admin-key-file",
        metavar="FILE",
        help="write a new admin key to FILE (mode 0600) instead of printing it (containers)",
    )
    staging.add_argument("--dry-run", action="store_true", help="setup: only say what it would do")
    staging.add_argument("--api-url", help="verify: the API's base URL")
    staging.add_argument(
        "--wait-s", type=float, default=0.0, help="verify: keep polling this long (s)"
    )
    staging.set_defaults(handler=_staging)


def _add_cache_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cache = verbs.add_parser("cache", help="the cache TTL policy every cached_call follows")
    what = cache.add_subparsers(dest="what", required=True)
    policy = what.add_parser(
        "policy",
        help="show, set or reset a tool's TTL rule (replicas follow at once, services within "
        "M1_CACHE_POLICY_REFRESH_S)",
        description="The actor recorded is cli:<os user>; every change is in the change log.",
    )
    policy.add_argument("action", choices=["show", "set", "reset"])
    policy.add_argument("tool", nargs="?", help="the tool (show: default all)")
    policy.add_argument("--ttl", type=float, help="set: TTL in s (at most the budget)")
    policy.add_argument("--budget", type=float, help="set: staleness budget in s (max age served)")
    policy.add_argument(
        "--peak-hours", type=_peak_hours, help="set: START-END UTC hours, e.g. 8-18"
    )
    policy.add_argument("--peak-ttl", type=float, help="set: TTL in s inside the peak hours")
    policy.add_argument("--offpeak-ttl", type=float, help="set: TTL in s outside them")
    policy.add_argument(
        "--swr", type=float, default=0.0, help="set: stale-while-revalidate window in s (0: off)"
    )
    policy.set_defaults(handler=_cache_policy)


def _add_tokens_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tokens = verbs.add_parser(
        "tokens",
        help="capability tokens: issue, revoke, revoke-all, list, status, purge, introspect",
        description="Exit codes: 0 ok; 1 status of a jti that is not revoked, or an inactive token.",
    )
    actions = tokens.add_subparsers(dest="action", required=True)
    issue = actions.add_parser("issue", help="sign a token for a tool, scope and subject")
    issue.add_argument("tool", help="tool name from the registry")
    issue.add_argument("--scope", choices=["read", "write", "execute"], default="read")
    issue.add_argument("--subject", required=True, help="the agent or user the token is for")
    issue.add_argument(
        "--ttl-s", type=int, default=0, help="lifetime in s (default M1_TOKEN_TTL_S)"
    )
    revoke = actions.add_parser("revoke", help="revoke one token by jti (idempotent)")
    revoke.add_argument("jti")
    revoke.add_argument("--reason", default="", help="kept in the record and the audit")
    revoke.add_argument("--tool", help="the token's tool, for listings")
    revoke_all = actions.add_parser(
        "revoke-all", help="deny every token for a tool and/or subject issued before a time"
    )
    revoke_all.add_argument("--tool")
    revoke_all.add_argument("--subject")
    revoke_all.add_argument("--issued-before", help="ISO 8601 time with zone (default now)")
    revoke_all.add_argument("--reason", default="")
    listing = actions.add_parser("list", help="revoked tokens, newest first (or --rules)")
    listing.add_argument("--tool")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor")
    listing.add_argument("--rules", action="store_true", help="list not-before rules instead")
    status = actions.add_parser("status", help="the database's record of a jti")
    status.add_argument("jti")
    purge = actions.add_parser("purge", help="delete records of tokens that expired long ago")
    purge.add_argument("--older-than-hours", type=float, default=24.0)
    purge.add_argument("--dry-run", action="store_true", help="only count")
    introspect = actions.add_parser("introspect", help="is a token active? (its claims if so)")
    introspect.add_argument("presented", metavar="TOKEN", help="the token, or - to read stdin")
    tokens.set_defaults(handler=_tokens)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.env_file:
        use_env_file(Path(args.env_file))
    raw_handler: Callable[[argparse.Namespace], int] | None = getattr(args, "raw_handler", None)
    try:
        if raw_handler is not None:  # judges the raw configuration itself
            return raw_handler(args)
        handler: Callable[[Settings, argparse.Namespace], int] = args.handler
        settings = load_settings()
        return handler(settings, args)
    except M1Error as error:
        print(f"m1: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
