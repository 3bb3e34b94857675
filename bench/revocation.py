"""Revocation: in-memory check cost, verify overhead, propagation between processes, start-up load.

A PostgreSQL database of the benchmark's own (created and dropped here) holds 100,000 revoked jtis
and 100 not-before rules (smoke: 2,000 and 10); Redis is the shared one under a key prefix of
its own. Side by side, in one run:

- ``is_revoked``: per-call cost in batches of 100 calls (half hits, half misses); median and p99
  over the batches. Target: median <= 2 us.
- ``PolicyEngine.verify`` (no-op recorder, revocation manager started and fresh) against bare
  ``jwt.decode`` with the same claim checks (target >= 85 % of its throughput) and against the
  per-request Redis design: the same bare decode plus one ``EXISTS`` on redis-py's sync client,
  one connection, no pipelining (target: verify >= 3x its throughput). Rounds alternate between
  the three so background load hits each alike; figures are medians over rounds.
- Propagation: a second process (``bench/_revocation_proc.py``) watches for 1,000 jtis (smoke: 50)
  that this process revokes one at a time after a random pause of up to 2 ms; each sample is the
  watcher's first ``is_revoked`` true minus the moment ``revoke_token`` returned (one machine,
  CLOCK_MONOTONIC). Target p99 <= 10 ms.
- Start-up load: a new manager's first full load of everything from PostgreSQL. Target <= 2 s.
"""

from __future__ import annotations

import io
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _harness
import jwt
import redis
from _harness import Figure, Measured, percentiles_ms

from m1lib.db.migrate import upgrade
from m1lib.db.session import Database
from m1lib.metrics import MetricsRuntime
from m1lib.policy import PolicyEngine, Scope
from m1lib.revocation import RevocationManager
from m1lib.settings import Settings
from m1lib.tokens import REQUIRED_CLAIMS, SCOPE_RANK, TokenCodec
from tests.services import own_database

NAME = "revocation"
WATCHER = Path(__file__).resolve().parent / "_revocation_proc.py"
SECRET = "bench-secret-" + "x" * 40
TOOL, SCOPE = "log_agent_run", Scope.WRITE
BATCH = 100
MAX_PAUSE_S = 0.002


def measure(smoke: bool) -> Measured:
    size = {
        "jtis": 2_000 if smoke else 100_000,
        "rules": 10 if smoke else 100,
        "check_batches": 300 if smoke else 5_000,
        "verify_calls": 2_000 if smoke else 20_000,
        "verify_rounds": 2 if smoke else 7,
        "rtt_samples": 500 if smoke else 5_000,
        "propagations": 50 if smoke else 1_000,
        "load_trials": 1 if smoke else 3,
    }
    database = f"m1_bench_{uuid.uuid4().hex[:10]}"
    prefix = f"m1bench:{uuid.uuid4().hex[:10]}"
    try:
        with own_database(database) as url, tempfile.TemporaryDirectory(prefix="m1-bench-") as tmp:
            settings = Settings(
                _env_file=None,
                data_dir=Path(tmp) / "data",
                database={"url": url},
                redis={"url": _harness.REDIS_URL, "prefix": prefix},
                jwt={"secret": SECRET},
            )
            figures, extra = run(settings, Path(tmp), size)
    finally:
        _harness.clean_redis(prefix)
    return Measured(figures=figures, parameters={**size, **extra})


