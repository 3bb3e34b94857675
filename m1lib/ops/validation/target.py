"""What the production-validation suite checks: a target named by a profile, and its secrets apart.

The :class:`Target` is what an operator types (URLs, the profile): it may be shown anywhere, a
Prefect UI parameter included, so a URL carrying a password is refused. The :class:`Credentials`
come from the environment (``M1_VALIDATION_*``, ``M1_API_KEY``, the configured URLs) or a Prefect
Secret block, and are joined to the URLs only when a scenario connects.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from m1lib.settings import Settings

__all__ = ["Credentials", "Profile", "Target", "with_password"]

_ADMIN_KEY_FILE = "admin_key"  # m1lib.bootstrap's generated key, in the data directory


class Profile(StrEnum):
    """How strict the grading is: ``local`` tolerates http, SQLite, no Redis; ``production``
    does not; ``staging`` warns where production fails."""

    LOCAL = "local"
    STAGING = "staging"
    PRODUCTION = "production"


def _has_password(url: str) -> bool:
    return urlsplit(url).password is not None


class Target(BaseModel):
    """The deployment under test; any URL left out is this configuration's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: Profile = Field(Profile.LOCAL, description="local, staging or production.")
    api_url: str | None = Field(
        None, description="Base URL of the M1 API (default: M1_API_URL or the API's own)."
    )
    database_url: str | None = Field(
        None,
        description="M1's database URL without password (default: M1_DATABASE_URL); the "
        "password comes from M1_VALIDATION_DATABASE_PASSWORD or the Secret block.",
    )
    redis_url: str | None = Field(
        None, description="Redis URL without password (default: M1_REDIS_URL; none: no Redis)."
    )
    redis_prefix: str | None = Field(
        None, description="Key prefix of the probe keys (default: M1_REDIS_PREFIX)."
    )
    prefect_url: str | None = Field(
        None, description="Prefect API URL of the deployment (reported; default: M1's own)."
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate the API serves (default: M1_TLS_CERT_FILE)."
    )

    @field_validator("api_url", "database_url", "redis_url", "prefect_url")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        if value is not None and _has_password(value):
            raise ValueError(
                "holds a password; allowed: a URL without one (the password comes from "
                "M1_VALIDATION_*_PASSWORD or the Secret block, never a parameter)"
            )
        return value

    def resolved(self, settings: Settings) -> ResolvedTarget:
        """Every URL filled in from ``settings`` where the target gave none."""
        return ResolvedTarget(
            profile=self.profile,
            api_url=(self.api_url or settings.client_api_url).rstrip("/"),
            database_url=self.database_url or settings.database_url,
            redis_url=self.redis_url or settings.redis_url,
            redis_prefix=self.redis_prefix or settings.redis.prefix,
            prefect_url=self.prefect_url or settings.prefect_api_url,
            tls_cert_file=self.tls_cert_file or settings.tls.cert_file,
        )


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    """The target with defaults applied; URLs may carry the configuration's own passwords, so
    only :meth:`shown` goes into a report."""

    profile: Profile
    api_url: str
    database_url: str
    redis_url: str | None
    redis_prefix: str
    prefect_url: str
    tls_cert_file: Path | None

    def shown(self) -> dict[str, Any]:
        """The target as a report shows it: passwords masked."""
        return {
            "profile": self.profile.value,
            "apiUrl": self.api_url,
            "databaseUrl": _masked(self.database_url),
            "redisUrl": _masked(self.redis_url) if self.redis_url else None,
            "prefectUrl": self.prefect_url,
            "tlsCertFile": str(self.tls_cert_file) if self.tls_cert_file else None,
        }


def _masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def with_password(url: str, password: SecretStr | None) -> str:
    """``url`` with ``password`` put in when it has a user and no password of its own."""
    parts = urlsplit(url)
    if password is None or parts.password is not None or not parts.hostname:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    secret = quote(password.get_secret_value(), safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{secret}@{host}"))


@dataclass(frozen=True, slots=True)
class Credentials:
    """The suite's secrets: never a parameter, never in a report."""

    admin_key: SecretStr | None = None
    database_password: SecretStr | None = None
    redis_password: SecretStr | None = None

    @classmethod
    def from_settings(cls, settings: Settings, block: dict[str, Any] | None = None) -> Credentials:
        """From ``M1_VALIDATION_*``, else a Secret block's JSON object (a flow run's); the admin
        key else the one `m1 up` generated in the data directory, else ``M1_API_KEY``."""
        values = block or {}

        def pick(name: str, configured: SecretStr | None) -> SecretStr | None:
            given = values.get(name)
            if configured is None and isinstance(given, str) and given:
                return SecretStr(given)
            return configured

        admin = (
            pick("admin_key", settings.validation.admin_key)
            or _generated_admin_key(settings)
            or settings.api.key  # last: a flow run's own key is a service key, not admin
        )
        return cls(
            admin_key=admin,
            database_password=pick("database_password", settings.validation.database_password),
            redis_password=pick("redis_password", settings.validation.redis_password),
        )


def _generated_admin_key(settings: Settings) -> SecretStr | None:
    try:
        text = (settings.data_dir / _ADMIN_KEY_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return SecretStr(text) if text else None
