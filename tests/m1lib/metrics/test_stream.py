"""The shared event stream's threads against a redis-server the test kills and restarts."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis

from m1lib.metrics.codec import DecodedChunk
from m1lib.metrics.columns import RawChunk
from m1lib.metrics.recorder import Recorder
from m1lib.metrics.store import EventStore
from m1lib.metrics.stream import StreamConsumer, StreamPublisher, parse_id
from tests.services import OwnRedis
from tests.waiting import wait_for

STREAM = "m1-test:events"
HEALTH: dict[str, Any] = {"component": "db", "status": "healthy", "latencyMs": 2.5}
Batch = Sequence[tuple[str, RawChunk]]


def make_batch(events: int) -> Batch:
    """A batch of ``events`` health checks, as the ingest thread hands it on."""
    batches: list[Batch] = []
    recorder = Recorder(EventStore(), replica_id="r1", on_batch=batches.append)
    for _ in range(events):
        recorder.record_event("health_checks", **HEALTH)
    recorder.ingest_pending()
    (batch,) = batches
    return batch


def _threads(name: str) -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == name}


@pytest.fixture
def client(own_redis: OwnRedis) -> Iterator[redis.Redis]:
    made = redis.Redis.from_url(own_redis.url, socket_timeout=1, socket_connect_timeout=1)
    yield made
    made.close()


@pytest.fixture
def publisher(client: redis.Redis) -> Iterator[StreamPublisher]:
    made = StreamPublisher(
        client, STREAM, origin="api-a", run="run-a", maxlen=10_000, outbox_events=1000
    )
    yield made
    made.close()


class Applied:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str, int, int, int]] = []

    def __call__(self, origin: str, run: str, seq: int, piece: int, chunks: list[DecodedChunk]) -> None:  # fmt: skip
        self.entries.append((origin, run, seq, piece, sum(c.ts.size for c in chunks)))


def test_the_publisher_keeps_its_outbox_while_redis_is_away_and_sends_it_after(
    publisher: StreamPublisher, client: redis.Redis, own_redis: OwnRedis
) -> None:
    others = _threads("m1-metrics-publish")  # other tests' runtimes may still run theirs
    publisher.start()
    publisher.start()
    (thread,) = _threads("m1-metrics-publish") - others
    publisher.offer(1, make_batch(3))
    assert publisher.wait_sent(30)
    own_redis.stop()
    publisher.offer(2, make_batch(4))
    wait_for(lambda: publisher.pending == 4, "the batch to stay queued while Redis is away")
    own_redis.start()  # empty: a fresh server without the first entry
    wait_for(lambda: publisher.pending == 0, "the retry to send the outbox")
    entries: Any = client.xrange(STREAM)
    assert [fields[b"s"] for _, fields in entries] == [b"2"]
    publisher.close()
    assert not thread.is_alive()
    assert publisher.unpublished_events == 0


def test_close_sends_what_the_thread_had_not(
    publisher: StreamPublisher, client: redis.Redis
) -> None:
    publisher.offer(1, make_batch(2))  # never started: close sends it, once
    publisher.close()
    assert publisher.pending == 0
    assert client.xlen(STREAM) == 1


def test_the_consumer_applies_others_entries_skips_its_own_and_resumes_after_an_outage(
    publisher: StreamPublisher, client: redis.Redis, own_redis: OwnRedis
) -> None:
    applied = Applied()
    consumer = StreamConsumer(
        client, STREAM, apply=applied, skip=lambda origin, run, seq, piece: seq == 2
    )
    others = _threads("m1-metrics-consume")
    consumer.start()
    (thread,) = _threads("m1-metrics-consume") - others
    try:
        for seq in (1, 2, 3):
            publisher.offer(seq, make_batch(seq))
            assert publisher.send_pending()
        wait_for(
            lambda: len(applied.entries) == 2, "two entries applied", show=lambda _: applied.entries
        )
        assert applied.entries == [("api-a", "run-a", 1, 0, 1), ("api-a", "run-a", 3, 0, 3)]
        assert consumer.skipped_entries == 1

        own_redis.stop()
        own_redis.start()  # empty, so the consumer's cursor (an old id) still reads what follows
        publisher.offer(4, make_batch(4))
        wait_for(publisher.send_pending, "Redis to take the publish again")
        wait_for(lambda: len(applied.entries) == 3, "the entry after the outage")
        assert applied.entries[-1] == ("api-a", "run-a", 4, 0, 4)
    finally:
        consumer.close()
    assert not thread.is_alive()


def test_entry_ids_parse_to_comparable_pairs() -> None:
    assert parse_id(b"1700000000000-3") == (1_700_000_000_000, 3)
    assert parse_id("5") == (5, 0)
    assert parse_id("9-0") < parse_id("10-0") < parse_id("10-1")


def test_a_full_outbox_drops_the_oldest_batches_and_counts_their_events(
    publisher: StreamPublisher, client: redis.Redis
) -> None:
    publisher.offer(1, make_batch(600))  # never started: the outbox only fills
    publisher.offer(2, make_batch(600))  # 1200 > the outbox's 1000: the oldest goes
    assert (publisher.pending, publisher.unpublished_events) == (600, 600)
    publisher.offer(3, make_batch(1500))  # bigger than the outbox: kept alone, the rest dropped
    assert (publisher.pending, publisher.unpublished_events) == (1500, 1200)
    assert publisher.send_pending()
    entries: Any = client.xrange(STREAM)
    assert [fields[b"s"] for _, fields in entries] == [b"3"]
    assert (publisher.pending, publisher.unpublished_events) == (0, 1200)
    assert publisher.published_events == 1500


def test_a_large_batch_goes_out_as_numbered_pieces_of_one_transaction(
    publisher: StreamPublisher, client: redis.Redis
) -> None:
    publisher.offer(7, make_batch(20_001))
    assert publisher.send_pending()
    applied = Applied()
    consumer = StreamConsumer(client, STREAM, apply=applied, skip=lambda *_: False)
    assert consumer.read_once(block_ms=None) == 2
    assert applied.entries == [("api-a", "run-a", 7, 0, 20_000), ("api-a", "run-a", 7, 1, 1)]


def test_the_consumer_skips_foreign_and_damaged_entries_and_reads_on(
    publisher: StreamPublisher, client: redis.Redis
) -> None:
    applied = Applied()
    consumer = StreamConsumer(client, STREAM, apply=applied, skip=lambda *_: False)
    assert consumer.caught_up(1)  # nothing on the stream yet
    assert consumer.read_once(block_ms=None) == 0
    assert consumer.lag_s == 0.0
    client.xadd(STREAM, {b"x": b"not ours"})
    client.xadd(STREAM, {b"o": b"api-b", b"r": b"run-b", b"s": b"one"})
    client.xadd(STREAM, {b"o": b"api-b", b"r": b"run-b", b"s": b"1"})  # no payload
    client.xadd(STREAM, {b"o": b"api-b", b"r": b"run-b", b"s": b"2", b"p": b"M1C1garbage"})
    publisher.offer(3, make_batch(2))
    assert publisher.send_pending()
    assert consumer.read_once(block_ms=None) == 5
    assert consumer.skipped_entries == 4
    assert applied.entries == [("api-a", "run-a", 3, 0, 2)]
    assert consumer.caught_up(1)
    assert consumer.read_once(block_ms=None) == 0  # the cursor moved past every entry
