"""The end-to-end benchmark's baseline, outside the sandbox: its pydantic models and its no-op activity.

Kept apart from ``noop_workflow.py`` so the workflow sandbox passes them through, as the agent's
workflow passes its models through, instead of rebuilding pydantic models for every workflow.
Nothing here may depend on the agent's code.
"""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity

STEPS = 5


class NoOpInput(BaseModel):
    run: str
    steps: int = STEPS


class NoOpStep(BaseModel):
    run: str
    step: int


class NoOpResult(BaseModel):
    run: str
    steps_done: int


@activity.defn(name="bench_noop")
def noop(step: NoOpStep) -> NoOpStep:
    """Synchronous, like the agent's activities, so it runs on the worker's thread pool."""
    return step
