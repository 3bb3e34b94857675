"""``m1lib.raise_alert``: an ``error_alerts`` event that reaches every replica at once.

An alert is recorded like any event, but through ``Recorder.record_now``: the ingest thread is
woken at once and hands the alert on as a batch of its own, so on a runtime that publishes (an
API replica with Redis) it is on the shared stream (and so on every replica's dashboard) within
milliseconds, not at the next flush of ``M1_EVENTS_FLUSH_MS``; otherwise it is in this process's
store as promptly. The caller's
thread validates and queues, nothing more: no I/O.

``metadata`` is a JSON object (a dict, or its JSON text), stored as compact JSON text of at most
2,000 characters in the raw-only ``metadata`` field; keys are names and strings prose
(:func:`m1lib.text.check_json`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Literal

from m1lib.errors import InputError
from m1lib.metrics import pipeline as _pipeline
from m1lib.metrics.schema import MAX_TEXT
from m1lib.text import check_json

__all__ = ["METADATA_MAX", "raise_alert"]

METADATA_MAX: Final = MAX_TEXT  # characters of metadata's JSON text
_ALLOWED: Final = [f"a JSON object of at most {METADATA_MAX} characters as compact JSON text"]


def raise_alert(
    level: Literal["warning", "critical"],
    source: str,
    message: str,
    *,
    metadata: Mapping[str, Any] | str | None = None,
) -> None:
    """Record an ``error_alerts`` event and have it published on the shared stream now.

    InputError for a level other than warning or critical, a source or message over 2,000
    characters, or metadata that is not a JSON object or is longer than 2,000 characters as
    compact JSON text (path ``metadata``). Never blocks: a full queue drops and counts it.
    """
    fields = {
        "level": level,
        "source": source,
        "message": message,
        "metadata": metadata_text(metadata),
    }
    (_pipeline._default or _pipeline.default_runtime()).recorder.record_now(
        "error_alerts", None, fields
    )


def metadata_text(metadata: Mapping[str, Any] | str | None) -> str | None:
    """``metadata`` as the compact JSON text the event stores, or InputError naming it."""
    if metadata is None:
        return None
    if isinstance(metadata, str):
        try:
            value = json.loads(metadata)
        except ValueError as error:
            raise InputError("metadata", f"is not JSON text ({error})", _ALLOWED) from error
    elif isinstance(metadata, Mapping):
        value = dict(metadata)
    else:
        raise InputError("metadata", f"{type(metadata).__name__} is not a JSON object", _ALLOWED)
    if not isinstance(value, dict):
        raise InputError("metadata", f"{type(value).__name__} is not a JSON object", _ALLOWED)
    check_json("metadata", value)
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if len(text) > METADATA_MAX:
        raise InputError("metadata", f"is {len(text)} characters as JSON", _ALLOWED)
    return text
