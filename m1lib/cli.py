"""The `m1` command: thin verbs over the library and the flows.

Prefect is imported only by the verbs that need it, so `m1 config show` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from m1lib.errors import M1Error
from m1lib.settings import Settings, load_settings, masked_values


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


def _operator() -> str:
    """The actor recorded for CLI actions: the operating-system user at the terminal."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m1", description="M1 control plane for AI agents' tool calls"
    )
    verbs = parser.add_subparsers(dest="verb", required=True)

    up = verbs.add_parser(
        "up", help="run the whole control plane (Prefect server and UI, API, runner)"
    )
    up.add_argument(
        "--no-serve", action="store_true", help="run only the API (workers run the flows)"
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
    keys.add_argument("--role", choices=["viewer", "admin"], default="viewer")
    keys.set_defaults(handler=_keys)
    return parser


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
