"""Retryable or final, and after how long: decided once for every HTTP answer."""

from datetime import timedelta

import pytest

from activities.errors import MAX_RETRY_AFTER, http_failure, retry_after


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        (None, True),
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (403, False),
        (404, False),
        (422, False),
    ],
)
def test_what_is_retried(status: int | None, retried: bool) -> None:
    error = http_failure("m", status, transient="T", permanent="P")
    assert (error.type, error.non_retryable) == (("T", False) if retried else ("P", True))


def test_retry_after_from_the_header_or_the_status_details_bounded() -> None:
    assert retry_after({"Retry-After": "7"}) == timedelta(seconds=7)
    assert retry_after({"retry-after": "bogus"}, 3) == timedelta(seconds=3)
    assert retry_after(None, None) is None
    assert retry_after({"Retry-After": "100000"}) == MAX_RETRY_AFTER
    error = http_failure("m", 429, transient="T", permanent="P", delay=timedelta(seconds=7))
    assert error.next_retry_delay == timedelta(seconds=7)
