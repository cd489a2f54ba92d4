"""One long-lived workflow per API: it converges the cluster to the control plane's truth.

Events are triggers, not the truth. Each one, in arrival order and one at a time, makes
the workflow ask the control plane what is deployed for this API on the agent's labels
and converge the cluster to that answer. A step that fails after the first write restores
the snapshot taken before it, reports FAILURE, and the workflow waits for an operator's
``retry`` or a newer event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from models.api_workflow import (
        SEEN_EVENTS_KEPT,
        ApiEventSignal,
        ApiRef,
        ApiWorkflowInput,
        ApiWorkflowState,
        ApiWorkflowStatus,
        ApplyResult,
        DeploymentReport,
        DesiredState,
        PruneRequest,
        PruneResult,
        ReadinessRequest,
        ReadinessResult,
        ReportResult,
        ResourceSet,
        RetryAccepted,
        RetryRequest,
    )
    from models.resources import resource_id

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")

TRANSLATION_ERRORS = frozenset({"BadArtifact", "Untranslatable"})
LONG_STEP = timedelta(hours=1)
HEARTBEAT = timedelta(seconds=30)
# (start-to-close, heartbeat) per activity. Steps that can take long heartbeat, so a lost worker
# is noticed within HEARTBEAT; the others are bounded by a short start-to-close timeout.
ACTIVITY_TIMEOUTS: dict[str, tuple[timedelta, timedelta | None]] = {
    "fetch_desired_state": (timedelta(minutes=5), None),
    "snapshot_api_resources": (timedelta(minutes=2), None),
    "apply_api_resources": (LONG_STEP, HEARTBEAT),
    "prune_api_resources": (LONG_STEP, HEARTBEAT),
    "wait_until_accepted": (LONG_STEP, HEARTBEAT),
    "restore_api_resources": (LONG_STEP, HEARTBEAT),
    "report_deployment_status": (timedelta(minutes=1), None),
}


class StepFailed(Exception):
    def __init__(self, step: str, reason: str, code: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason
        self.code = code


def _reason(err: ActivityError) -> tuple[str, str]:
    """(message, code) of the root cause of a failed activity, for the status and the report."""
    cause: BaseException | None = err.cause
    if isinstance(cause, ApplicationError):
        return cause.message, cause.type or "ApplicationError"
    if isinstance(cause, TimeoutError):
        return f"{err.activity_type} timed out ({cause.type.name if cause.type else 'timeout'})", "Timeout"
    return str(cause or err), type(cause or err).__name__


async def _together(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Run two steps concurrently; when either fails, raise the first failure in argument order
    once both have finished (nothing is left running behind a compensation)."""
    results = await asyncio.gather(first, second, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results[0], results[1]  # type: ignore[return-value]


@workflow.defn(name="ApiWorkflow")
class ApiWorkflow:
    @workflow.init
    def __init__(self, input: ApiWorkflowInput) -> None:
        self._s = input.state or ApiWorkflowState(
            organization=input.organization,
            api_uuid=input.api_uuid,
            retry=input.retry,
            events_per_run=input.events_per_run,
        )
        self._processed_this_run = 0

    @workflow.signal
    def submit_event(self, event: ApiEventSignal) -> None:
        """Queue an event unless it was seen before (the broker and the control plane repeat)."""
        if event.event_id in self._s.seen_event_ids:
            workflow.logger.info("event %s already seen; ignored", event.event_id)
            return
        self._s.seen_event_ids.append(event.event_id)
        del self._s.seen_event_ids[:-SEEN_EVENTS_KEPT]
        self._s.pending.append(event)

    @workflow.update
    def retry(self, request: RetryRequest) -> RetryAccepted:
        """Run the failed convergence again (the control plane's answer is fetched anew)."""
        assert self._s.failed_event is not None
        self._s.retry_requested = True
        workflow.logger.info("retry requested: %s", request.reason)
        return RetryAccepted(event_id=self._s.failed_event.event_id, events_processed=self._s.events_processed)

    @retry.validator
    def _validate_retry(self, request: RetryRequest) -> None:
        if self._s.phase != "failed" or self._s.failed_event is None:
            raise ValueError(f"API {self._s.api_uuid} has nothing to retry (it is {self._s.phase})")
        if self._s.retry_requested:
            raise ValueError(f"a retry of API {self._s.api_uuid} is already queued")

    @workflow.query
    def status(self) -> ApiWorkflowStatus:
        fields = set(ApiWorkflowStatus.model_fields) - {"pending_events"}
        return ApiWorkflowStatus.model_validate(
            {**self._s.model_dump(include=fields), "pending_events": len(self._s.pending)}
        )

    @workflow.run
    async def run(self, input: ApiWorkflowInput) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self._s.pending) or self._s.retry_requested)
            if self._s.retry_requested:
                self._s.retry_requested = False
                assert self._s.failed_event is not None
                event = self._s.failed_event
            else:
                event = self._s.pending.pop(0)
            await self._process(event)
            self._processed_this_run += 1
            if self._processed_this_run >= self._s.events_per_run or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    ApiWorkflowInput(
                        organization=self._s.organization,
                        api_uuid=self._s.api_uuid,
                        retry=self._s.retry,
                        events_per_run=self._s.events_per_run,
                        state=self._s,
                    )
                )

    async def _process(self, event: ApiEventSignal) -> None:
        s = self._s
        s.current_event = event
        s.phase = "converging"
        s.events_processed += 1
        api = ApiRef(organization=s.organization, api_uuid=s.api_uuid)
        revision = ""
        action = event.action
        snapshot: ResourceSet | None = None
        wrote = False
        try:
            taking_snapshot = self._step("snapshot", "snapshot_api_resources", ResourceSet(api=api), ResourceSet)
            if event.removes_api:
                desired, snapshot = DesiredState(deployed=False), await taking_snapshot
            else:
                # Independent reads: the control plane's answer and the cluster as it is now.
                desired, snapshot = await _together(
                    self._step("fetch", "fetch_desired_state", api, DesiredState), taking_snapshot
                )
                if desired.skip_reason:
                    self._finish(f"skipped: {desired.skip_reason}")
                    return
            revision = desired.revision_id
            action = "DEPLOY" if desired.deployed else "UNDEPLOY"
            if not desired.deployed and not snapshot.resources:
                note = ""
                if event.action == "UNDEPLOY":
                    note = await self._report(
                        DeploymentReport(
                            api_uuid=s.api_uuid, organization=s.organization, action="UNDEPLOY", status="SUCCESS"
                        )
                    )
                s.deployed, s.deployed_revision = False, None
                self._finish("nothing deployed on this gateway" + note)
                return
            wrote = True
            if desired.deployed:
                applied = await self._step(
                    "apply", "apply_api_resources", ResourceSet(api=api, resources=desired.resources), ApplyResult
                )
                keep = [resource_id(r) for r in desired.resources]
                before = [resource_id(r) for r in snapshot.resources]
                assert applied.api_name is not None
                # What the new revision dropped is no part of what the gateway is asked to accept.
                _, ready = await _together(
                    self._step(
                        "prune",
                        "prune_api_resources",
                        PruneRequest(api=api, keep=keep, candidates=before),
                        PruneResult,
                    ),
                    self._step(
                        "verify",
                        "wait_until_accepted",
                        ReadinessRequest(api_name=applied.api_name, applied=applied),
                        ReadinessResult,
                    ),
                )
                outcome = f"revision {revision} accepted: {ready.message}"
            else:
                removed = await self._step("remove", "prune_api_resources", PruneRequest(api=api), PruneResult)
                outcome = f"removed {len(removed.deleted)} resources"
        except StepFailed as failure:
            await self._compensate(event, failure, snapshot if wrote else None, action, revision)
            return

        note = await self._report(
            DeploymentReport(
                api_uuid=s.api_uuid, organization=s.organization, action=action, status="SUCCESS", revision_id=revision
            )
        )
        s.deployed = action == "DEPLOY"
        s.deployed_revision = revision if s.deployed else None
        self._finish(outcome + note)

    async def _compensate(
        self, event: ApiEventSignal, failure: StepFailed, snapshot: ResourceSet | None, action: Any, revision: str
    ) -> None:
        s = self._s
        reason = f"{failure.step}: {failure.reason}"
        if snapshot is not None:
            s.phase, s.step = "rolling-back", "rollback"
            try:
                await self._activity(
                    "restore_api_resources", snapshot, PruneResult, attempts=max(10, s.retry.max_attempts)
                )
                reason += "; the previous configuration was restored"
            except ActivityError as err:
                message, _ = _reason(err)
                reason += f"; ROLLBACK FAILED: {message}"
        s.failed_event = event
        s.failed_step = failure.step
        s.last_error = reason
        s.phase = "failed"
        workflow.logger.warning("API %s failed: %s", s.api_uuid, reason)
        note = await self._report(
            DeploymentReport(
                api_uuid=s.api_uuid,
                organization=s.organization,
                action=action,
                status="FAILURE",
                revision_id=revision,
                error_code=failure.code,
                error_message=reason,
            )
        )
        s.last_result = f"failed at {failure.step}{note}"
        s.current_event = None
        self._show()

    def _finish(self, outcome: str) -> None:
        """The event converged: any earlier failure is superseded."""
        s = self._s
        s.phase, s.step = "idle", "done"
        s.failed_event, s.failed_step, s.last_error = None, "", None
        s.last_result = outcome
        s.current_event = None
        self._show()

    def _show(self) -> None:
        """What the Temporal UI shows as this workflow's current details."""
        s = self._s
        lines = [f"**{s.phase}** · step {s.step or '-'} · deployed revision {s.deployed_revision or 'none'}"]
        if s.current_event is not None:
            lines.append(f"working on {s.current_event.event_type} ({s.current_event.event_id})")
        if s.last_error:
            lines.append(f"failed at {s.failed_step}: {s.last_error}")
            lines.append("retry: `gateway-agent retry " + s.api_uuid + " -o " + s.organization + "`")
        elif s.last_result:
            lines.append(s.last_result)
        workflow.set_current_details("\n\n".join(lines))

    async def _step(self, step: str, activity: str, arg: Any, result_type: type[T]) -> T:
        self._s.step = step
        self._show()
        try:
            return await self._activity(activity, arg, result_type)
        except ActivityError as err:
            message, code = _reason(err)
            # The fetch step also parses and translates; say which part refused.
            if code in TRANSLATION_ERRORS:
                step = "translate"
            raise StepFailed(step, message, code) from err

    async def _activity(self, name: str, arg: Any, result_type: type[T], attempts: int | None = None) -> T:
        retry = self._s.retry
        start_to_close, heartbeat = ACTIVITY_TIMEOUTS[name]
        return await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=start_to_close,
            heartbeat_timeout=heartbeat,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=retry.initial_interval_seconds),
                maximum_interval=timedelta(seconds=retry.maximum_interval_seconds),
                maximum_attempts=attempts or retry.max_attempts,
            ),
        )

    async def _report(self, report: DeploymentReport) -> str:
        """Tell the control plane; a report that cannot be delivered does not undo the deployment.

        Returns a note for the status ("" when delivered).
        """
        self._s.step = "report"
        try:
            await self._activity("report_deployment_status", report, ReportResult)
        except ActivityError as err:
            message, _ = _reason(err)
            workflow.logger.warning("could not report to the control plane: %s", message)
            return f"; report not delivered: {message}"
        return ""
