"""A stand-in API replica for the revocation tests, plus the tools those tests drive it with.

Run as ``python -m tests.m1lib.revocation.revocation_proc --db-url ... [--redis-url ...]`` from the
repository root: it starts a RevocationManager (threads and all) and answers one JSON request per
stdin line with one JSON line on stdout, so a test can ask the other process what it decides.

Also here, for the tests of both processes: :class:`ReplicaProcess` (the test's side of that
conversation) and :func:`create_database` (a migrated PostgreSQL database of the test module's own;
the path a test cuts to it is ``tests.services.TcpProxy``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import IO, Any

from tests import services

ROOT = Path(__file__).resolve().parents[3]


# -- the replica process ---------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--redis-prefix", default="m1")
    parser.add_argument("--resync-s", type=float, default=1.0)
    parser.add_argument("--max-staleness-s", type=float, default=10.0)
    parser.add_argument("--reconcile-s", type=float, default=60.0)
    parser.add_argument("--overlap-s", type=float, default=30.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from m1lib.db.session import Database
    from m1lib.revocation import RevocationManager
    from m1lib.settings import Settings

    options = _parse(argv)
    settings = Settings(
        _env_file=None,
        database={"url": options.db_url, "connect_timeout_s": 1},
        redis={"url": options.redis_url or None, "prefix": options.redis_prefix},
        revocation={
            "resync_s": options.resync_s,
            "max_staleness_s": options.max_staleness_s,
            "reconcile_s": options.reconcile_s,
            "overlap_s": options.overlap_s,
        },
    )
    db = Database(settings)
    manager = RevocationManager(settings=settings, db=db)
    manager.start()
    _reply({"started": True})
    try:
        for line in sys.stdin:
            request = json.loads(line)
            if request["op"] == "quit":
                break
            _reply(_answer(manager, request))
    finally:
        manager.close()
        db.dispose()
    return 0


def _answer(manager: Any, request: dict[str, Any]) -> dict[str, Any]:
    from m1lib.errors import M1Error

    op = request["op"]
    if op == "status":
        status = manager.status()
        return {
            "ready": status.ready,
            "loaded": status.loaded,
            "subscribed": status.subscribed,
            "jtis": status.revoked_jtis,
        }
    if op == "denial":
        reason = manager.denial(request["claims"])
        return {"reason": None if reason is None else str(reason)}
    if op == "missing":  # which of these jtis this process does not (yet) deny
        return {"missing": [jti for jti in request["jtis"] if not manager.is_revoked(jti)]}
    if op == "revoke":
        try:
            manager.revoke_token(request["jti"], request.get("reason", ""), request["actor"])
        except M1Error as error:
            return {"error": type(error).__name__, "detail": str(error)}
        return {"ok": True}
    return {"error": "UnknownOp", "detail": op}


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


# -- the test's side -----------------------------------------------------------------------------


class ReplicaProcess:
    """One replica process; ask it questions with :meth:`ask`. Killed by :meth:`stop`."""

    def __init__(self, workdir: Path, *, db_url: str, **options: Any) -> None:
        self.log_path = workdir / f"revocation-proc-{uuid.uuid4().hex[:6]}.log"
        command = [
            sys.executable,
            "-m",
            "tests.m1lib.revocation.revocation_proc",
            "--db-url",
            db_url,
        ]
        for name, value in options.items():
            command += [f"--{name.replace('_', '-')}", str(value)]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self._lock = threading.Lock()
        started = self._read(timeout=60)
        if started != {"started": True}:
            raise RuntimeError(f"replica process did not start: {started}\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            stdin = self.process.stdin
            assert stdin is not None
            stdin.write(json.dumps({"op": op, **fields}) + "\n")
            stdin.flush()
            return self._read(timeout=30)

    def _read(self, *, timeout: float) -> dict[str, Any]:
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            raise RuntimeError(
                f"replica process did not answer (exit {self.process.poll()}):\n{self.log()}"
            )
        answer: dict[str, Any] = json.loads(result[0])
        return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(10)
        self._log.close()


# -- a database of the module's own ----------------------------------------------------------------


def create_database() -> str:
    """A new, migrated PostgreSQL database on the shared server; returns its name (drop it with
    ``tests.services.drop_database``)."""
    from m1lib.db.migrate import upgrade
    from m1lib.db.session import Database
    from m1lib.settings import Settings

    name = f"m1_revocation_{uuid.uuid4().hex[:10]}"
    db = Database(Settings(_env_file=None, database={"url": services.create_database(name)}))
    try:
        upgrade(db)
    finally:
        db.dispose()
    return name


if __name__ == "__main__":
    raise SystemExit(main())