def run(
    settings: Settings, workdir: Path, size: dict[str, int]
) -> tuple[list[Figure], dict[str, Any]]:
    db = Database(settings)
    try:
        upgrade(db)
        jtis = seed(db, size["jtis"], size["rules"])
        load_s = [startup_load(settings, db) for _ in range(size["load_trials"])]
        manager = RevocationManager(settings=settings, db=db)
        manager.start()
        deadline = time.monotonic() + 60
        while not (manager.ready and manager.status().subscribed):
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's manager did not become ready")
            time.sleep(0.01)
        try:
            checks = check_costs(manager, jtis, size["check_batches"])
            verify = verify_throughput(settings, manager, size)
            propagation, revoke_ms, early = propagate(settings, manager, workdir, size)
        finally:
            manager.close()
    finally:
        db.dispose()
    figures = [
        Figure("is_revoked_median_us", round(checks["is_revoked_p50"], 3), "us", target=2.0),
        Figure("is_revoked_p99_us", round(checks["is_revoked_p99"], 3), "us"),
        Figure("denial_median_us", round(checks["denial_p50"], 3), "us"),
        Figure(
            "verify_ops_per_s",
            round(verify["verify"]),
            "ops/s",
            reference=round(verify["bare"]),
            reference_label="bare jwt.decode with the same claim checks",
        ),
        Figure("bare_decode_ops_per_s", round(verify["bare"]), "ops/s"),
        Figure("redis_design_ops_per_s", round(verify["redis"]), "ops/s"),
        Figure(
            "verify_vs_bare_ratio",
            round(verify["verify"] / verify["bare"], 3),
            "x",
            target=0.85,
            higher_is_better=True,
        ),
        Figure(
            "verify_vs_redis_speedup",
            round(verify["verify"] / verify["redis"], 3),
            "x",
            target=3.0,
            higher_is_better=True,
        ),
        Figure(
            "verify_vs_redis_same_decoder_speedup",
            round(verify["verify"] / verify["redis_fast"], 3),
            "x",
            reference=round(verify["redis_fast"]),
            reference_label="M1's decoder + one EXISTS, ops/s",
        ),
        Figure("policy_recorder_us", round(verify["recorder_us"], 3), "us", target=2.0),
        Figure("redis_exists_rtt_median_us", round(verify["rtt_p50_us"], 1), "us"),
        Figure("redis_exists_rtt_p99_us", round(verify["rtt_p99_us"], 1), "us"),
        Figure("propagation_p50_ms", round(propagation["p50"], 3), "ms"),
        Figure("propagation_p99_ms", round(propagation["p99"], 3), "ms", target=10.0),
        Figure("propagation_max_ms", round(propagation["max"], 3), "ms"),
        Figure("revoke_token_p50_ms", round(revoke_ms, 3), "ms"),
        Figure("startup_load_s", round(statistics.median(load_s), 3), "s", target=2.0),
    ]
    extra = {
        "database": "postgresql",
        "check_batch_calls": BATCH,
        "verify_tool": TOOL,
        "propagation_max_pause_ms": MAX_PAUSE_S * 1000,
        "propagation_seen_before_return": early,
        "startup_load_trials_s": [round(value, 3) for value in load_s],
        "resync_s": settings.revocation.resync_s,
    }
    return figures, extra


def seed(db: Database, count: int, rules: int) -> list[str]:
    """``count`` revoked jtis over 20 tools, and ``rules`` rules that match none of the verify
    tokens (issued an hour before them), all by COPY: the load, not the insert, is measured."""
    now = datetime.now(UTC)
    jtis = [str(uuid.uuid4()) for _ in range(count)]
    tokens = io.StringIO()
    for n, jti in enumerate(jtis):
        revoked = now - timedelta(seconds=random.uniform(0, 3600))
        expires = now + timedelta(hours=1)
        tokens.write(f"{jti}\ttool_{n % 20}\tagent-{n % 500}\tbench\tbench\t{revoked}\t{expires}\n")
    rule_rows = io.StringIO()
    for n in range(rules):
        tool = TOOL if n % 4 == 0 else f"tool_{n % 20}"
        subject = "\\N" if n % 2 == 0 else f"agent-{n}"
        before = now - timedelta(hours=1)
        rule_rows.write(
            f"{tool}\t{subject}\t{before}\tbench\tbench\t{now}\t{before + timedelta(minutes=5)}\n"
        )
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        copy_tokens = (
            "COPY revoked_tokens (jti, tool_name, subject, reason, revoked_by, revoked_at, "
            "expires_at) FROM STDIN"
        )
        with cursor.copy(copy_tokens) as copy:
            copy.write(tokens.getvalue())
        copy_rules = (
            "COPY revocation_rules (tool_name, subject, issued_before, reason, created_by, "
            "created_at, expires_at) FROM STDIN"
        )
        with cursor.copy(copy_rules) as copy:
            copy.write(rule_rows.getvalue())
        raw.commit()
    finally:
        raw.close()
    return jtis


