"""The Redis subscriber loop against a redis-server of the test's own that it kills and restarts."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import redis

from m1lib.settings import Settings
from m1lib.subscriber import close_quietly, run_subscriber
from tests.conftest import subscribers
from tests.services import OwnRedis
from tests.waiting import wait_for

logger = logging.getLogger("m1.test.subscriber")
CHANNEL = "m1-test:subscriber"


class Listener:
    """run_subscriber on a thread, with what its callbacks saw."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.messages: list[Any] = []
        self.subscriptions = 0
        self.losses = 0
        self.thread = threading.Thread(target=self._run, name="m1-test-subscriber", daemon=True)

    def _run(self) -> None:
        run_subscriber(
            self.settings,
            CHANNEL,
            stop=self.stop,
            on_message=self.messages.append,
            on_subscribed=self._subscribed,
            on_lost=self._lost,
            label="test subscriber",
            meanwhile="polling continues",
            logger=logger,
        )

    def _subscribed(self) -> None:
        self.subscriptions += 1

    def _lost(self) -> None:
        self.losses += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the subscriber did not stop"


@pytest.fixture
def publisher(own_redis: OwnRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis.url, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def listener(make_settings: Callable[..., Settings], own_redis: OwnRedis) -> Iterator[Listener]:
    started = Listener(make_settings(redis={"url": own_redis.url}))
    started.thread.start()
    yield started
    started.close()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger.name and r.levelno >= 30]


def test_messages_reach_the_owner_and_a_dropped_connection_is_resumed(
    listener: Listener,
    publisher: redis.Redis,
    own_redis: OwnRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=logger.name)
    wait_for(lambda: listener.subscriptions == 1, "the first subscription")
    wait_for(lambda: subscribers(own_redis.url, CHANNEL), "the server to count the subscriber")
    publisher.publish(CHANNEL, b"before")
    wait_for(
        lambda: listener.messages == [b"before"],
        "the first message",
        show=lambda _: listener.messages,
    )

    for outage in (1, 2):
        own_redis.stop()
        wait_for(lambda n=outage: listener.losses >= n and _warnings(caplog), "the loss noticed")
        own_redis.start()
        wait_for(
            lambda n=outage: listener.subscriptions == n + 1,
            "the subscriber to subscribe again (and tell its owner, to catch up)",
            show=lambda _: listener.subscriptions,
        )
        # the first retry after an outage is at the minimum again: a working connection resets it
        first = _warnings(caplog)[0]
        assert first.startswith(
            "test subscriber lost Redis, retrying in 0.1 s (polling continues): "
        )
        caplog.clear()

    wait_for(
        lambda: subscribers(own_redis.url, CHANNEL), "the server to count the subscriber again"
    )
    publisher.publish(CHANNEL, b"after")
    wait_for(
        lambda: listener.messages == [b"before", b"after"],
        "the message after the reconnection",
        show=lambda _: listener.messages,
    )


def test_stop_ends_the_subscription_and_closes_it(listener: Listener, own_redis: OwnRedis) -> None:
    wait_for(lambda: subscribers(own_redis.url, CHANNEL) == 1, "the subscription")
    losses = listener.losses
    listener.close()
    assert listener.losses == losses + 1  # the owner hears the subscription ended
    wait_for(lambda: subscribers(own_redis.url, CHANNEL) == 0, "the server to drop the subscriber")


def test_stop_is_answered_while_redis_is_away(
    listener: Listener, own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=logger.name)
    wait_for(lambda: listener.subscriptions == 1, "the subscription")
    own_redis.stop()
    wait_for(lambda: len(_warnings(caplog)) >= 3, "a few failed reconnections")
    listener.close()  # within the join deadline, though the backoff is running


def test_without_redis_it_returns_at_once(make_settings: Callable[..., Settings]) -> None:
    called: list[str] = []
    run_subscriber(
        make_settings(),
        CHANNEL,
        stop=threading.Event(),
        on_message=called.append,
        on_subscribed=lambda: called.append("subscribed"),
        label="test subscriber",
        meanwhile="polling continues",
        logger=logger,
    )
    assert called == []


class Closable:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.closed = False

    def close(self) -> None:
        self.closed = True
        if self.error is not None:
            raise self.error


def test_closing_quietly_logs_a_failure_and_still_closes_the_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pubsub = Closable(redis.ConnectionError("gone"))
    client = Closable(OSError("reset"))
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        close_quietly(cast(Any, pubsub), cast(Any, client), label="test subscriber", logger=logger)
    assert pubsub.closed
    assert client.closed
    assert caplog.text.count("closing the test subscriber failed") == 2


def test_closing_quietly_lets_a_bug_through() -> None:
    with pytest.raises(ValueError, match="bug"):
        close_quietly(
            cast(Any, Closable(ValueError("bug"))),
            cast(Any, Closable(None)),
            label="test subscriber",
            logger=logger,
        )
