"""M1's one way to call a Prefect server's API: Prefect's own client, which rides out a busy server.

A local Prefect server answers 503 while its SQLite database is busy. Prefect's client
(``SyncPrefectClient`` over ``PrefectHttpxSyncClient``) retries 502 and 503 (and 408 and 429, the
server's own "come back later"), read timeouts and dropped connections, with exponential backoff
and jitter (2, 4, 8... s, honouring ``Retry-After``) up to ``PREFECT_CLIENT_MAX_RETRIES`` (5: about
a minute); a 4xx that says the request is wrong (400, 404, 409, 422) is answered at once. So M1
writes no retry loop of its own: the runner and the tests call Prefect through ``prefect_client``,
and flows through ``get_client`` and ``run_deployment``, which use the same client.
"""

from __future__ import annotations

from prefect.client.orchestration import SyncPrefectClient, get_client


def prefect_client(api_url: str | None = None) -> SyncPrefectClient:
    """A client of the Prefect API at ``api_url`` (``http://host:port/api``), by default the one
    ``PREFECT_API_URL`` names; enter it with ``with``."""
    if api_url is None:
        return get_client(sync_client=True)
    return SyncPrefectClient(api_url)
