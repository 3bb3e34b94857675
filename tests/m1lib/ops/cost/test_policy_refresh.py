from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from m1lib import process_cache
from m1lib.cache import Cache, TtlRule
from m1lib.control import CommandRegistry
from m1lib.db.session import Database
from m1lib.ops.cost.policy import RELOAD_COMMAND, ToolTtl
from m1lib.ops.cost.policy_refresh import (
    ChangeCounters,
    PolicyRefresher,
    register_policy_commands,
)
from m1lib.ops.cost.policy_store import set_tool
from m1lib.settings import Settings, get_settings
from tests.waiting import wait_for


def test_the_reload_command_installs_the_policy_in_the_cache(
    db: Database, settings: Settings
) -> None:
    cache = Cache(settings)
    refresher = PolicyRefresher(settings, db=db, cache=cache)
    registry = CommandRegistry()
    register_policy_commands(registry, refresher)
    set_tool(db, settings, ToolTtl("weather", 42.0, 100.0), actor="t")
    assert registry.apply(RELOAD_COMMAND, {}) == (True, "cache TTL policy loaded: 1 tools")
    assert refresher.snapshot("weather") == TtlRule(42.0, 0.0)
    assert refresher.snapshot.version == 1


def test_an_unreadable_policy_keeps_the_defaults_and_nothing_breaks(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(cache={"policy_refresh_s": 0})
    db = Database(settings)  # never migrated: no policy table
    cache = Cache(settings)
    refresher = PolicyRefresher(settings, db=db, cache=cache)
    with caplog.at_level(logging.WARNING, "m1.cache.policy"):
        refresher.start()
        wait_for(lambda: refresher.failures, "the failed first read")
    refresher.stop()
    db.dispose()
    assert "keeping the last one" in caplog.text
    assert cache.cached_call("k", lambda: 1, tool_name="weather") == 1
    assert len(refresher.snapshot) == 0


def test_counters_estimate_changes_per_second_of_age() -> None:
    counters = ChangeCounters()
    counters("weather", "a", 10.0, True)
    counters("weather", "b", 30.0, False)
    counters("weather", "c", None, None)
    (rate,) = counters.rates().values()
    assert (rate.refetches, rate.changed, rate.unknown, rate.exposure_s) == (2, 1, 1, 40.0)
    assert rate.changes_per_s == 0.025


@pytest.fixture
def service_cache(tmp_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("M1_DATA_DIR", str(tmp_data_dir))
    get_settings.cache_clear()
    process_cache.install_cache(None)
    yield
    built = process_cache.install_cache(None)
    if built is not None:
        built.close()
    get_settings.cache_clear()


def test_a_service_without_a_database_url_follows_no_policy(
    service_cache: None, tmp_data_dir: Path
) -> None:
    assert process_cache.cached_call("weather", "k", lambda: 1) == 1
    assert process_cache._refresher is None
    assert not (tmp_data_dir / "m1.db").exists()
