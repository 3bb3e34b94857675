"""When a task retry can help: only for failures of a dependency, never for bad input."""

from __future__ import annotations

from typing import Any

import httpx

from m1lib.errors import UnavailableError


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
