"""Which refusals a request retries, and for how long it waits."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from buildkit_operator.cluster import retries as client
from buildkit_operator.cluster.retries import retry_after, retryable, with_retries


def refusal(status: int, reason: str = "", message: str = "", **headers: str) -> ApiException:
    err = ApiException(status=status, reason=reason)
    err.body = json.dumps({"kind": "Status", "reason": reason, "message": message})
    err.headers = headers
    return err


def test_a_failed_uid_precondition_is_not_retried() -> None:
    """A delete whose uid no longer matches answers 409: retried as a conflict before, it
    failed four times and slept 3 s in the pass."""
    message = "Precondition failed: UID in precondition: a, UID in object meta: b"
    failed = refusal(409, "Conflict", message)
    assert not retryable(failed)
    assert not retryable(refusal(409, "AlreadyExists", 'secrets "x" already exists'))
    assert retryable(refusal(409, "Conflict", "the object has been modified"))
    assert retryable(refusal(429, "TooManyRequests")) and retryable(refusal(503))
    assert not retryable(refusal(422, "Invalid")) and not retryable(refusal(403))


def test_retry_after_is_honoured_up_to_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(client.time, "sleep", slept.append)
    answers = [refusal(429, "TooManyRequests", **{"Retry-After": "3"}),
               refusal(503, **{"Retry-After": "600"}), "ok"]  # fmt: skip

    def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert with_retries(call) == "ok"
    assert slept == [3.0, client.MAX_RETRY_AFTER]
    assert retry_after(refusal(429)) is None


def test_a_precondition_failure_raises_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(client.time, "sleep", slept.append)
    calls = []

    def call() -> None:
        calls.append(1)
        raise refusal(409, "Conflict", "Precondition failed: UID in precondition")

    with pytest.raises(ApiException):
        with_retries(call)
    assert len(calls) == 1 and slept == []
