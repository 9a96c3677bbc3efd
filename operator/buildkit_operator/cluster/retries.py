"""Which refusals of the API server a request retries, and how long it waits: throttling,
server errors and write conflicts, after the server's Retry-After where it sent one. A
failed precondition or an AlreadyExists is final: the request named another object."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError

T = TypeVar("T")
_RETRYABLE = {409, 429, 500, 502, 503, 504}


def _status_of(err: Exception) -> int | None:
    status = getattr(err, "status", None)
    return status if isinstance(status, int) else None


# The longest a Retry-After is waited for inside one request; longer waits are the
# runner's backoff.
MAX_RETRY_AFTER = 10.0


def _body(err: Exception) -> dict[str, Any]:
    body = getattr(err, "body", None)
    try:
        parsed = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def retryable(err: Exception) -> bool:
    """Throttling and server errors, and a write conflict; never a failed precondition (the
    object is not the one the request named: retrying cannot help) or an AlreadyExists."""
    status = _status_of(err)
    if status == 409:
        body = _body(err)
        message = str(body.get("message", "")).lower()
        return body.get("reason") == "Conflict" and "precondition" not in message
    return status in _RETRYABLE


def retry_after(err: Exception) -> float | None:
    """The server's Retry-After, in seconds, where it sent one."""
    headers = getattr(err, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def with_retries(call: Callable[[], T], attempts: int = 4) -> T:
    """Retry conflicts, throttling and server errors with a short backoff, or after what
    the server's Retry-After asks (up to MAX_RETRY_AFTER)."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except (ApiException, DynamicApiError) as err:
            if not retryable(err) or attempt == attempts:
                raise
            asked = retry_after(err)
            time.sleep(min(asked, MAX_RETRY_AFTER) if asked is not None else 0.2 * 2**attempt)
    raise AssertionError("unreachable")
