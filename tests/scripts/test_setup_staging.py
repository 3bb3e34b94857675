"""scripts/setup-staging.sh end to end on the real PostgreSQL and Redis: nothing to a ready API,
then a second run that changes nothing and leaves the running API alone, then --stop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from m1lib.settings import PROJECT_ROOT
from tests.services import free_port
from tests.waiting import wait_for

SCRIPT = PROJECT_ROOT / "scripts" / "setup-staging.sh"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("M1_")}
    environment["M1CMD"] = f"{sys.executable} -m m1lib.cli"
    environment["PYTHONPATH"] = str(PROJECT_ROOT)
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_script_brings_up_a_ready_api_and_a_second_run_changes_nothing(
    unborn_pg_url: str, shared_redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    args = [
        "--database-url", unborn_pg_url,
        "--redis-url", shared_redis_url,
        "--redis-prefix", redis_prefix,
        "--api-port", str(port),
        "--wait-s", "90",
    ]  # fmt: skip
    pid_file = tmp_path / ".m1-staging" / "api.pid"
    pid = None
    try:
        started = time.monotonic()
        first = _run(args, tmp_path)
        elapsed = time.monotonic() - started
        assert first.returncode == 0, first.stdout + first.stderr
        print(f"script, nothing to a ready staging API: {elapsed:.1f} s")
        assert "its key (shown once)" in first.stdout
        assert "changed: database, migrations, env_file, admin_credential" in first.stdout
        pid = int(pid_file.read_text())
        assert psutil.pid_exists(pid)
        assert httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).status_code == 200
        env_file = tmp_path / ".env.staging"
        before = (env_file.read_bytes(), env_file.stat().st_mtime_ns)

        second = _run(args, tmp_path)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "changed: nothing" in second.stdout
        assert "shown once" not in second.stdout
        assert f"API already running (pid {pid}), left alone" in second.stdout
        assert int(pid_file.read_text()) == pid
        assert (env_file.read_bytes(), env_file.stat().st_mtime_ns) == before
        assert (tmp_path / ".m1-staging" / "api.log").stat().st_size > 0
    finally:
        stopped = _run(["--stop"], tmp_path)
        if pid is not None and psutil.pid_exists(pid):
            wait_for(lambda: not _alive(pid), f"the API (pid {pid}) to end after --stop")
    assert stopped.returncode == 0
    assert "stopped the API" in stopped.stdout
    assert not pid_file.exists()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_script_stops_at_a_failed_step_and_starts_no_api(
    unborn_pg_url: str, tmp_path: Path
) -> None:
    failed = _run(
        ["--database-url", unborn_pg_url, "--redis-url", "redis://127.0.0.1:1/0"], tmp_path
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "redis             failed" in failed.stdout
    assert "staging setup FAILED" in failed.stdout
    assert not (tmp_path / ".m1-staging" / "api.pid").exists()
    assert not (tmp_path / ".env.staging").exists()
    usage = _run(["--redis-url", "redis://r"], tmp_path)
    assert usage.returncode == 2
    assert "usage: scripts/setup-staging.sh" in usage.stderr
