"""`m1 up --no-serve` runs only the API: workers elsewhere run the flows, on another Prefect server."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.e2e.live import LiveM1

pytestmark = pytest.mark.e2e


def test_no_serve_starts_only_the_api_even_with_the_prefect_port_taken(tmp_path: Path) -> None:
    with socket.socket() as squatter:  # something else owns M1's Prefect port
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        live = LiveM1(
            workdir=tmp_path / "api-only",
            dotenv=False,
            up_args=["--no-serve"],
            prefect_port=squatter.getsockname()[1],
        )
        try:
            live.start()
            assert httpx.get(f"{live.api_url}/health/ready", timeout=5).status_code == 200
            commands = [" ".join(child.cmdline()) for child in live.descendants()]
            assert len(commands) == 1, commands
            assert "m1lib.api" in commands[0]
            assert "no Prefect server (--no-serve)" in live.output()
            assert (live.data_dir / "m1.db").exists()  # SQLite under ./.m1, as the API used it
            assert not (live.data_dir / "prefect").exists()
            assert live.stop() == 0
            assert live.alive_descendants() == []
        finally:
            live.kill_everything_left()
