"""The SLO file: M1's latency and freshness targets, in one YAML file the suite grades against.

One file (``M1_SLO_FILE``, else the ``slo.yaml`` shipped beside this module) so the targets an
operator agrees to are read in one place; unknown keys are refused, so a typo cannot silently
leave a target at its default.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from m1lib.errors import SettingsError
from m1lib.settings import Settings

__all__ = ["SHIPPED_SLO", "Slo", "load_slo"]

SHIPPED_SLO: Final = "ops/validation/slo.yaml"  # inside the m1lib package


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSlo(_Strict):
    select_p95_ms: float = Field(gt=0)
    samples: int = Field(ge=5, le=1000)
    pool_checkout_s: float = Field(gt=0)


class RedisSlo(_Strict):
    ping_p95_ms: float = Field(gt=0)
    samples: int = Field(ge=5, le=1000)
    pubsub_ms: float = Field(gt=0)


class ApiSlo(_Strict):
    stream_delivery_ms: float = Field(gt=0)
    revocation_ms: float = Field(gt=0)


class PerformanceSlo(_Strict):
    introspect_p99_ms: float = Field(gt=0)
    query_p99_ms: float = Field(gt=0)
    stream_p99_ms: float = Field(gt=0)
    samples: int = Field(ge=5, le=100)
    stream_samples: int = Field(ge=1, le=20)


class TlsSlo(_Strict):
    min_days_left: int = Field(ge=0, le=365)


class Slo(_Strict):
    """The targets, as the SLO file states them (docs/contracts.md, "Production validation")."""

    version: int = Field(ge=1, le=1)
    warn_at: float = Field(gt=0, le=1)
    database: DatabaseSlo
    redis: RedisSlo
    api: ApiSlo
    performance: PerformanceSlo
    tls: TlsSlo
    source: str = ""  # where it was read (set by load_slo)


def load_slo(settings: Settings) -> Slo:
    """The SLO file named by ``M1_SLO_FILE``, else the shipped one; ``SettingsError`` naming the
    file and the key when it cannot be read or holds a bad value."""
    path: Path | None = settings.slo.file
    source = f"M1_SLO_FILE ({path})" if path is not None else f"m1lib/{SHIPPED_SLO}"
    try:
        if path is not None:
            text = path.read_text(encoding="utf-8")
        else:
            text = resources.files("m1lib").joinpath(SHIPPED_SLO).read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SettingsError(f"{source}: cannot read the SLO file: {error}") from error
    if not isinstance(data, dict):
        raise SettingsError(f"{source}: the SLO file must be a mapping of groups")
    try:
        return Slo.model_validate({**data, "source": source})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "/"
        raise SettingsError(f"{source}: {where}: {first['msg']}") from None
