"""A real API process: HTTPS with a configured certificate, and access logs that keep no secret."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from m1lib import auth
from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.settings import PROJECT_ROOT, Settings
from tests.services import free_port


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class ApiProcess:
    def __init__(self, env: dict[str, str], log: Path, base_url: str) -> None:
        self.log, self.base_url = log, base_url
        self.process = subprocess.Popen(
            [sys.executable, "-m", "m1lib.api"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def wait_live(self, verify: ssl.SSLContext | bool) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if (
                    httpx.get(f"{self.base_url}/health/live", verify=verify, timeout=1).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("API did not start:\n" + self.log.read_text())

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(15)
        return self.log.read_text()


@pytest.fixture
def api_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], Settings]]:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, jwt={"secret": "j" * 40}, _env_file=None)
    db = Database(settings)
    migrate.upgrade(db)
    db.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("M1_")}
    env.update(
        {
            "M1_DATA_DIR": str(data),
            "M1_JWT_SECRET": "j" * 40,
            "M1_API_PORT": str(free_port()),
            "M1_REPLICA_HEARTBEAT_S": "0.5",
        }
    )
    return env, settings


def test_tls_round_trip_with_a_configured_certificate(
    api_env: tuple[dict[str, str], Settings], tmp_path: Path
) -> None:
    env, _ = api_env
    cert, key = _self_signed(tmp_path)
    env.update({"M1_TLS_CERT_FILE": str(cert), "M1_TLS_KEY_FILE": str(key)})
    api = ApiProcess(env, tmp_path / "api.log", f"https://127.0.0.1:{env['M1_API_PORT']}")
    try:
        api.wait_live(verify=ssl.create_default_context(cafile=str(cert)))
        context = ssl.create_default_context(cafile=str(cert))
        response = httpx.get(f"{api.base_url}/health/ready", verify=context, timeout=5)
        assert response.status_code == 200
        assert response.http_version.startswith("HTTP/1")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{env['M1_API_PORT']}/health/live", timeout=2)
    finally:
        api.stop()


def test_access_logs_never_contain_keys_cookies_or_tokens(
    api_env: tuple[dict[str, str], Settings], tmp_path: Path
) -> None:
    env, settings = api_env
    db = Database(settings)
    key = auth.create_credential(db, "logger", "admin", created_by="test")
    db.dispose()
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlLXNlY3JldA"
    env["M1_LOG_FORMAT"] = "json"
    api = ApiProcess(env, tmp_path / "api.log", f"http://127.0.0.1:{env['M1_API_PORT']}")
    try:
        api.wait_live(verify=False)
        with httpx.Client(base_url=api.base_url, timeout=5) as client:
            client.get("/api/m1/replicas", headers={"Authorization": f"Bearer {key}"})
            login = client.post("/api/m1/session", json={"key": key})
            cookie = login.cookies["m1_session"]
            client.get("/api/m1/replicas")
            client.get(f"/api/m1/replicas?token={jwt_like}&key={key}")
            client.get(
                "/api/m1/replicas", headers={"Authorization": "Bearer m1_wrongwrongwrongwrongwrong"}
            )
    finally:
        output = api.stop()
    assert '"logger": "uvicorn.access"' in output  # access lines were written
    for secret in (key, cookie, jwt_like, "m1_wrongwrongwrongwrongwrong", "j" * 40):
        assert secret not in output
