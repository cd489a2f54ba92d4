"""What the workflows share about running a step: its failure, its reason, two steps at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from temporalio.exceptions import ActivityError, ApplicationError, FailureError, TimeoutError

A = TypeVar("A")
B = TypeVar("B")

# Error types of the fetch step that come from parsing or translating the artifact.
TRANSLATION_ERRORS = frozenset({"BadArtifact", "Untranslatable"})


class StepFailed(Exception):
    def __init__(self, step: str, reason: str, code: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason
        self.code = code


def root_cause(err: FailureError) -> BaseException:
    """What made an activity fail: an ``ActivityError``'s cause (a local activity's failure
    arrives unwrapped)."""
    return (err.cause or err) if isinstance(err, ActivityError) else err


def activity_failure(err: FailureError) -> tuple[str, str]:
    """(message, code) of the root cause of a failed activity, for the status and the report."""
    cause = root_cause(err)
    if isinstance(cause, ApplicationError):
        return cause.message, cause.type or "ApplicationError"
    if isinstance(cause, TimeoutError):
        name = err.activity_type if isinstance(err, ActivityError) else "a step"
        return f"{name} timed out ({cause.type.name if cause.type else 'timeout'})", "Timeout"
    return str(cause), type(cause).__name__


async def together(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Run two steps concurrently; when either fails, raise the first failure in argument order
    once both have finished (nothing is left running behind a compensation)."""
    results = await asyncio.gather(first, second, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results[0], results[1]  # type: ignore[return-value]
