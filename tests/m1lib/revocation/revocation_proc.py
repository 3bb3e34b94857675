"""A stand-in API replica for the revocation tests, plus the tools those tests drive it with.

Run as ``python -m tests.m1lib.revocation.revocation_proc --db-url ... [--redis-url ...]`` from the
repository root: it starts a RevocationManager (threads and all) and answers one JSON request per
stdin line with one JSON line on stdout, so a test can ask the other process what it decides.

Also here, for the tests of both processes: :class:`ReplicaProcess` (the test's side of that
conversation), :class:`TcpProxy` (a database path the test can cut without touching the shared
PostgreSQL) and helpers for a PostgreSQL database of the test module's own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import IO, Any

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[3]
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


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


class TcpProxy:
    """A TCP path to a server that the test can cut (refuse and drop everything) and restore.

    Cutting closes the listening socket, so new connections are refused at once, and shuts every
    open connection, so pooled database connections fail on their next use.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the accepting thread; close() alone leaves the port listening
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def restore(self) -> None:
        if self._listener is None:
            self.start()


# -- a database of the module's own ----------------------------------------------------------------


def create_database() -> str:
    """A new, migrated PostgreSQL database on the shared server; returns its name."""
    from m1lib.db.migrate import upgrade
    from m1lib.db.session import Database
    from m1lib.settings import Settings

    name = f"m1_revocation_{uuid.uuid4().hex[:10]}"
    admin = create_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    db = Database(Settings(_env_file=None, database={"url": f"{PG_SERVER}/{name}"}))
    try:
        upgrade(db)
    finally:
        db.dispose()
    return name


def drop_database(name: str) -> None:
    admin = create_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
