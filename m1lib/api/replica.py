"""The live parts of one API replica, built once per API process and closed with it.

Everything a request handler needs lives here (database, cache, credentials, the policy engine,
the control agent), so the app factory and the tests build the same thing and nothing is created
at import. API-only: the library's process-wide engine is :mod:`m1lib.process_engine`, the
metrics pipeline :class:`m1lib.metrics.MetricsRuntime`.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from dataclasses import dataclass, field

import psutil

from m1lib.api.sessions import session_key
from m1lib.auth import CredentialStore
from m1lib.cache import Cache
from m1lib.control import CommandRegistry, ReplicaAgent, ReplicaFigures
from m1lib.db.session import Database
from m1lib.errors import M1Error, UsageError
from m1lib.metrics import MetricsRuntime, install_default, register_metrics_commands
from m1lib.ops.checks import HealthChecker, ReadinessProbe
from m1lib.ops.cost.policy_refresh import PolicyRefresher, register_policy_commands
from m1lib.ops.cost.prices import PriceTable, install_prices, load_prices
from m1lib.policy import PolicyEngine
from m1lib.process_cache import install_cache
from m1lib.process_engine import install_engine
from m1lib.ratelimit import RateLimiter
from m1lib.redis_conn import make_redis
from m1lib.revocation import RevocationManager
from m1lib.settings import Settings, prefect_api_url_from_environment
from m1lib.signing import resolve_jwt_secret

logger = logging.getLogger("m1.api.replica")


@dataclass
class ReplicaRuntime:
    """The live parts of one API replica: one per API process."""

    settings: Settings
    db: Database
    cache: Cache
    credentials: CredentialStore
    limiter: RateLimiter
    session_key: bytes | None  # None: no signing secret yet, so no browser sessions
    revocations: RevocationManager
    metrics: MetricsRuntime
    policy: PolicyEngine | None  # None: no signing key yet, so no token can be issued or read
    prices: PriceTable  # m1lib.record_cost in this process prices with it
    registry: CommandRegistry = field(default_factory=CommandRegistry)
    agent: ReplicaAgent | None = None
    health: HealthChecker | None = None  # built by the first GET /api/m1/health
    cache_policy: PolicyRefresher | None = None  # keeps `cache` on the database's TTL policy
    _health_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplicaRuntime:
        prices = load_prices(settings.cost.prices_file)  # a bad file stops startup, named
        db = Database(settings)
        revocations = RevocationManager(settings=settings, db=db)
        metrics = MetricsRuntime(
            settings, db=db, redis_client=make_redis(settings), replica_id=settings.replica_id
        )
        try:
            cookie_key: bytes | None = session_key(resolve_jwt_secret(settings))
            policy: PolicyEngine | None = PolicyEngine.from_settings(
                settings, revocations=revocations, recorder=metrics.recorder.policy_decision_sink()
            )
        except UsageError as error:
            logger.warning("no signing key, so no sessions and no tokens: %s", error)
            cookie_key, policy = None, None
        runtime = cls(
            settings=settings,
            db=db,
            cache=Cache.from_settings(settings, recorder=metrics.recorder.record_trusted),
            credentials=CredentialStore(db, refresh_s=settings.auth.refresh_s),
            limiter=RateLimiter(settings, redis_client=make_redis(settings)),
            session_key=cookie_key,
            revocations=revocations,
            metrics=metrics,
            policy=policy,
            prices=prices,
        )
        register_builtin_commands(runtime)
        register_metrics_commands(runtime.registry, metrics)
        runtime.cache_policy = PolicyRefresher(settings, db=db, cache=runtime.cache)
        register_policy_commands(runtime.registry, runtime.cache_policy)
        return runtime

    def figures(self) -> ReplicaFigures:
        return ReplicaFigures(
            cache_backend=self.cache.backend,
            revocation_sync_age_s=self.revocations.sync_age_s,
            store_lag_s=self.metrics.store_lag_s,
            rss_bytes=psutil.Process(os.getpid()).memory_info().rss,
            queue_drops=self.metrics.dropped_events,
        )

    def health_checker(self, readiness: ReadinessProbe) -> HealthChecker:
        """This replica's checker (kept: it holds the error windows); it reads this replica in
        process and probes the others, Prefect included, so the watcher is watched."""
        with self._health_lock:  # two first requests at once build one checker
            if self.health is None:
                self.health = HealthChecker(
                    settings=self.settings,
                    db=self.db,
                    redis_client=make_redis(self.settings),
                    metrics=self.metrics,
                    prefect_api_url=prefect_api_url_from_environment()
                    or self.settings.prefect_api_url,
                    this_replica=self.settings.replica_id,
                    figures=self.figures,
                    readiness=readiness,
                )
        return self.health

    def start(self) -> None:
        self.revocations.start()
        self.metrics.start()
        install_default(self.metrics)  # m1lib.record_event in this process feeds this replica
        if self.policy is not None:  # and m1lib.verify decides with this replica's engine
            install_engine(self.policy)
        install_cache(self.cache)  # and m1lib.cached_call caches in this replica's cache
        install_prices(self.prices)  # and m1lib.record_cost prices with this replica's settings
        if self.cache_policy is not None:  # with the TTL policy of the database
            self.cache_policy.start()
        self.agent = ReplicaAgent(
            self.settings, db=self.db, registry=self.registry, figures=self.figures
        )
        self.agent.start()

    def close(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        if self.policy is not None:
            install_engine(None)
        install_cache(None)
        install_prices(None)
        if self.cache_policy is not None:
            self.cache_policy.stop()
        self.revocations.close()
        install_default(None)
        self.metrics.close()  # persists closed chunks, so it goes before the database
        self.cache.close()
        if self.health is not None:
            self.health.close()
        self.db.dispose()


def register_builtin_commands(runtime: ReplicaRuntime) -> None:
    """Commands every replica understands from the start; later modules add their own.

    Each is idempotent and bounded (delivery is at least once) and answers one line for the ack;
    the self-heal flow (flows/self_heal.py) issues them and docs/contracts.md lists them.
    """

    def evict(_args: dict[str, object]) -> str:
        runtime.cache.clear()
        return "cache cleared"

    def set_backend(args: dict[str, object]) -> str:
        wanted = args.get("backend")
        if wanted not in {"redis", "memory", None}:
            raise ValueError(
                f"backend: {wanted!r} is not a cache backend; allowed: redis, memory, null"
            )
        runtime.cache.force_backend(wanted)
        if wanted is None:  # automatic: probe now rather than at the next call's turn
            runtime.cache.probe()
        return f"cache backend now {runtime.cache.backend}"

    def reset_pool(_args: dict[str, object]) -> str:
        clients = [runtime.metrics.redis, runtime.limiter.redis]
        for client in clients:
            if client is not None:
                client.connection_pool.disconnect()
        runtime.cache.reset_pool()
        failed = runtime.cache.ping()
        answer = "Redis answers PING" if failed is None else f"Redis does not answer ({failed})"
        stats = runtime.cache.stats()
        forced = f", pinned {stats.forced}" if stats.forced else ""
        return f"redis pools reset; {answer}; cache backend now {stats.backend}{forced}"

    def resync_revocations(_args: dict[str, object]) -> str:
        dropped, added = runtime.revocations.full_resync()
        status = runtime.revocations.status()
        return (
            f"revocations fully reloaded: {added} added, {dropped} dropped, "
            f"{status.revoked_jtis} revoked jtis, {status.rules} rules"
        )

    def reload_policy(_args: dict[str, object]) -> str:
        if runtime.policy is None:
            return "no policy engine on this replica (no signing key): nothing to reload"
        count, changed = runtime.policy.reload_tools()
        shown = ", ".join(changed[:10]) + (" ..." if len(changed) > 10 else "")
        return f"tool registry reloaded: {count} tools" + (
            f"; changed: {shown}" if changed else "; unchanged"
        )

    def relieve_memory(_args: dict[str, object]) -> str:
        rss_before = psutil.Process(os.getpid()).memory_info().rss
        entries, freed = runtime.cache.relieve()
        try:
            dropped, _added = runtime.revocations.full_resync()
            revocations = f"{dropped} purged revocations dropped"
        except M1Error as error:  # the database is away: the rest still frees memory
            revocations = f"revocations not reloaded ({type(error).__name__})"
        collected = gc.collect()
        rss_after = psutil.Process(os.getpid()).memory_info().rss
        return f"freed {freed} bytes of cache ({entries} entries); {revocations}; gc collected {collected} objects; rss {rss_before} -> {rss_after} bytes"

    runtime.registry.register("cache.evict", evict)
    runtime.registry.register("revocation.resync", resync_revocations)
    runtime.registry.register("cache.set_backend", set_backend)
    runtime.registry.register("cache.reset_pool", reset_pool)
    runtime.registry.register("policy.reload", reload_policy)
    runtime.registry.register("memory.relieve", relieve_memory)
