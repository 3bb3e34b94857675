"""The token-signing secret as every reader sees it: the configured one, else the generated file.

Reading is apart from :mod:`m1lib.bootstrap`, which creates the file on the first ``m1 up`` and
needs the database for its admin key: the token codec and the session cookies only read, and
should not pull in the database layer to do so.
"""

from __future__ import annotations

from typing import Final

from pydantic import SecretStr

from m1lib.errors import UsageError
from m1lib.logs import register_secret
from m1lib.settings import Settings

__all__ = ["JWT_SECRET_FILE", "resolve_jwt_secret"]

JWT_SECRET_FILE: Final = "jwt_secret"  # noqa: S105 - a file name in M1_DATA_DIR


def resolve_jwt_secret(settings: Settings) -> SecretStr:
    """The configured secret, else the generated one; never a built-in default."""
    if settings.jwt.secret is not None:
        return settings.jwt.secret
    path = settings.data_dir / JWT_SECRET_FILE
    if not path.exists():
        raise UsageError(
            f"no signing secret: set M1_JWT_SECRET or run `m1 up` once to generate {path}"
        )
    value = path.read_text().strip()
    register_secret(value)
    return SecretStr(value)
