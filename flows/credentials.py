"""The credential a flow run records and queries with: ``M1_API_KEY``, else a Prefect Secret block.

`m1 up` hands its runner a key in the environment. A worker elsewhere may instead hold none and
let flow runs read it from the Secret block ``M1_API_KEY_BLOCK`` (``m1 keys create NAME --role
service --secret-block m1-api-key`` stores one). Prefect-side code only: m1lib never loads blocks.
"""

from __future__ import annotations

import logging

from prefect.blocks.system import Secret

from m1lib.settings import adopt_api_key, get_settings

__all__ = ["api_key_from_block", "store_api_key"]

logger = logging.getLogger("m1.flows")


def api_key_from_block() -> bool:
    """At flow start: without ``M1_API_KEY``, adopt the key of the Secret block named by
    ``M1_API_KEY_BLOCK`` if it exists; True when the run then has a key."""
    settings = get_settings()
    if settings.api.key is not None:
        return True
    try:
        secret = Secret.load(settings.api.key_block)
    except ValueError:  # no such block: events stay in this run (logged once by m1lib)
        return False
    value = secret.get()  # type: ignore[union-attr]
    if not isinstance(value, str) or not value:
        logger.warning("the Secret block %r holds no API key", settings.api.key_block)
        return False
    adopt_api_key(value)
    return True


def store_api_key(block: str, key: str) -> None:
    """Save ``key`` as the Secret block ``block`` (replacing one of that name)."""
    Secret(value=key).save(block, overwrite=True)
