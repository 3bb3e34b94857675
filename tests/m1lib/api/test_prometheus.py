"""/metrics: Prometheus text with a replica label, behind viewer auth unless made public."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from m1lib.errors import InputError
from tests.m1lib.api.conftest import Keys, bearer

LINE = re.compile(r"^(m1_[a-z_]+)\{([^}]*)\} (-?[0-9.e+-]+)$")


def _samples(text: str) -> dict[str, list[tuple[str, float]]]:
    found: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = LINE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        found.setdefault(match.group(1), []).append((match.group(2), float(match.group(3))))
    return found


def test_metrics_need_a_viewer_by_default(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    assert client.get("/metrics").status_code == 401
    response = client.get("/metrics", headers=bearer(keys.viewer))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_every_series_carries_the_replica_label(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    replica = client.app.state.runtime.settings.replica_id  # type: ignore[attr-defined]
    samples = _samples(client.get("/metrics", headers=bearer(keys.viewer)).text)
    assert {"m1_events_dropped_total", "m1_revocation_ready", "m1_cache_backend"} <= set(samples)
    for name, values in samples.items():
        for labels, _ in values:
            assert f'replica="{replica}"' in labels, name


def test_dropped_events_are_counted(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    recorder = client.app.state.runtime.metrics.recorder  # type: ignore[attr-defined]
    recorder.queue_size = 2  # the ingest thread is not running in this test: the queue fills
    for n in range(5):
        recorder.record_trusted("policy_decisions", ("t", "read", True, "ok", f"s{n}", 0.1))
    samples = _samples(client.get("/metrics", headers=bearer(keys.viewer)).text)
    assert samples["m1_events_dropped_total"][0][1] == 3


def test_public_metrics_need_no_credential(make_client: Callable[..., TestClient]) -> None:
    client = make_client(metrics={"public": True})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "m1_revocation_ready" in response.text


def test_dropped_events_are_counted_by_reason(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    recorder = client.app.state.runtime.metrics.recorder  # type: ignore[attr-defined]
    recorder.record_trusted("policy_decisions", ("t", "read", True, "ok", "s", float("inf")))
    recorder.queue_size = recorder.queued  # the queue is full: the next one is dropped
    recorder.record_trusted("policy_decisions", ("t", "read", True, "ok", "s", 0.1))
    assert recorder.flush(10)
    samples = _samples(client.get("/metrics", headers=bearer(keys.viewer)).text)
    by_reason = {
        re.search(r'reason="([^"]+)"', labels).group(1): value  # type: ignore[union-attr]
        for labels, value in samples["m1_events_dropped_by_reason_total"]
    }
    assert by_reason == {"invalid:policy_decisions.checkMs": 1, "queue_full": 1}
    assert samples["m1_events_dropped_total"][0][1] == 2


def test_queries_are_counted_by_outcome(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    metrics = client.app.state.runtime.metrics  # type: ignore[attr-defined]
    metrics.run_query({"metric": "policy_decisions"})
    with pytest.raises(InputError):
        metrics.run_query({"metric": "policy_decisions", "groupBy": ["checkMs"]})
    samples = _samples(client.get("/metrics", headers=bearer(keys.viewer)).text)
    outcomes = {
        re.search(r'outcome="([^"]+)"', labels).group(1): value  # type: ignore[union-attr]
        for labels, value in samples["m1_queries_total"]
    }
    assert outcomes == {"completed": 1, "refused_input": 1, "refused_busy": 0, "cancelled": 0}
    assert samples["m1_queries_running"][0][1] == 0
