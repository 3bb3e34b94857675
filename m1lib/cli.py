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
from m1lib.settings import Settings, load_settings, masked_values

# m1lib.auth.Role's values (auth is imported when a verb needs it; a test keeps the two equal)
ROLE_CHOICES = ("viewer", "agent", "service", "admin")

if TYPE_CHECKING:
    from m1lib.revocation import RevocationManager


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from deployments.local import up

    return up(settings, serve=not args.no_serve)


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


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from m1lib import demo

    return demo.main(settings, args)


_TOKEN_ACTIONS: dict[str, Callable[[RevocationManager, argparse.Namespace], int]] = {
    "revoke": _tokens_revoke,
    "revoke-all": _tokens_revoke_all,
    "list": _tokens_list,
    "status": _tokens_status,
    "purge": _tokens_purge,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m1", description="M1 control plane for AI agents' tool calls"
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

    from m1lib.demo import add_arguments as add_demo_arguments  # light: no HTTP client imported

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
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        settings = load_settings()
        return handler(settings, args)
    except M1Error as error:
        print(f"m1: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
