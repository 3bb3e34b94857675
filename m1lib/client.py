"""The one HTTP client of M1's own API, for processes outside a replica (flow runs, the CLI,
``m1 demo``, the forwarding recorder).

It speaks the API's problem+json back into M1's error tree (a 422 becomes ``InputError`` naming
the member, a 401 ``AuthenticationError``, a 503 ``UnavailableError`` with its ``Retry-After``), so
a caller handles a remote refusal as it would a local one. A 429 or 503 is retried after the
``Retry-After`` the server gave, up to ``max_wait_s`` in all, so polite callers stay under the
rate limits without a loop of their own. The key goes only in the ``Authorization`` header and
never into a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import httpx

from m1lib.errors import (
    AuthenticationError,
    DatabaseRefused,
    InputError,
    M1Error,
    PermissionDeniedError,
    RateLimitedError,
    UnavailableError,
)

if TYPE_CHECKING:
    from m1lib.settings import Settings

__all__ = ["ApiClient", "error_from_response"]

_RETRIED: Final = frozenset({429, 503})
_MAX_RETRY_AFTER_S: Final = 60.0  # a server asking for longer than this is treated as down


def _detail(response: httpx.Response) -> tuple[str, list[dict[str, Any]]]:
    """The problem's detail and errors, or a short description of a body that is not one."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code} {response.reason_phrase}", []
    if not isinstance(body, dict):
        return f"HTTP {response.status_code} {response.reason_phrase}", []
    errors = body.get("errors")
    detail = body.get("detail") or body.get("title") or f"HTTP {response.status_code}"
    return str(detail), errors if isinstance(errors, list) else []


def _retry_after_s(response: httpx.Response, default: float = 1.0) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", default)))
    except ValueError:
        return default


def error_from_response(response: httpx.Response) -> M1Error:
    """The M1 error an error response stands for (the API's ANSWERS table, read backwards)."""
    status = response.status_code
    detail, errors = _detail(response)
    if status in (400, 422) and errors:
        first = errors[0] if isinstance(errors[0], dict) else {}
        allowed = first.get("allowed")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return InputError(
            str(first.get("path", "/")),
            str(first.get("problem", detail)) + more,
            [str(item) for item in allowed] if isinstance(allowed, list) else None,
        )
    if status == 400:
        return DatabaseRefused(detail)
    if status == 401:
        return AuthenticationError(detail)
    if status == 403:
        return PermissionDeniedError(detail)
    if status == 413:
        return InputError("/", detail)
    if status == 429:
        return RateLimitedError(detail, retry_after_s=int(_retry_after_s(response)))
    if status == 503:
        return UnavailableError(detail, retry_after_s=int(_retry_after_s(response)))
    if 400 <= status < 500:
        return InputError("/", detail)
    return M1Error(f"the M1 API failed: {detail}")


class ApiClient:
    """Calls to one M1 API with one credential; safe to share between threads (httpx's pool)."""

    def __init__(
        self,
        base_url: str,
        key: str | None,
        *,
        timeout_s: float = 10.0,
        max_wait_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ApiClient:
        """The API and credential of ``M1_API_URL``/``M1_API_KEY`` (the API's own URL by default)."""
        key = settings.api.key.get_secret_value() if settings.api.key is not None else None
        return cls(settings.client_api_url, key, **kwargs)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> httpx.Response:
        """A successful response, after waiting out 429/503 ``Retry-After`` within
        ``max_wait_s``; any other failure raises the matching M1 error. ``check=False``
        answers any response as it came (a probe of what the API refuses)."""
        waited = 0.0
        while True:
            try:
                response = self._http.request(
                    method, path, json=json, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                raise UnavailableError(
                    f"the M1 API at {self.base_url} did not answer ({type(exc).__name__})"
                ) from None
            if response.is_success or not check:
                return response
            if response.status_code in _RETRIED:
                pause = _retry_after_s(response)
                if pause <= _MAX_RETRY_AFTER_S and waited + pause <= self.max_wait_s:
                    self._sleep(pause)
                    waited += pause
                    continue
            raise error_from_response(response)

    @contextmanager
    def stream(
        self, path: str, *, params: Mapping[str, str] | None = None, read_timeout_s: float = 5.0
    ) -> Iterator[httpx.Response]:
        """``GET path`` held open (Server-Sent Events): the response, its body unread; a
        refusal raises the matching M1 error. A read that waits ``read_timeout_s`` for a byte
        raises ``httpx.ReadTimeout``."""
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout_s)
        headers = {"Accept": "text/event-stream"}
        try:
            with self._http.stream(
                "GET", path, params=params, headers=headers, timeout=timeout
            ) as response:
                if not response.is_success:
                    response.read()
                    raise error_from_response(response)
                yield response
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.ReadTimeout):
                raise
            raise UnavailableError(
                f"the M1 API at {self.base_url} did not answer ({type(exc).__name__})"
            ) from None

    def get_json(self, path: str, *, params: Mapping[str, str] | None = None) -> Any:
        return self.request("GET", path, params=params).json()

    def post_json(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body).json()

    def record_events(self, events: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """``POST /api/m1/events``: all or none; ``{"accepted", "dropped"}``."""
        answer = self.post_json("/api/m1/events", list(events))
        return {"accepted": int(answer["accepted"]), "dropped": int(answer["dropped"])}

    def query(self, query: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /api/m1/dashboard/query``: the DSL's JSON form in, the result's JSON out."""
        answer = self.post_json("/api/m1/dashboard/query", dict(query))
        if not isinstance(answer, dict):
            raise M1Error("the M1 API answered a query with something other than an object")
        return answer

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
