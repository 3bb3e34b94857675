"""The shared event stream: every replica's batches on one capped Redis stream, read by all.

A replica publishes each batch of its own events (compressed columns, with its id, run id and
batch sequence) and reads everyone's, skipping its own run's entries (already in its store) and
batches that persisted chunks already gave it. Both sides run on their own threads, so a slow or
absent Redis never touches recording or queries: the publisher keeps a bounded outbox (oldest
dropped and counted when Redis is away too long), the reader reconnects with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final

import redis

from m1lib.loops import LoopThreads
from m1lib.metrics.codec import CodecError, DecodedChunk, decode_batch, encode_batch
from m1lib.metrics.columns import RawChunk
from m1lib.metrics.schema import METRICS

__all__ = ["StreamConsumer", "StreamPublisher", "parse_id"]

logger = logging.getLogger("m1.metrics")

_READ_BLOCK_MS: Final = 100  # under the client's socket timeout, so a blocking read never times out
_READ_COUNT: Final = 100
_ENTRY_EVENTS: Final = 20_000  # a batch bigger than this goes out as several entries
_REDIS_ERRORS: Final = (redis.RedisError, OSError)

Batch = Sequence[tuple[str, RawChunk]]


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _pieces(batch: Batch) -> list[list[tuple[str, RawChunk]]]:
    """The batch cut into entries of at most _ENTRY_EVENTS events each."""
    pieces: list[list[tuple[str, RawChunk]]] = [[]]
    size = 0
    for metric, chunk in batch:
        for lo in range(0, chunk.size, _ENTRY_EVENTS):
            part = chunk.slice(lo, min(chunk.size, lo + _ENTRY_EVENTS))
            if size and size + part.size > _ENTRY_EVENTS:
                pieces.append([])
                size = 0
            pieces[-1].append((metric, part))
            size += part.size
    return [piece for piece in pieces if piece]


class StreamPublisher:
    """Puts this replica's batches on the stream from a thread of its own."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        *,
        origin: str,
        run: str,
        maxlen: int,
        outbox_events: int,
    ) -> None:
        self.client = client
        self.stream = stream
        self.origin = origin
        self.run = run
        self.maxlen = maxlen
        self.outbox_events = outbox_events
        self._outbox: deque[tuple[int, Batch, int]] = deque()
        self._outbox_size = 0
        self._lock = threading.Lock()
        self._loops = LoopThreads("m1-metrics", logger=logger)
        self._sending = False
        self.published_events = 0  # put on the stream (GET /metrics: m1_events_published_total)
        self.unpublished_events = 0  # dropped from a full outbox while Redis was unreachable

    def offer(self, seq: int, batch: Batch) -> None:
        size = sum(chunk.size for _, chunk in batch)
        with self._lock:
            self._outbox.append((seq, batch, size))
            self._outbox_size += size
            while self._outbox_size > self.outbox_events and len(self._outbox) > 1:
                _, _, dropped = self._outbox.popleft()
                self._outbox_size -= dropped
                self.unpublished_events += dropped
        self._loops.wake()

    @property
    def pending(self) -> int:
        with self._lock:
            return self._outbox_size + (1 if self._sending else 0)

    def start(self) -> None:
        self._loops.start([("publish", self._loop)])

    def close(self) -> None:
        self._loops.stop()
        self.send_pending()  # what is left, once, best effort

    def wait_sent(self, timeout: float) -> bool:
        """Wait until the outbox is empty; False on timeout."""
        return self._loops.wait_drained(lambda: self.pending, timeout)

    def send_pending(self) -> bool:
        """Send the outbox in order; False when Redis failed (what is unsent stays queued)."""
        while True:
            with self._lock:
                if not self._outbox:
                    return True
                seq, batch, size = self._outbox[0]
                self._sending = True
            try:
                pipe = self.client.pipeline(transaction=True)  # a batch's entries: all or none
                for index, piece in enumerate(_pieces(batch)):
                    payload = encode_batch(
                        [(METRICS[m], c) for m, c in piece],
                        {"origin": self.origin, "run": self.run, "seq": seq},
                    )
                    fields: dict[Any, Any] = {
                        b"o": self.origin,
                        b"r": self.run,
                        b"s": str(seq),
                        b"i": str(index),
                        b"p": payload,
                    }
                    pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
                pipe.execute()
            except _REDIS_ERRORS as error:
                logger.warning(
                    "publishing events to %s failed (will retry): %s", self.stream, error
                )
                with self._lock:
                    self._sending = False
                return False
            with self._lock:
                self._sending = False
                self.published_events += size
                if self._outbox and self._outbox[0][0] == seq:
                    self._outbox.popleft()
                    self._outbox_size -= size

    def _loop(self) -> None:
        backoff = self._loops.backoff()
        while self._loops.pause(1.0):
            if self.send_pending():
                backoff.reset()
            else:
                backoff.wait()


