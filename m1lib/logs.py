"""Logging set-up: text or one JSON object per line, and a filter that masks secrets in every record.

Keys, bearer tokens, JWTs, cookies and URL passwords are masked whatever logger emits them, so a
careless message (or a library's) cannot put a secret into a log file.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from m1lib.settings import LogFormat, Settings

MASK = "***"
_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\bm1_[A-Za-z0-9_-]{16,}"),  # M1 API keys
    re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),  # JWTs
    re.compile(r"(?i)((?:m1_session|cookie|authorization)\s*[=:]\s*)[^\s;,]+"),
    re.compile(r"(//[^:/@\s]+:)[^@\s]+@"),  # passwords in URLs
    re.compile(r"(?i)([?&](?:key|api_key|token|access_token|secret|password)=)[^&\s\"']+"),
]
_KNOWN_SECRETS: set[str] = set()


def register_secret(value: str) -> None:
    """Mask this exact value in every later log record (generated secrets, configured keys)."""
    if len(value) >= 8:
        _KNOWN_SECRETS.add(value)


def redact(text: str) -> str:
    for secret in _KNOWN_SECRETS:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text


class RedactingFilter(logging.Filter):
    """Renders the message once, masks it, and stores the masked text so no handler sees the raw one."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, and any ``extra`` fields."""

    _RESERVED = frozenset(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in self._RESERVED and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def make_handler(settings: Settings) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if settings.log.format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    return handler


def configure_logging(settings: Settings) -> None:
    """Route M1's and uvicorn's loggers through one redacting handler at the configured level."""
    handler = make_handler(settings)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log.level.value)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    quiet_chatty_libraries()


def quiet_chatty_libraries() -> None:
    """Per-request INFO lines of clients and migrations would drown what matters (probes poll)."""
    for name in ("httpx", "httpcore", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def uvicorn_log_config(settings: Settings) -> dict[str, Any]:
    """A uvicorn ``log_config`` that sends its records through M1's redacting handler."""
    formatter = (
        {"()": "m1lib.logs.JsonFormatter"}
        if settings.log.format is LogFormat.JSON
        else {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "m1lib.logs.RedactingFilter"}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["redact"],
            }
        },
        "root": {"handlers": ["default"], "level": settings.log.level.value},
        "loggers": {
            "uvicorn": {"level": settings.log.level.value},
            "uvicorn.error": {"level": settings.log.level.value},
            "uvicorn.access": {"level": settings.log.level.value},
            "httpx": {"level": "WARNING"},
            "alembic.runtime.migration": {"level": "WARNING"},
        },
    }
