"""A real `m1 up` in a subprocess, on free ports, run from a directory of its own.

It runs where an operator would: in a directory outside the checkout, with M1's relative defaults
(data, SQLite and PREFECT_HOME under ``./.m1``) and its configuration either in a ``.env`` file
there or in its environment. Its output goes to a log beside that directory, which stays as M1 left
it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
from prefect.client.schemas.responses import DeploymentResponse

from deployments.prefect_api import prefect_client
from deployments.prefect_yaml import load_deployment_specs
from tests.services import free_port
from tests.waiting import wait_for

START_TIMEOUT_S = 180
EXPECTED_DEPLOYMENTS = {spec.name for spec in load_deployment_specs()}
ANNOUNCEMENT = "M1 control plane is up"


@dataclass
class LiveM1:
    workdir: Path  # where `m1 up` runs; created empty when missing
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str | None = None
    dotenv: bool = True  # configuration in <workdir>/.env, else in the environment
    m1: list[str] = field(default_factory=lambda: [sys.executable, "-m", "m1lib.cli"])
    up_args: list[str] = field(default_factory=list)
    extra_settings: dict[str, str] = field(default_factory=dict)  # more M1_* of a test's own
    api_port: int = field(default_factory=free_port)
    prefect_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    seen_descendants: set[int] = field(default_factory=set)
    starts: int = 0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def serves(self) -> bool:
        return "--no-serve" not in self.up_args

    @property
    def data_dir(self) -> Path:
        return self.workdir / ".m1"  # M1's default, relative to where it runs

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def log_path(self) -> Path:
        return self.workdir.with_name(f"{self.workdir.name}-m1-up-{self.starts}.log")

    def settings(self) -> dict[str, str]:
        """The M1_* configuration this instance runs with."""
        values = {
            "M1_API_PORT": str(self.api_port),
            "M1_PREFECT_PORT": str(self.prefect_port),
            "M1_PREFECT_RUNNER_POLL_S": "1",
            "M1_REPLICA_HEARTBEAT_S": "0.5",
            "M1_CONTROL_POLL_S": "0.2",
        }
        if self.database_url:
            values["M1_DATABASE_URL"] = self.database_url
        if self.redis_url:
            values["M1_REDIS_URL"] = self.redis_url
        if self.redis_prefix:
            values["M1_REDIS_PREFIX"] = self.redis_prefix
        values.update(self.extra_settings)
        return values

    def environment(self) -> dict[str, str]:
        """What `m1 up` and the `m1` verbs run with: no M1_* or PREFECT_* of the developer's."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("M1_", "PREFECT_"))}
        env.pop("PYTHONPATH", None)  # imports come from the installation only, never the checkout
        env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1"})
        if not self.dotenv:
            env.update(self.settings())
        return env

    def start(self) -> None:
        self.starts += 1
        self.started_at = datetime.now(UTC)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.dotenv:
            lines = [f"{name}={value}" for name, value in self.settings().items()]
            (self.workdir / ".env").write_text("\n".join(lines) + "\n")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*self.m1, "up", *self.up_args],
                cwd=self.workdir,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """An `m1` verb run where `m1 up` runs, with the same configuration."""
        return subprocess.run(
            [*self.m1, *args],
            cwd=self.workdir,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def served(self) -> set[str]:
        """Deployments polled by a runner since this start (after a crash, the dead runner's
        deployments are still listed: listed is not served)."""
        return {
            d.name
            for d in self.deployments()
            if d.last_polled is not None and d.last_polled >= self.started_at
        }

    def _readiness(self) -> tuple[bool, int, set[str]]:
        """Whether `m1 up` announced itself, the API's /health/ready status and the deployments
        served; an exit ends the wait."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"exited with {self.process.returncode} before it was ready")
        announced = ANNOUNCEMENT in self.output()
        api = httpx.get(f"{self.api_url}/health/ready", timeout=5).status_code
        return announced, api, self.served() if self.serves else set()

    def _is_ready(self, seen: tuple[bool, int, set[str]]) -> bool:
        announced, api, served = seen
        return announced and api == 200 and (not self.serves or served >= EXPECTED_DEPLOYMENTS)

    def wait_ready(self) -> None:
        what = f"{ANNOUNCEMENT!r}, API /health/ready 200" + (
            f" and deployments {sorted(EXPECTED_DEPLOYMENTS)} served" if self.serves else ""
        )
        try:
            wait_for(
                self._readiness,
                what,
                until=self._is_ready,
                timeout_s=START_TIMEOUT_S,
                period_s=0.5,
                errors=(httpx.HTTPError,),
            )
        except AssertionError as error:
            tail = self.output()[-6000:]
            raise AssertionError(f"m1 up: {error}\n--- its output ---\n{tail}") from None
        self.record_descendants()

    def deployments(self) -> list[DeploymentResponse]:
        with prefect_client(self.prefect_api_url) as client:
            return client.read_deployments()

    def descendants(self) -> list[psutil.Process]:
        assert self.process is not None
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def record_descendants(self) -> None:
        self.seen_descendants.update(child.pid for child in self.descendants())

    def alive_descendants(self) -> list[psutil.Process]:
        alive = []
        for pid in self.seen_descendants:
            try:
                process = psutil.Process(pid)
                if process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.NoSuchProcess:
                continue
        return alive

    def admin_key(self) -> str | None:
        found = re.findall(r"^\s+(m1_[A-Za-z0-9_-]{20,})\s*$", self.output(), flags=re.MULTILINE)
        return found[-1] if found else None

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 60) -> int:
        assert self.process is not None
        self.record_descendants()
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            self.process = None

    def kill_everything_left(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None
        for process in self.alive_descendants():
            process.kill()
