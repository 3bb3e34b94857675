"""`m1 up` makes a service credential at each start and hands it to the runner alone."""

from __future__ import annotations

from collections.abc import Callable

from deployments.local import RUNNER_CREDENTIAL, Supervisor
from m1lib import auth
from m1lib.db.session import Database
from m1lib.settings import Settings


def test_each_start_makes_a_service_key_for_the_runner_only_and_revokes_the_last(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(jwt={"secret": "s" * 40})
    first = Supervisor(settings)
    first.prepare()
    second = Supervisor(settings)
    second.prepare()
    db = Database(settings)
    try:
        rows = [r for r in auth.list_credentials(db) if r.name.startswith(RUNNER_CREDENTIAL)]
        store = auth.CredentialStore(db, refresh_s=0)
        assert first.runner_key is not None
        assert second.runner_key is not None
        assert store.authenticate(first.runner_key) is None  # rotated: the last start's revoked
        found = store.authenticate(second.runner_key)
    finally:
        db.dispose()
    assert len(rows) == 2
    assert [r.role for r in rows] == ["service", "service"]
    assert found is not None
    assert found.role is auth.Role.SERVICE
    runner = second.runner_environment()
    assert runner["M1_API_KEY"] == second.runner_key
    assert runner["M1_API_URL"] == settings.api_base_url
    assert second.env.get("M1_API_KEY") != second.runner_key  # the API and server do not get it


def test_without_a_runner_no_key_is_made(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(jwt={"secret": "s" * 40})
    supervisor = Supervisor(settings, serve=False)
    supervisor.prepare()
    assert supervisor.runner_key is None
    db = Database(settings)
    try:
        assert not [r for r in auth.list_credentials(db) if r.name.startswith(RUNNER_CREDENTIAL)]
    finally:
        db.dispose()
