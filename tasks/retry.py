"""M1's retry policy for Prefect tasks, in one place: which failures a retry can help, how often.

Only failures of a dependency are retried (an unavailable database or Redis, a dropped connection,
an HTTP 5xx), never bad input: sending the same input again fails again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import httpx
from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from m1lib.errors import UnavailableError

P = ParamSpec("P")
R = TypeVar("R")

RETRIES = 3
RETRY_DELAYS_S: list[float] = [2, 5, 10]


def is_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry on an unavailable database/Redis, a connection error or an HTTP 5xx; not on a 4xx."""
    try:
        state.result()
    except UnavailableError:
        return True
    except httpx.HTTPStatusError as error:
        return error.response.status_code >= 500
    except (httpx.TransportError, ConnectionError, TimeoutError):
        return True
    except Exception:
        return False
    return False


def io_task(name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """``@task`` for work that touches a database, Redis or HTTP: retried per M1's policy, and
    never answered from Prefect's cache (with ``PREFECT_RESULTS_PERSIST_BY_DEFAULT`` on, a second
    call with the same arguments in one flow run would return the first result instead of doing
    the I/O again).

    Pure work takes a plain ``@task``: nothing a retry could change.

    >>> @io_task("read-schema-revision")
    ... def read_schema_revision() -> str | None: ...
    """
    return task(
        name=name,
        retries=RETRIES,
        retry_delay_seconds=list(RETRY_DELAYS_S),
        retry_condition_fn=is_transient,
        cache_policy=NO_CACHE,
    )
