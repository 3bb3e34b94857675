"""A real `m1 up` in a subprocess, on free ports, with its own data directory and PREFECT_HOME."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from deployments.prefect_yaml import load_deployment_specs
from m1lib.settings import PROJECT_ROOT
from tests.conftest import free_port

START_TIMEOUT_S = 120
EXPECTED_DEPLOYMENTS = {spec.name for spec in load_deployment_specs(PROJECT_ROOT / "prefect.yaml")}


@dataclass
class LiveM1:
    workdir: Path
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str | None = None
    api_port: int = field(default_factory=free_port)
    prefect_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    seen_descendants: set[int] = field(default_factory=set)
    starts: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"m1-up-{self.starts}.log"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("M1_", "PREFECT_"))}
        env.update(
            {
                "M1_DATA_DIR": str(self.workdir / "data"),
                "M1_API_PORT": str(self.api_port),
                "M1_PREFECT_PORT": str(self.prefect_port),
                "M1_PREFECT_HOME": str(self.workdir / "prefect-home"),
                "M1_PREFECT_RUNNER_POLL_S": "1",
                "M1_REPLICA_HEARTBEAT_S": "0.5",
                "M1_CONTROL_POLL_S": "0.2",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.database_url:
            env["M1_DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["M1_REDIS_URL"] = self.redis_url
        if self.redis_prefix:
            env["M1_REDIS_PREFIX"] = self.redis_prefix
        return env

    def start(self) -> None:
        self.starts += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "m1lib.cli", "up"],
            cwd=PROJECT_ROOT,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _fail(self, why: str) -> None:
        raise AssertionError(f"m1 up: {why}\n--- its output ---\n{self.output()[-6000:]}")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                self._fail(f"exited with {self.process.returncode} before it was ready")
            try:
                api = httpx.get(f"{self.api_url}/health/ready", timeout=2)
                prefect = httpx.get(f"{self.prefect_api_url}/health", timeout=2)
                served = (
                    {d["name"] for d in self.deployments()} if prefect.status_code == 200 else set()
                )
                if api.status_code == 200 and served >= EXPECTED_DEPLOYMENTS:
                    self.record_descendants()
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self._fail("not ready in time")
            time.sleep(0.5)

    def deployments(self) -> list[dict[str, Any]]:
        response = httpx.post(f"{self.prefect_api_url}/deployments/filter", json={}, timeout=5)
        response.raise_for_status()
        return list(response.json())

    def record_descendants(self) -> None:
        assert self.process is not None
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.seen_descendants.add(child.pid)
        except psutil.NoSuchProcess:
            pass

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