Apply = Callable[[str, str, int, int, list[DecodedChunk]], None]
Skip = Callable[[str, str, int, int], bool]  # (origin, run, batch seq, piece) -> already have it


class StreamConsumer:
    """Reads every replica's entries from the stream and applies the ones this store lacks."""

    def __init__(
        self, client: redis.Redis, stream: str, *, apply: Apply, skip: Skip, start_id: str = "0-0"
    ) -> None:
        self.client = client
        self.stream = stream
        self.apply = apply
        self.skip = skip
        self.last_id = start_id
        self.lag_s = 0.0
        self.skipped_entries = 0
        self._loops = LoopThreads("m1-metrics", logger=logger)

    def start(self) -> None:
        self._loops.start([("consume", self._loop)])

    def close(self) -> None:
        self._loops.stop()

    @property
    def running(self) -> bool:
        return self._loops.running

    def read_once(self, block_ms: int | None = _READ_BLOCK_MS) -> int:
        """Read and apply the next entries; returns how many were read."""
        answer: Any = self.client.xread(
            {self.stream: self.last_id}, count=_READ_COUNT, block=block_ms
        )
        if not answer:
            self.lag_s = 0.0
            return 0
        entries = answer[0][1]
        for entry_id, fields in entries:
            self._handle(entry_id, fields)
            self.last_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        return len(entries)

    def _handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            origin = fields[b"o"].decode()
            run = fields[b"r"].decode()
            seq = int(fields[b"s"])
            piece = int(fields.get(b"i", b"0"))
        except (KeyError, ValueError, UnicodeDecodeError):
            logger.warning("stream entry %r is not an M1 event batch; skipped", entry_id)
            self.skipped_entries += 1
            return
        if self.skip(origin, run, seq, piece):
            self.skipped_entries += 1
            return
        try:
            chunks = decode_batch(fields[b"p"])
        except (KeyError, CodecError) as error:
            logger.warning(
                "stream entry %r from %s is damaged; skipped: %s", entry_id, origin, error
            )
            self.skipped_entries += 1
            return
        self.apply(origin, run, seq, piece, chunks)
        self.lag_s = max(0.0, time.time() - parse_id(entry_id)[0] / 1000.0)

    def caught_up(self, timeout: float) -> bool:
        """Wait until everything on the stream when called has been read; False on timeout."""
        deadline = time.monotonic() + timeout
        try:
            newest: Any = self.client.xrevrange(self.stream, count=1)
        except _REDIS_ERRORS:
            return False
        if not newest:
            return True
        target = parse_id(newest[0][0])
        while parse_id(self.last_id) < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _loop(self) -> None:
        backoff = self._loops.backoff()
        while not self._loops.stopping:
            try:
                self.read_once()
                backoff.reset()
            except _REDIS_ERRORS as error:
                logger.warning(
                    "reading the event stream %s failed, retrying in %.1f s: %s",
                    self.stream,
                    backoff.delay_s,
                    error,
                )
                backoff.wait()
