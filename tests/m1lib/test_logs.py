from __future__ import annotations

import json
import logging

import pytest

from m1lib.logs import JsonFormatter, RedactingFilter, redact, register_secret


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abcDEF123.456-789",
        "key=m1_" + "A" * 43,
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
        "cookie: m1_session=s3cr3tvalue",
        "postgresql://m1:hunter22@db/m1",
    ],
)
def test_redact_masks_every_kind_of_secret(text: str) -> None:
    masked = redact(text)
    assert "***" in masked
    for secret in ("abcDEF123", "A" * 43, "c2lnbmF0dXJl", "s3cr3tvalue", "hunter22"):
        assert secret not in masked


def test_registered_secret_is_masked_anywhere() -> None:
    register_secret("plain-generated-secret-value")
    assert "plain-generated-secret-value" not in redact("x plain-generated-secret-value y")


def test_json_lines_carry_level_logger_message_and_extras() -> None:
    record = logging.makeLogRecord(
        {
            "name": "m1.test",
            "levelname": "INFO",
            "levelno": 20,
            "msg": "hello %s",
            "args": ("you",),
            "replica": "r1",
        }
    )
    RedactingFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello you"
    assert line["level"] == "INFO"
    assert line["logger"] == "m1.test"
    assert line["replica"] == "r1"


def test_filter_masks_arguments_before_any_handler(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("m1.test.redact")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="m1.test.redact"):
        logger.info("calling with %s", "Bearer m1_" + "z" * 40)
    assert "z" * 40 not in caplog.text
