"""Replica heartbeats and the control channel: how flows change live state they cannot reach.

A flow never touches a replica's memory. It writes a versioned command (a ``control_commands``
row, its id is the version) with :func:`issue_command`; every live replica's :class:`ReplicaAgent`
applies it once through its :class:`CommandRegistry` and writes an ack. The database is the truth:
Redis pub/sub only wakes replicas sooner, so a lost nudge (or no Redis at all) costs one poll
period.

Delivery is at least once: a replica that applies a command and then fails to write the ack
applies it again on the next pass, so handlers must be idempotent (evict, switch, reload, resync).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast, overload

import redis
from sqlalchemy import Table, exc, or_, select

from m1lib.db.models import ControlAck, ControlCommand, Replica
from m1lib.db.upsert import upsert
from m1lib.errors import InputError, M1Error, UsageError
from m1lib.loops import Loop, LoopThreads
from m1lib.redis_conn import key, make_redis
from m1lib.subscriber import run_subscriber
from m1lib.text import COMMAND_NAME_MAX, NAME_RULE, REPLICA_ID_MAX, check_json, check_text

if TYPE_CHECKING:
    from m1lib.db.session import Database
    from m1lib.settings import Settings

__all__ = [
    "CommandAck",
    "CommandHandler",
    "CommandRegistry",
    "ReplicaAgent",
    "ReplicaFigures",
    "ReplicaStatus",
    "acks_for",
    "control_channel",
    "issue_command",
    "live_replicas",
]

logger = logging.getLogger("m1.control")

CommandHandler = Callable[[dict[str, Any]], str]
"""Applies one command's args in this process; returns a short detail text for the ack."""

_CREATED_BY_MAX = 128  # control_commands.created_by
_TTL_MAX_S = 366 * 86400  # a command nobody applied within a year is no command any more
_DETAIL_MAX = 2000  # an ack says what happened, it is not a log
_BATCH = 100  # commands read per query; a pass keeps reading until none is left
# What a loop survives and retries: the database or Redis being down or refusing a statement.
_TRANSIENT: tuple[type[BaseException], ...] = (M1Error, exc.SQLAlchemyError)


def _now() -> datetime:
    return datetime.now(UTC)


def control_channel(settings: Settings) -> str:
    """The Redis channel that nudges replicas to poll now (payload: the command id)."""
    return key(settings, "control")


class CommandRegistry:
    """The command handlers of one process, by command name.

    Each module that owns live state registers what it can do, so the control channel needs no
    knowledge of caches or policies. Handlers must be idempotent: delivery is at least once.

    >>> registry = CommandRegistry()
    >>> @registry.register("cache.evict")
    ... def evict(args: dict[str, Any]) -> str:
    ...     return f"evicted {cache.evict(args.get('prefix', ''))} entries"
    """

    def __init__(self) -> None:
        self._handlers: dict[str, CommandHandler] = {}
        self._lock = threading.Lock()

    @overload
    def register(self, name: str) -> Callable[[CommandHandler], CommandHandler]: ...

    @overload
    def register(self, name: str, handler: CommandHandler) -> CommandHandler: ...

    def register(
        self, name: str, handler: CommandHandler | None = None
    ) -> CommandHandler | Callable[[CommandHandler], CommandHandler]:
        """Register ``handler`` under ``name``; without a handler, return a decorator."""
        _check_name(name)

        def add(function: CommandHandler) -> CommandHandler:
            with self._lock:
                existing = self._handlers.get(name)
                if existing is not None and existing is not function:
                    raise UsageError(f'command "{name}" already has a handler: {existing!r}')
                self._handlers[name] = function
            return function

        return add if handler is None else add(handler)

    def get(self, name: str) -> CommandHandler | None:
        with self._lock:
            return self._handlers.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._handlers)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._handlers

    def apply(self, name: str, args: Mapping[str, Any]) -> tuple[bool, str]:
        """Run the handler of ``name``; ``(ok, detail)`` where a failure's detail is its error text.

        The ack must carry any handler failure, whatever its class: handlers are other modules'
        code, and one that raises must not stop the replica applying the next command.
        """
        handler = self.get(name)
        if handler is None:
            allowed = ", ".join(self.names()) or "(none)"
            return False, f'command "{name}" is not registered on this replica; allowed: {allowed}'
        try:
            detail = handler(dict(args))
        except Exception as error:  # a handler's failure is the ack's content
            logger.warning("command %s failed", name, exc_info=True)
            return False, _clip(f"{type(error).__name__}: {error}")
        return True, _clip(str(detail))


