"""One long-lived workflow per application, subscription or subscription tier.

The API's workflow, for consumers: events are deduplicated by id and run one at a time, in
arrival order, each as its own ``ConsumerDeployment`` child; a failed one waits for an operator's
``retry`` or a newer event. Events are triggers: each child converges the entity to what the
control plane's lists say now.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, CancelledError, ChildWorkflowError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from agent import metrics
    from models.api_workflow import RetryAccepted, RetryRequest
    from models.consumer_workflow import (
        SEEN_EVENTS_KEPT,
        ConsumerDeploymentInput,
        ConsumerDeploymentResult,
        ConsumerEventSignal,
        ConsumerWorkflowInput,
        ConsumerWorkflowState,
        ConsumerWorkflowStatus,
        consumer_deployment_id,
    )
    from models.visibility import DEPLOYMENT_STATE, ORGANIZATION, ApiState, entity_state, iso_utc
    from workflows.consumer_deployment import ConsumerDeployment
    from workflows.markdown import text
    from workflows.visibility import Visibility


@workflow.defn(name="ConsumerWorkflow", sandboxed=False)
class ConsumerWorkflow:
    @workflow.init
    def __init__(self, input: ConsumerWorkflowInput) -> None:
        self._s = input.state or ConsumerWorkflowState(
            ref=input.ref,
            retry=input.retry,
            events_per_run=input.events_per_run,
            search_attributes=input.search_attributes,
        )
        self._processed_this_run = 0
        # Search attributes and memo; None in histories from before they existed.
        self._visibility: Visibility | None = None

    @workflow.signal
    def submit_event(self, event: ConsumerEventSignal) -> None:
        if event.event_id in self._s.seen_event_ids:
            workflow.logger.info("event %s already seen; ignored", event.event_id)
            metrics.workflow_event(self._s.ref.kind, event.event_type, "duplicate")
            return
        metrics.workflow_event(self._s.ref.kind, event.event_type, "queued")
        self._s.seen_event_ids.append(event.event_id)
        del self._s.seen_event_ids[:-SEEN_EVENTS_KEPT]
        self._s.pending.append(event)

    @workflow.update
    def retry(self, request: RetryRequest) -> RetryAccepted:
        s = self._s
        event = s.failed_event or s.current_event or s.last_event
        assert event is not None
        s.retry_requested = True
        workflow.logger.info("retry requested: %s", request.reason)
        return RetryAccepted(event_id=event.event_id, events_processed=s.events_processed)

    @retry.validator
    def _validate_retry(self, request: RetryRequest) -> None:
        s = self._s
        if s.failed_event is None and s.current_event is None:
            raise ValueError(f"{s.ref.label} has nothing to retry (it is {s.phase})")

    @workflow.query
    def status(self) -> ConsumerWorkflowStatus:
        fields = set(ConsumerWorkflowStatus.model_fields) - {"pending_events"}
        return ConsumerWorkflowStatus.model_validate(
            {**self._s.model_dump(include=fields), "pending_events": len(self._s.pending)}
        )

    @workflow.run
    async def run(self, input: ConsumerWorkflowInput) -> None:
        self._visibility = Visibility.for_this_run(self._s.search_attributes)
        self._show()
        while True:
            await workflow.wait_condition(lambda: bool(self._s.pending) or self._s.retry_requested)
            s = self._s
            if s.retry_requested:
                s.retry_requested = False
                event = s.failed_event or s.last_event
                assert event is not None
                attempt = s.last_attempt + 1 if s.last_event and s.last_event.event_id == event.event_id else 1
            else:
                event, attempt = s.pending.pop(0), 1
            await self._deploy(event, attempt)
            self._processed_this_run += 1
            if self._processed_this_run >= s.events_per_run or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    ConsumerWorkflowInput(ref=s.ref, retry=s.retry, events_per_run=s.events_per_run, state=s)
                )

    async def _deploy(self, event: ConsumerEventSignal, attempt: int) -> None:
        s = self._s
        ref = s.ref
        child_id = consumer_deployment_id(ref.organization, ref.kind, ref.key, event.event_id, attempt)
        s.current_event, s.last_event, s.last_attempt = event, event, attempt
        s.phase, s.current_deployment = "converging", child_id
        s.events_processed += 1
        self._show()
        visibility = self._visibility
        # Only in histories recorded since the visibility patch: attributes at start.
        extra = (
            {
                "search_attributes": visibility.start_attributes(
                    {ORGANIZATION: ref.organization, DEPLOYMENT_STATE: "running"}
                ),
                "static_details": f"**{ref.kind}** `{ref.key}` ({text(ref.organization)}) · `{event.event_type}`"
                f" `{event.event_id}` · attempt {attempt}\n\n"
                f"status: `gateway-agent status {ref.key} --kind {ref.kind} -o {ref.organization}`",
            }
            if visibility is not None
            else {}
        )
        try:
            result = await workflow.execute_child_workflow(
                ConsumerDeployment.run,
                ConsumerDeploymentInput(
                    ref=ref,
                    event=event,
                    attempt=attempt,
                    retry=s.retry,
                    search_attributes=visibility.registered if visibility is not None else [],
                ),
                id=child_id,
                **extra,  # type: ignore[arg-type]
                static_summary=f"{ref.kind} {ref.key} · {event.event_type} {event.event_id}"
                + (f" · attempt {attempt}" if attempt > 1 else ""),
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except ChildWorkflowError as err:
            failure = _failure_of(err)
            s.failed_event, s.failed_step, s.last_error = event, failure.failed_step, failure.error
            s.phase, s.current_event = "failed", None
            s.last_result = f"failed at {failure.failed_step}"
            workflow.logger.warning("%s failed: %s", ref.label, failure.error)
        except WorkflowAlreadyStartedError:
            self._finish(f"event {event.event_id} attempt {attempt} already ran as {child_id}; not run again")
        else:
            if result.status != "SKIPPED":
                s.applied = sorted(set(s.applied) - set(result.deleted) | set(result.applied))
                s.converged = True
            self._finish(result.outcome)
        finally:
            s.last_deployment, s.current_deployment = child_id, None
            self._show()

    def _finish(self, outcome: str) -> None:
        s = self._s
        s.phase = "idle"
        s.failed_event, s.failed_step, s.last_error = None, "", None
        s.last_result, s.current_event = outcome, None

    def _show(self) -> None:
        """Current details (Markdown), search attributes and memo."""
        s = self._s
        state = _state_of(s)
        if state != s.deployment_state or not s.state_since:
            s.deployment_state, s.state_since = state, iso_utc(workflow.now())
        lines = [
            f"**{state}** · phase {s.phase} · {text(s.ref.label)} · {len(s.pending)} pending · since {s.state_since}"
        ]
        if s.current_event is not None:
            lines.append(f"working on `{s.current_event.event_type}` `{s.current_event.event_id}`")
        if s.current_deployment:
            lines.append(f"deployment running: `{s.current_deployment}`")
        if s.last_error:
            lines.append(f"**failed at {text(s.failed_step)}:** {text(s.last_error)}")
            if s.last_deployment:
                lines.append(f"failed deployment: `{s.last_deployment}`")
            lines.append(f"retry: `gateway-agent retry {s.ref.key} --kind {s.ref.kind} -o {s.ref.organization}`")
        elif s.last_result:
            lines.append(text(s.last_result))
        if s.applied:
            lines.append("in the cluster: " + ", ".join(f"`{rid}`" for rid in s.applied))
        workflow.set_current_details("\n\n".join(lines))
        if self._visibility is not None:
            event = s.current_event or s.last_event or (s.pending[0] if s.pending else None)
            self._visibility.publish(
                {ORGANIZATION: s.ref.organization, DEPLOYMENT_STATE: state},
                {
                    "last_error": s.last_error or "",
                    "state_since": s.state_since,
                    "event_id": event.event_id if event is not None else "",
                },
            )


def _state_of(s: ConsumerWorkflowState) -> ApiState:
    return entity_state(
        phase=s.phase, busy=bool(s.pending or s.retry_requested), present=bool(s.applied), converged=s.converged
    )


def _failure_of(err: ChildWorkflowError) -> ConsumerDeploymentResult:
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details:
        return ConsumerDeploymentResult.model_validate(cause.details[0])
    if isinstance(cause, CancelledError):
        return ConsumerDeploymentResult(
            status="FAILURE", failed_step="cancelled", error_code="Cancelled", error="the deployment was cancelled"
        )
    return ConsumerDeploymentResult(
        status="FAILURE", failed_step="deployment", error_code=type(cause).__name__, error=str(cause or err)
    )
