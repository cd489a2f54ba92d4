"""One control-plane event (or one retry of it) for one application, subscription or tier.

Fetch (the control plane's lists, translated) alongside a snapshot of what the entity has in the
cluster → apply (read back) → prune what it no longer has. A failure after the first write
restores the snapshot. The workflow ends Completed, or Failed with the reason as its message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, CancelledError, FailureError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.consumers import ConsumerActivities
    from agent import metrics
    from models.consumer_workflow import (
        ConsumerDeploymentInput,
        ConsumerDeploymentResult,
        ConsumerDesired,
        ConsumerFetchRequest,
        ConsumerPrune,
        ConsumerResources,
        ConsumerRestore,
    )
    from models.resources import resource_id
    from models.visibility import DEPLOYMENT_STATE
    from workflows.api_deployment import _to_the_end
    from workflows.markdown import text
    from workflows.steps import TRANSLATION_ERRORS, StepFailed, activity_failure, root_cause, together
    from workflows.visibility import Visibility

STEP_TIMEOUT = timedelta(minutes=5)
HEARTBEAT = timedelta(seconds=30)


@workflow.defn(name="ConsumerDeployment", sandboxed=False)
class ConsumerDeployment:
    def __init__(self) -> None:
        self._input: ConsumerDeploymentInput | None = None
        self._step = ""
        self._done: list[str] = []
        self._visibility: Visibility | None = None

    @workflow.run
    async def run(self, input: ConsumerDeploymentInput) -> ConsumerDeploymentResult:
        self._input = input
        self._visibility = Visibility.of_child(input.search_attributes)
        ref = input.ref
        result = ConsumerDeploymentResult()
        snapshot: ConsumerResources | None = None
        created: list[str] = []
        wrote = False
        try:
            desired, snapshot = await together(
                self._local(
                    "fetch",
                    ConsumerActivities.fetch_consumer_desired,
                    ConsumerFetchRequest(ref=ref, event=input.event),
                ),
                self._local("snapshot", ConsumerActivities.snapshot_consumer_resources, ref),
            )
            assert isinstance(desired, ConsumerDesired)
            if desired.skip_reason:
                result.status, result.outcome = "SKIPPED", f"skipped: {desired.skip_reason}"
                self._show(result.outcome)
                self._publish("succeeded")
                metrics.deployment(ref.kind, "skipped")
                return result
            keep = [resource_id(r) for r in desired.resources]
            created = [rid for rid in keep if rid not in snapshot.uids]
            wrote = True
            if desired.resources:
                applied = await self._local(
                    "apply",
                    ConsumerActivities.apply_consumer_resources,
                    ConsumerResources(ref=ref, resources=desired.resources),
                )
                result.applied = applied.applied
            pruned = await self._local(
                "prune",
                ConsumerActivities.prune_consumer_resources,
                ConsumerPrune(ref=ref, keep=keep, uids=snapshot.uids),
            )
            result.deleted = pruned.applied
            result.outcome = desired.summary or "converged"
            if result.deleted:
                result.outcome += f"; deleted {', '.join(result.deleted)}"
        except StepFailed as failure:
            await _to_the_end(self._compensate(result, failure, snapshot if wrote else None, created))
            self._publish("failed")
            raise ApplicationError(result.error, result, type=failure.code, non_retryable=True) from None
        self._show(result.outcome)
        self._publish("succeeded")
        metrics.deployment(ref.kind, "succeeded")
        return result

    def _publish(self, state: str) -> None:
        if self._visibility is not None:
            self._visibility.publish({DEPLOYMENT_STATE: state})

    async def _compensate(
        self,
        result: ConsumerDeploymentResult,
        failure: StepFailed,
        snapshot: ConsumerResources | None,
        created: list[str],
    ) -> None:
        result.status, result.failed_step, result.error_code = "FAILURE", failure.step, failure.code
        reason = f"{failure.step}: {failure.reason}"
        assert self._input is not None
        kind = self._input.ref.kind
        metrics.deployment(kind, "failed", metrics.failure_reason(failure.step, failure.code))
        if snapshot is None:
            result.error = reason + "; nothing was changed in the cluster"
            self._show(result.error, failed=True)
            return
        assert self._input is not None
        try:
            await workflow.execute_activity_method(
                ConsumerActivities.restore_consumer_snapshot,
                ConsumerRestore(snapshot=snapshot, created=created),
                schedule_to_close_timeout=timedelta(seconds=self._input.retry.rollback_timeout_seconds),
                heartbeat_timeout=HEARTBEAT,
                retry_policy=self._retry_policy(attempts=0),
            )
        except FailureError as err:
            result.error = f"{reason}; ROLLBACK FAILED: {activity_failure(err)[0]}"
            metrics.compensation(kind, "failed")
        else:
            result.error = reason + "; the previous state was restored"
            metrics.compensation(kind, "restored")
        self._show(result.error, failed=True)

    def _show(self, line: str, failed: bool = False) -> None:
        assert self._input is not None
        event = self._input.event
        ref = self._input.ref
        lines = [
            f"**{ref.kind}** `{ref.key}` · step `{self._step or '-'}` · attempt {self._input.attempt}",
            f"event `{event.event_type}` `{event.event_id}`",
            "done: " + (", ".join(f"`{step}`" for step in self._done) or "nothing yet"),
        ]
        if line:
            lines.append(f"**error:** {text(line)}" if failed else text(line))
        if failed:
            lines.append(f"retry: `gateway-agent retry {ref.key} --kind {ref.kind} -o {ref.organization}`")
        workflow.set_current_details("\n\n".join(lines))

    def _retry_policy(self, attempts: int | None = None) -> RetryPolicy:
        assert self._input is not None
        retry = self._input.retry
        return RetryPolicy(
            initial_interval=timedelta(seconds=retry.initial_interval_seconds),
            maximum_interval=timedelta(seconds=retry.maximum_interval_seconds),
            maximum_attempts=retry.max_attempts if attempts is None else attempts,
        )

    async def _local(self, step: str, activity: Callable[..., Any], arg: Any) -> Any:
        self._step = step
        try:
            value = await workflow.execute_local_activity_method(
                activity,
                arg,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=self._retry_policy(),
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except FailureError as err:
            if isinstance(root_cause(err), CancelledError):
                raise asyncio.CancelledError from err
            message, code = activity_failure(err)
            raise StepFailed("translate" if code in TRANSLATION_ERRORS else step, message, code) from err
        self._done.append(step)
        return value