def _check_name(name: str) -> None:
    allowed = [f"1-{COMMAND_NAME_MAX} characters", NAME_RULE, "no surrounding spaces"]
    if (
        not isinstance(name, str)
        or not name
        or len(name) > COMMAND_NAME_MAX
        or name != name.strip()
    ):
        raise InputError("name", f"{name!r:.80} is not a command name", allowed)
    check_text("name", name, COMMAND_NAME_MAX, required=True)


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 1] + "…"


# -- writing commands and reading what happened -----------------------------------------------


def issue_command(
    db: Database,
    name: str,
    args: Mapping[str, Any] | None,
    *,
    created_by: str,
    target: str | None = None,
    ttl_s: float | None = None,
    settings: Settings,
) -> int:
    """Write a command every live replica (or only ``target``) applies once; returns its id.

    The row is committed before the pub/sub nudge, so a woken replica always finds it. A failed
    publish is only logged: replicas still find the command on their next poll. Every input is
    checked first (``InputError`` naming it): names and the target are text without control
    characters, ``args`` is JSON within the limits of :func:`m1lib.text.check_json`.
    """
    _check_name(name)
    check_text("target", target, REPLICA_ID_MAX, required=True, optional=True)
    check_text("created_by", created_by, _CREATED_BY_MAX, required=True)
    if args is not None and not isinstance(args, Mapping):
        raise InputError("args", f"{type(args).__name__} is not a mapping", ["a JSON object"])
    arguments = dict(args or {})
    check_json("args", arguments)
    ttl = settings.control.command_ttl_s if ttl_s is None else ttl_s
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= _TTL_MAX_S:
        raise InputError(
            "ttl_s", f"{ttl!r} is not a lifetime", [f"a number of seconds > 0, <= {_TTL_MAX_S}"]
        )
    created_at = _now()
    command = ControlCommand(
        name=name,
        args=arguments,
        target=target,
        created_by=created_by,
        created_at=created_at,
        expires_at=created_at + timedelta(seconds=ttl),
    )
    with db.transaction() as session:
        session.add(command)
        session.flush()
        command_id = int(command.id)
    _publish_nudge(settings, command_id)
    return command_id


def _publish_nudge(settings: Settings, command_id: int) -> None:
    client = make_redis(settings)
    if client is None:
        return
    try:
        client.publish(control_channel(settings), str(command_id))
    except (redis.RedisError, OSError) as error:
        logger.warning(
            "control nudge for command %s not published (replicas will poll): %s", command_id, error
        )
    finally:
        client.close()


@dataclass(frozen=True)
class CommandAck:
    """One replica's answer to one command."""

    command_id: int
    replica_id: str
    ok: bool
    detail: str
    applied_at: datetime

    @classmethod
    def from_row(cls, row: ControlAck) -> CommandAck:
        return cls(
            command_id=int(row.command_id),
            replica_id=row.replica_id,
            ok=row.ok,
            detail=row.detail,
            applied_at=row.applied_at,
        )


@dataclass(frozen=True)
class ReplicaStatus:
    """A replica's last heartbeat, as flows and `m1` read it."""

    id: str
    base_url: str
    hostname: str
    pid: int
    started_at: datetime
    last_seen: datetime
    cache_backend: str
    revocation_sync_age_s: float | None
    store_lag_s: float | None
    rss_bytes: int
    queue_drops: int
    last_command_id: int | None

    @classmethod
    def from_row(cls, row: Replica) -> ReplicaStatus:
        return cls(
            id=row.id,
            base_url=row.base_url,
            hostname=row.hostname,
            pid=row.pid,
            started_at=row.started_at,
            last_seen=row.last_seen,
            cache_backend=row.cache_backend,
            revocation_sync_age_s=row.revocation_sync_age_s,
            store_lag_s=row.store_lag_s,
            rss_bytes=row.rss_bytes,
            queue_drops=row.queue_drops,
            last_command_id=row.last_command_id,
        )