def startup_load(settings: Settings, db: Database) -> float:
    manager = RevocationManager(settings=settings, db=db)
    try:
        began = time.perf_counter()
        manager.load()
        return time.perf_counter() - began
    finally:
        manager.close()


def per_call_us(call: Callable[[Any], object], keys: list[Any], batches: int) -> list[float]:
    """Per-call cost of ``call`` in microseconds, one figure per batch of ``BATCH`` calls."""
    timer = time.perf_counter_ns
    results: list[float] = []
    for number in range(batches):
        start = (number * BATCH) % (len(keys) - BATCH)
        batch = keys[start : start + BATCH]
        began = timer()
        for key in batch:
            call(key)
        results.append((timer() - began) / BATCH / 1000)
    return results


def check_costs(manager: RevocationManager, jtis: list[str], batches: int) -> dict[str, float]:
    hits = random.sample(jtis, min(len(jtis), 5_000))
    misses = [str(uuid.uuid4()) for _ in hits]
    keys = [jti for pair in zip(hits, misses, strict=True) for jti in pair]
    per_call_us(manager.is_revoked, keys, 50)  # warm-up
    revoked = sorted(per_call_us(manager.is_revoked, keys, batches))
    now = int(time.time())
    claims = [
        {"jti": jti, "toolName": TOOL, "sub": f"agent-{n % 50}", "iat": now}
        for n, jti in enumerate(str(uuid.uuid4()) for _ in range(2_000))
    ]
    denial = sorted(per_call_us(manager.denial, claims, max(50, batches // 10)))
    return {
        "is_revoked_p50": statistics.median(revoked),
        "is_revoked_p99": revoked[int(len(revoked) * 0.99) - 1],
        "denial_p50": statistics.median(denial),
    }


def recorder_cost_us(sink: Callable[..., None], batches: int) -> float:
    """Median cost of recording one decision (what verify pays for its event)."""
    per_call: list[float] = []
    for _ in range(batches):
        began = time.perf_counter()
        for _ in range(1000):
            sink(
                "policy_decisions",
                toolName=TOOL,
                scope=SCOPE,
                allowed=True,
                reason="ok",
                subject="agent-1",
                checkMs=0.02,
            )
        per_call.append((time.perf_counter() - began) / 1000 * 1e6)
    return statistics.median(per_call)


def verify_throughput(
    settings: Settings, manager: RevocationManager, size: dict[str, int]
) -> dict[str, float]:
    codec = TokenCodec.from_settings(settings)
    # The real event store, as in an API replica: every verify queues a policy_decisions event.
    metrics = MetricsRuntime(settings, replica_id="bench")
    metrics.start()
    sink = metrics.recorder.policy_decision_sink()
    engine = PolicyEngine(settings=settings, codec=codec, revocation=manager, recorder=sink)
    tokens = [engine.issue_token(TOOL, SCOPE, subject=f"agent-{n}") for n in range(200)]
    for token in tokens:
        decision = engine.verify(token, TOOL, SCOPE)
        if not decision.allowed:
            raise RuntimeError(f"a benchmark token was denied: {decision.reason}")
    needed = SCOPE_RANK[SCOPE]
    options: Any = {"require": list(REQUIRED_CLAIMS)}
    key_prefix = f"{settings.redis.prefix}:revoked:"
    client = redis.Redis.from_url(_harness.REDIS_URL)

    def bare(token: str) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            SECRET,
            algorithms=["HS256"],
            audience=codec.audience,
            issuer=codec.issuer,
            leeway=codec.leeway_s,
            options=options,
        )
        if claims["toolName"] != TOOL or SCOPE_RANK[claims["scope"]] < needed:
            raise RuntimeError("claim check failed")
        return claims

    def with_redis(token: str) -> bool:
        claims = bare(token)
        return client.exists(key_prefix + claims["jti"]) == 0

    def with_redis_fast_decode(token: str) -> bool:
        """The Redis design given M1's own decoder: what the in-memory check alone buys."""
        claims = codec.decode(token)
        if claims["toolName"] != TOOL or SCOPE_RANK[claims["scope"]] < needed:
            raise RuntimeError("claim check failed")
        return client.exists(key_prefix + claims["jti"]) == 0

    def verify(token: str) -> bool:
        return engine.verify(token, TOOL, SCOPE).allowed

    variants: dict[str, Callable[[str], object]] = {
        "verify": verify,
        "bare": bare,
        "redis": with_redis,
        "redis_fast": with_redis_fast_decode,
    }
    calls = size["verify_calls"]
    stream = [tokens[n % len(tokens)] for n in range(calls)]
    rates: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for function in variants.values():  # warm-up
            for token in stream[:200]:
                function(token)
        for _ in range(size["verify_rounds"]):
            for name, function in variants.items():
                began = time.perf_counter()
                for token in stream:
                    function(token)
                rates[name].append(calls / (time.perf_counter() - began))
        recorder_us = recorder_cost_us(sink, size["check_batches"])
        rtt: list[float] = []
        for n in range(size["rtt_samples"]):
            began = time.perf_counter()
            client.exists(f"{key_prefix}{n}")
            rtt.append(time.perf_counter() - began)
    finally:
        client.close()
        metrics.close()
    round_trip = percentiles_ms(rtt)
    return {
        "recorder_us": recorder_us,
        **{name: statistics.median(values) for name, values in rates.items()},
        "rtt_p50_us": round_trip["p50"] * 1000,
        "rtt_p99_us": round_trip["p99"] * 1000,
    }


def propagate(
    settings: Settings, manager: RevocationManager, workdir: Path, size: dict[str, int]
) -> tuple[dict[str, float], float, int]:
    """Revoke here, see it there: latency percentiles (ms), revoke_token p50 (ms), early count."""
    jtis = [str(uuid.uuid4()) for _ in range(size["propagations"])]
    jtis_file, out_file = workdir / "jtis.json", workdir / "seen.json"
    jtis_file.write_text(json.dumps(jtis))
    log = (workdir / "watcher.log").open("wb")
    watcher = subprocess.Popen(
        [
            sys.executable, str(WATCHER),
            "--db-url", settings.database_url,
            "--redis-url", _harness.REDIS_URL,
            "--redis-prefix", settings.redis.prefix,
            "--jtis-file", str(jtis_file),
            "--out-file", str(out_file),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )  # fmt: skip
    try:
        if read_line(watcher, timeout=90) != "ready":
            raise RuntimeError(f"watcher not ready: {(workdir / 'watcher.log').read_text()}")
        returned: list[int] = []
        durations: list[float] = []
        for jti in jtis:
            time.sleep(random.uniform(0, MAX_PAUSE_S))
            began = time.perf_counter()
            manager.revoke_token(jti, "bench", "bench", tool_name=TOOL)
            returned.append(time.monotonic_ns())
            durations.append(time.perf_counter() - began)
        watcher.wait(120)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(10)
        log.close()
    seen: list[int | None] = json.loads(out_file.read_text())
    missing = [jti for jti, at in zip(jtis, seen, strict=True) if at is None]
    if missing:
        raise RuntimeError(f"{len(missing)} revocations never reached the watcher")
    raw = [(at or 0) - done for at, done in zip(seen, returned, strict=True)]
    early = sum(1 for value in raw if value < 0)
    latencies = [max(0, value) / 1e9 for value in raw]
    return percentiles_ms(latencies), percentiles_ms(durations)["p50"], early


def read_line(process: subprocess.Popen[str], *, timeout: float) -> str:
    result: list[str] = []
    stdout = process.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0].strip() if result else ""


if __name__ == "__main__":
    _harness.main(NAME, (__doc__ or "").strip().splitlines()[0], measure)
