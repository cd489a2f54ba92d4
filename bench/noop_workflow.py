"""The end-to-end benchmark's baseline: a plain Temporal workflow of five no-op activities in a row.

It is what any workflow costs on this Temporal server and machine, measured in the same run as
the agent (``e2e_bench.py``), so the agent's figures can be read as ratios to it. It shares only
Temporal and pydantic with the agent: nothing here may depend on the agent's code, so the same
baseline runs before and after any redesign of the agent's workflows. Like the agent's workflow
it is sandboxed, passes its pydantic models through, and calls regular (not local) activities.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from noop_activities import NoOpInput, NoOpResult, NoOpStep


@workflow.defn(name="BenchNoOpWorkflow")
class NoOpWorkflow:
    @workflow.run
    async def run(self, input: NoOpInput) -> NoOpResult:
        for step in range(input.steps):
            await workflow.execute_activity(
                "bench_noop",
                NoOpStep(run=input.run, step=step),
                result_type=NoOpStep,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=1)),
            )
        return NoOpResult(run=input.run, steps_done=input.steps)
