"""One place that decides whether a failed call to the world is worth retrying, and when.

Both the Kubernetes API server and the control plane answer over HTTP; an answer is classified
once, here, into an ``ApplicationError`` whose ``type`` names the cause, whose
``non_retryable`` says whether another attempt can pass, and whose ``next_retry_delay`` carries
the pause the server asked for (``Retry-After``), so the activity's retry policy honours it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from temporalio.exceptions import ApplicationError

# Longest pause a server may ask for; a larger Retry-After is read as this.
MAX_RETRY_AFTER = timedelta(minutes=5)


def retryable_status(status: int | None) -> bool:
    """No answer at all, a timeout, a conflict on a stale read, throttling, or a server-side error."""
    return status is None or status in (408, 409, 425, 429) or status >= 500


def retry_after(headers: Mapping[str, str] | None, details_seconds: object = None) -> timedelta | None:
    """The pause a server asked for: ``Retry-After`` in seconds, or the Status' ``retryAfterSeconds``."""
    values: list[object] = [details_seconds]
    if headers:
        values.insert(0, next((v for k, v in headers.items() if k.lower() == "retry-after"), None))
    for value in values:
        try:
            seconds = float(str(value))
        except (TypeError, ValueError):
            continue
        if seconds >= 0:
            return min(timedelta(seconds=seconds), MAX_RETRY_AFTER)
    return None


def http_failure(
    message: str,
    status: int | None,
    *,
    transient: str,
    permanent: str,
    delay: timedelta | None = None,
) -> ApplicationError:
    """An error of type ``transient`` (retried, after ``delay`` when given) or ``permanent`` (final)."""
    if retryable_status(status):
        return ApplicationError(message, type=transient, next_retry_delay=delay)
    return ApplicationError(message, type=permanent, non_retryable=True)
