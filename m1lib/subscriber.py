"""The one Redis pub/sub subscriber loop: listen on a channel, reconnect with backoff.

Pub/sub in M1 is only ever a hint (the database is the truth): messages sent while a subscriber
is away are lost, so its owner is told each time it (re)subscribes and catches up then. The
control agent and the revocation synchroniser run it on a thread of their :class:`LoopThreads`.

Its modules already load redis (through :mod:`m1lib.redis_conn`); this one adds no import to
any hot path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import redis

from m1lib.loops import Backoff
from m1lib.redis_conn import make_pubsub_redis

if TYPE_CHECKING:
    from m1lib.settings import Settings

__all__ = ["SUBSCRIBE_WAIT_S", "close_quietly", "run_subscriber"]

SUBSCRIBE_WAIT_S: Final = 0.25  # how long the subscriber blocks, so stop is answered quickly
_REDIS_ERRORS: Final = (redis.RedisError, OSError)


def run_subscriber(
    settings: Settings,
    channel: str,
    *,
    stop: threading.Event,
    on_message: Callable[[Any], None],
    on_subscribed: Callable[[], None],
    on_lost: Callable[[], None] | None = None,
    label: str,
    meanwhile: str,
    logger: logging.Logger,
    wait_s: float = SUBSCRIBE_WAIT_S,
) -> None:
    """Call ``on_message`` with each message's data until ``stop`` is set; returns at once
    without Redis configured.

    ``on_subscribed`` runs after each (re)subscription, ``on_lost`` when a subscription ends
    (Redis lost, or stopping). A lost connection is logged as "``label`` lost Redis, retrying
    in ... (``meanwhile``)" and retried after a :class:`Backoff` wait, which a message
    received resets.
    """
    backoff = Backoff(stop)
    while not stop.is_set():
        client = make_pubsub_redis(settings)
        if client is None:
            return
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        lost: BaseException | None = None
        try:
            pubsub.subscribe(channel)
            on_subscribed()
            while not stop.is_set():
                message = pubsub.get_message(timeout=wait_s)
                backoff.reset()
                if message is not None and message.get("type") == "message":
                    on_message(message["data"])
        except _REDIS_ERRORS as error:
            lost = error
        finally:
            if on_lost is not None:
                on_lost()
            close_quietly(pubsub, client, label=label, logger=logger)
        if lost is not None:
            logger.warning(
                "%s lost Redis, retrying in %.1f s (%s): %s",
                label,
                backoff.delay_s,
                meanwhile,
                lost,
            )
            backoff.wait()


def close_quietly(
    pubsub: redis.client.PubSub, client: redis.Redis, *, label: str, logger: logging.Logger
) -> None:
    """Close a subscription and its client; a failure (Redis already gone) is only logged."""
    for closable in (pubsub, client):
        try:
            closable.close()
        except _REDIS_ERRORS:
            logger.debug("closing the %s failed", label, exc_info=True)
