"""Services a test or a benchmark owns and may break: a redis-server, a cuttable TCP path to
PostgreSQL, a database of its own, a free port.

The shared PostgreSQL and Redis on the machine are never stopped; faults are injected into these
instead. No ``m1lib`` and no pytest here: ``bench/*.py`` (run as ``python bench/x.py``, the
repository root on ``sys.path`` through ``bench/_harness.py``) imports this module as the tests do.
A missing service raises :class:`ServiceUnavailable`; the test fixtures turn it into a skip (a
failure under ``CI=true``).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis as redis_lib
from sqlalchemy import create_engine, text

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
PG_ADMIN_URL = f"{PG_SERVER}/test"


class ServiceUnavailable(RuntimeError):
    """A service this machine should have (PostgreSQL, the redis-server binary) is not there."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- a database of one's own ---------------------------------------------------------------------


def create_database(name: str) -> str:
    """Create database ``name`` on the shared PostgreSQL; its URL."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:  # the driver's error, whatever it is: the service is not usable
        raise ServiceUnavailable(f"PostgreSQL at 127.0.0.1:5432: {error}") from error
    finally:
        admin.dispose()
    return f"{PG_SERVER}/{name}"


def drop_database(name: str) -> None:
    """Drop database ``name`` (its connections too); nothing when it is gone already."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextlib.contextmanager
def own_database(name: str) -> Iterator[str]:
    """Database ``name`` created on the shared PostgreSQL for the block (its URL), dropped after."""
    url = create_database(name)
    try:
        yield url
    finally:
        drop_database(name)


# -- a redis-server of one's own -------------------------------------------------------------------


class OwnRedis:
    """A redis-server on a free port that its owner may kill and restart (on the same port).

    >>> server = OwnRedis(tmp_path); server.start(); ...; server.stop(); server.start()
    """

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait (10 s at most) until it answers PING; no persistence."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceUnavailable("the redis-server binary is not installed")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis_lib.Redis(port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis_lib.RedisError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGKILL, as a crash would (no shutdown, no save)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


# -- a TCP path one can cut ------------------------------------------------------------------------


class TcpProxy:
    """A TCP path to a server that its owner can cut (refuse and drop everything) and restore.

    Cutting closes the listening socket, so new connections are refused at once, and shuts every
    open connection, so pooled database connections fail on their next use.
    """

    def __init__(self, target_port: int = 5432, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def url_for(self, database: str) -> str:
        """A PostgreSQL URL for ``database`` through this path."""
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