def acks_for(db: Database, command_id: int) -> list[CommandAck]:
    """The acks of one command so far, by replica id."""
    query = (
        select(ControlAck)
        .where(ControlAck.command_id == command_id)
        .order_by(ControlAck.replica_id)
    )
    with db.transaction() as session:
        rows = session.scalars(query).all()
    return [CommandAck.from_row(row) for row in rows]


def live_replicas(db: Database, within_s: float) -> list[ReplicaStatus]:
    """Replicas whose heartbeat is at most ``within_s`` old, by id."""
    since = _now() - timedelta(seconds=within_s)
    query = select(Replica).where(Replica.last_seen >= since).order_by(Replica.id)
    with db.transaction() as session:
        rows = session.scalars(query).all()
    return [ReplicaStatus.from_row(row) for row in rows]


# -- the replica side -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaFigures:
    """What a replica reports in each heartbeat; the agent asks its owner for fresh figures."""

    cache_backend: str = "memory"
    revocation_sync_age_s: float | None = None
    store_lag_s: float | None = None
    rss_bytes: int = 0
    queue_drops: int = 0


class ReplicaAgent:
    """The background threads of one API replica: heartbeat, command polling, pub/sub wake-up.

    Use one per process, started and stopped by the app's lifespan. It survives database and
    Redis outages (logs and retries next period); ``figures`` runs on the heartbeat thread and
    must not raise. A replica that was down applies, when it comes
    back under the same id, every command it has not acked that has not expired.

    >>> agent = ReplicaAgent(settings, db=db, registry=registry, figures=lambda: ReplicaFigures())
    >>> agent.start()
    >>> agent.stop()
    """

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database,
        registry: CommandRegistry,
        figures: Callable[[], ReplicaFigures],
    ) -> None:
        self.settings = settings
        self.replica_id = settings.replica_id
        if len(self.replica_id) > REPLICA_ID_MAX:
            raise InputError(
                "replica.id",
                f"{self.replica_id!r} is longer than {REPLICA_ID_MAX} "
                "characters; allowed: a shorter name",
            )
        self._db = db
        self._registry = registry
        self._figures = figures
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._apply_lock = threading.Lock()
        self._loops = LoopThreads("m1-control", stop=self._stop, wake=self._wake, logger=logger)
        self._started_at = _now()
        self._applied_count = 0
        self._last_applied_id: int | None = None

    @property
    def applied_count(self) -> int:
        """Commands this agent applied and acked (ok or not) since it was built."""
        return self._applied_count

    @property
    def last_applied_id(self) -> int | None:
        """Id of the command acked last (not always the highest: ids are not commit order)."""
        return self._last_applied_id

    @property
    def running(self) -> bool:
        return self._loops.running

    def start(self) -> None:
        """Start the threads (the first pass at once, to catch up on what was issued while we
        were down); a second call while running does nothing."""
        loops: list[Loop] = [("heartbeat", self._heartbeat_loop), ("apply", self._apply_loop)]
        if self.settings.redis_url is not None:
            loops.append(("subscriber", self._subscriber_loop))
        self._loops.start(loops, before=self._mark_started)

    def _mark_started(self) -> None:
        self._started_at = _now()

    def stop(self) -> None:
        """Stop and join the threads; safe to call twice or before ``start``."""
        self._loops.stop()

    def wake(self) -> None:
        """Poll for commands now instead of at the end of the period."""
        self._wake.set()

    # one step of each loop, public so an owner can run them synchronously (and tests can)

    def heartbeat(self) -> None:
        """Upsert this replica's row with fresh figures."""
        figures = self._figures()
        values: dict[str, Any] = {
            "id": self.replica_id,
            "base_url": self.settings.api_base_url,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self._started_at,
            "last_seen": _now(),
            "cache_backend": figures.cache_backend,
            "revocation_sync_age_s": figures.revocation_sync_age_s,
            "store_lag_s": figures.store_lag_s,
            "rss_bytes": figures.rss_bytes,
            "queue_drops": figures.queue_drops,
        }
        if self._last_applied_id is not None:  # keep the last id a previous run reported
            values["last_command_id"] = self._last_applied_id
        update = [name for name in values if name != "id"]
        table = cast(Table, Replica.__table__)
        statement = upsert(self._db.engine.dialect, table, values, ["id"], update)
        with self._db.transaction() as session:
            session.execute(statement)

    def apply_pending(self) -> int:
        """Apply, in id order, every unexpired command for this replica it has not acked yet.

        "Not acked" is a NOT EXISTS on the acks, not an id cursor: ids are handed out before commit,
        so a lower id can become visible after a higher one was applied.
        """
        applied = 0
        with self._apply_lock:
            while not self._stop.is_set():
                batch = self._pending()
                for command_id, name, args in batch:
                    if self._stop.is_set():
                        break
                    ok, detail = self._registry.apply(name, args)
                    if self._write_ack(command_id, ok, detail):
                        applied += 1
                        self._applied_count += 1
                        self._last_applied_id = command_id
                        log = logger.info if ok else logger.warning
                        log(
                            "command %s %s on %s: %s",
                            command_id,
                            name,
                            self.replica_id,
                            detail if ok else f"failed: {detail}",
                        )
                if len(batch) < _BATCH:
                    break
        return applied

    def _pending(self) -> list[tuple[int, str, dict[str, Any]]]:
        acked = (
            select(ControlAck.command_id)
            .where(
                ControlAck.command_id == ControlCommand.id, ControlAck.replica_id == self.replica_id
            )
            .exists()
        )
        query = (
            select(ControlCommand.id, ControlCommand.name, ControlCommand.args)
            .where(
                ~acked,
                ControlCommand.expires_at > _now(),
                or_(ControlCommand.target.is_(None), ControlCommand.target == self.replica_id),
            )
            .order_by(ControlCommand.id)
            .limit(_BATCH)
        )
        with self._db.transaction() as session:
            rows = session.execute(query).all()
        return [(int(row.id), row.name, dict(row.args or {})) for row in rows]

    def _write_ack(self, command_id: int, ok: bool, detail: str) -> bool:
        """Insert the ack once; False when it already exists (another thread, a retry) or the
        command was deleted meanwhile."""
        values = {
            "command_id": command_id,
            "replica_id": self.replica_id,
            "ok": ok,
            "detail": detail,
            "applied_at": _now(),
        }
        table = cast(Table, ControlAck.__table__)
        statement = upsert(self._db.engine.dialect, table, values, ["command_id", "replica_id"])
        # RETURNING says whether this insert happened (see upsert).
        returning = statement.returning(table.c.command_id)
        try:
            with self._db.transaction() as session:
                inserted = session.execute(returning).first() is not None
        except exc.IntegrityError:
            logger.info("command %s vanished before %s acked it", command_id, self.replica_id)
            return False
        return inserted

    # the loops

    def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.heartbeat()
            except _TRANSIENT as error:
                logger.warning(
                    "heartbeat of %s failed, retrying in %.1f s: %s",
                    self.replica_id,
                    self.settings.replica.heartbeat_s,
                    error,
                )
            self._loops.sleep(self.settings.replica.heartbeat_s)

    def _apply_loop(self) -> None:
        while self._loops.pause(self.settings.control.poll_s):
            try:
                self.apply_pending()
            except _TRANSIENT as error:
                logger.warning(
                    "control poll of %s failed, retrying in %.1f s: %s",
                    self.replica_id,
                    self.settings.control.poll_s,
                    error,
                )

    def _subscriber_loop(self) -> None:
        """Turn pub/sub nudges into wake-ups; polling goes on while Redis is away."""
        run_subscriber(
            self.settings,
            control_channel(self.settings),
            stop=self._stop,
            on_message=self._on_nudge,
            # nudges sent while we were not subscribed are lost: poll now
            on_subscribed=self._wake.set,
            label=f"control subscriber of {self.replica_id}",
            meanwhile="polling continues",
            logger=logger,
        )

    def _on_nudge(self, _data: object) -> None:
        self._wake.set()
