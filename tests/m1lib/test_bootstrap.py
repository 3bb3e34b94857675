from __future__ import annotations

import json
import stat
from collections.abc import Callable

import pytest

from m1lib import auth, bootstrap, signing
from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.errors import UsageError
from m1lib.settings import Settings


@pytest.fixture
def db(make_settings: Callable[..., Settings]) -> Database:
    database = Database(make_settings())
    migrate.upgrade(database)
    return database


def test_first_start_generates_secrets_with_mode_0600(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    settings = make_settings()
    result = bootstrap.ensure_embedded_secrets(settings, db)
    assert result.admin_key is not None
    assert result.admin_key.startswith("m1_")
    assert result.jwt_secret_generated
    for name in (signing.JWT_SECRET_FILE, bootstrap.ADMIN_KEY_FILE, bootstrap.RECORD_FILE):
        mode = stat.S_IMODE((settings.data_dir / name).stat().st_mode)
        assert mode == 0o600, name
    assert set(bootstrap.generated_secrets(settings)) == {"jwt_secret", "admin_key"}
    assert len(signing.resolve_jwt_secret(settings).get_secret_value()) >= 32


def test_admin_key_is_shown_only_on_the_first_start(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    settings = make_settings()
    first = bootstrap.ensure_embedded_secrets(settings, db)
    second = bootstrap.ensure_embedded_secrets(settings, db)
    assert first.admin_key is not None
    assert second.admin_key is None
    assert auth.count_credentials(db) == 1


def test_stored_credential_is_a_hash_of_the_printed_key(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    key = bootstrap.ensure_embedded_secrets(make_settings(), db).admin_key
    assert key is not None
    with db.engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT key_hash, role FROM api_credentials").one()
    assert key not in stored[0]
    assert auth.key_matches(key, stored[0])
    assert stored[1] == "admin"


def test_configured_secret_is_used_and_nothing_is_generated(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    settings = make_settings(jwt={"secret": "c" * 40})
    result = bootstrap.ensure_embedded_secrets(settings, db)
    assert not result.jwt_secret_generated
    assert not (settings.data_dir / signing.JWT_SECRET_FILE).exists()
    assert signing.resolve_jwt_secret(settings).get_secret_value() == "c" * 40
    assert "jwt_secret" not in json.loads((settings.data_dir / bootstrap.RECORD_FILE).read_text())


def test_no_secret_anywhere_is_a_usage_error(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(UsageError, match="M1_JWT_SECRET"):
        signing.resolve_jwt_secret(make_settings())


def test_two_data_dirs_get_different_secrets(
    make_settings: Callable[..., Settings], tmp_path, db: Database
) -> None:
    other = make_settings(data_dir=tmp_path / "other")
    other_db = Database(other)
    migrate.upgrade(other_db)
    first = bootstrap.ensure_embedded_secrets(make_settings(), db)
    second = bootstrap.ensure_embedded_secrets(other, other_db)
    assert first.admin_key != second.admin_key
    assert signing.resolve_jwt_secret(make_settings()).get_secret_value() != (
        signing.resolve_jwt_secret(other).get_secret_value()
    )
