"""A flow run on a worker without M1_API_KEY reads its key from a Prefect Secret block, which
`m1 keys create --secret-block` fills."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from flows.credentials import api_key_from_block
from m1lib import auth, cli
from m1lib.db.session import Database
from m1lib.settings import get_settings


@flow
def key_probe() -> str | None:
    """What a flow run of M1 does first, then the key its events and queries would use."""
    api_key_from_block()
    key = get_settings().api.key
    return None if key is None else key.get_secret_value()


def test_a_flow_run_reads_its_key_from_the_secret_block_m1_keys_filled(
    run_flow: Callable[..., Any],
    task_settings: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    block = f"m1-api-key-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("M1_API_KEY_BLOCK", block)
    monkeypatch.delenv("M1_API_KEY", raising=False)  # whatever the run adopts is undone after
    get_settings.cache_clear()
    assert run_flow(key_probe).result is None  # no block yet: no key, events stay in the run

    assert cli.main(["db", "upgrade"]) == 0
    assert (
        cli.main(["keys", "create", "worker-runs", "--role", "service", "--secret-block", block])
        == 0
    )
    out = capsys.readouterr().out
    assert f"Secret block {block!r}" in out
    assert "m1_" not in out  # the key went to the block, not to the terminal

    key = run_flow(key_probe).result
    db = Database(get_settings())
    try:
        store = auth.CredentialStore(db, refresh_s=0)
        found = store.authenticate(key)
    finally:
        db.dispose()
    assert found is not None
    assert (found.name, found.role) == ("worker-runs", auth.Role.SERVICE)
