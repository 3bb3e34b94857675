"""Secrets for the embedded default: generated once into the data directory, never fixed in code.

On the first ``m1 up`` the token-signing secret and an admin API key are written to files of mode
0600 in ``M1_DATA_DIR``, and ``generated.json`` records that they were generated, so the
configuration validator can flag them in production. Files are created with O_EXCL: two processes
starting at once cannot write two different secrets. Reading the secret is
:func:`m1lib.signing.resolve_jwt_secret`'s job: readers need not pull in the database layer.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from m1lib import auth
from m1lib.db.session import Database
from m1lib.logs import register_secret
from m1lib.settings import Settings
from m1lib.signing import JWT_SECRET_FILE

ADMIN_KEY_FILE = "admin_key"
RECORD_FILE = "generated.json"
BOOTSTRAP_CREDENTIAL = "admin"


@dataclass(frozen=True)
class BootstrapResult:
    admin_key: str | None  # set only on the start that created it: print it once
    jwt_secret_generated: bool
    admin_key_path: Path | None


def _write_new(path: Path, content: str) -> bool:
    """Create ``path`` with mode 0600 unless it exists; True when this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    return True


def _record(data_dir: Path, what: str) -> None:
    path = data_dir / RECORD_FILE
    record = json.loads(path.read_text()) if path.exists() else {}
    record[what] = {"generated_at": datetime.now(UTC).isoformat(), "by": "m1 up"}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle, indent=2)
    tmp.replace(path)


def generated_secrets(settings: Settings) -> dict[str, str]:
    """What ``m1 up`` generated in this data directory (name -> when), for the validator."""
    path = settings.data_dir / RECORD_FILE
    if not path.exists():
        return {}
    return {name: info["generated_at"] for name, info in json.loads(path.read_text()).items()}


def ensure_embedded_secrets(settings: Settings, db: Database) -> BootstrapResult:
    """Generate what is missing: the signing secret (unless configured) and a first admin key."""
    jwt_generated = False
    if settings.jwt.secret is None:
        jwt_generated = _write_new(settings.data_dir / JWT_SECRET_FILE, secrets.token_urlsafe(48))
        if jwt_generated:
            _record(settings.data_dir, "jwt_secret")

    admin_key: str | None = None
    key_path = settings.data_dir / ADMIN_KEY_FILE
    if auth.count_credentials(db) == 0:
        candidate = auth.new_key()
        if _write_new(key_path, candidate + "\n"):
            _record(settings.data_dir, "admin_key")
            admin_key = candidate
        existing = key_path.read_text().strip()
        # Another process starting at the same moment may have stored it first.
        with contextlib.suppress(IntegrityError):
            auth.store_credential(
                db, BOOTSTRAP_CREDENTIAL, auth.Role.ADMIN, existing, created_by="m1 up (generated)"
            )
        register_secret(existing)
    return BootstrapResult(
        admin_key=admin_key,
        jwt_secret_generated=jwt_generated,
        admin_key_path=key_path if key_path.exists() else None,
    )
