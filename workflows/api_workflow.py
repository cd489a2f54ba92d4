"""One long-lived workflow per API: order, dedupe, state and retry of its deployments.

Events are triggers, not the truth. Each one, in arrival order and one at a time, runs as its
own ``ApiDeployment`` child workflow (id from the API, the event and the attempt), which asks the
control plane what is deployed for this API on the agent's labels and converges the cluster to
it. This workflow keeps small records only; the resource sets live in the children's histories.
A failed deployment waits here for an operator's ``retry`` (accepted while the failure is being
handled, too) or a newer event. A report the control plane did not take is re-sent from here,
with backoff, until it does or a newer report replaces it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.control_plane import ControlPlaneActivities
    from agent import metrics
    from models.api_workflow import (
        SEEN_EVENTS_KEPT,
        ApiDeploymentInput,
        ApiDeploymentResult,
        ApiEventSignal,
        ApiRef,
        ApiWorkflowInput,
        ApiWorkflowState,
        ApiWorkflowStatus,
        DeploymentOutcome,
        DeploymentReport,
        RetryAccepted,
        RetryRequest,
        deployment_workflow_id,
    )
    from models.visibility import (
        API_ID,
        API_NAME,
        DEPLOYMENT_STATE,
        GATEWAY_LABEL,
        ORGANIZATION,
        ApiState,
        entity_state,
        iso_utc,
    )
    from workflows.api_deployment import ApiDeployment
    from workflows.inline_steps_v1 import InlineStepsV1
    from workflows.markdown import text
    from workflows.steps import activity_failure
    from workflows.visibility import Visibility

# Marks histories whose events run as ApiDeployment children (older ones replay inline).
CHILD_DEPLOYMENTS = "child-deployments"


@workflow.defn(name="ApiWorkflow", sandboxed=False)
class ApiWorkflow(InlineStepsV1):
    @workflow.init
    def __init__(self, input: ApiWorkflowInput) -> None:
        self._s = input.state or ApiWorkflowState(
            organization=input.organization,
            api_uuid=input.api_uuid,
            retry=input.retry,
            events_per_run=input.events_per_run,
            search_attributes=input.search_attributes,
        )
        self._processed_this_run = 0
        self._outbox: asyncio.Task[None] | None = None
        # What cancelled deployments said their compensation did, by deployment id.
        self._cancelled: dict[str, ApiDeploymentResult] = {}
        # Search attributes and memo; None in histories from before they existed.
        self._visibility: Visibility | None = None

    @workflow.signal
    def submit_event(self, event: ApiEventSignal) -> None:
        """Queue an event unless it was seen before (the broker and the control plane repeat)."""
        if event.event_id in self._s.seen_event_ids:
            workflow.logger.info("event %s already seen; ignored", event.event_id)
            metrics.workflow_event("api", event.event_type, "duplicate")
            return
        metrics.workflow_event("api", event.event_type, "queued")
        self._s.seen_event_ids.append(event.event_id)
        del self._s.seen_event_ids[:-SEEN_EVENTS_KEPT]
        self._s.pending.append(event)
        self._s.api_name = self._s.api_name or event.api_name

    @workflow.signal
    def deployment_outcome(self, outcome: DeploymentOutcome) -> None:
        """A cancelled deployment's result, sent just before it ends."""
        self._cancelled[outcome.deployment_id] = outcome.result

    @workflow.update
    def retry(self, request: RetryRequest) -> RetryAccepted:
        """Run the last event again (the control plane's answer is fetched anew), as attempt + 1."""
        s = self._s
        event = s.failed_event or s.current_event or s.last_event
        assert event is not None
        s.retry_requested = True
        workflow.logger.info("retry requested: %s", request.reason)
        return RetryAccepted(event_id=event.event_id, events_processed=s.events_processed)

    @retry.validator
    def _validate_retry(self, request: RetryRequest) -> None:
        s = self._s
        # A failure is known (failed) or may be being handled (a deployment is running): queue it.
        if s.failed_event is None and s.current_event is None:
            raise ValueError(f"API {s.api_uuid} has nothing to retry (it is {s.phase})")

    @workflow.query
    def status(self) -> ApiWorkflowStatus:
        fields = set(ApiWorkflowStatus.model_fields) - {"pending_events"}
        return ApiWorkflowStatus.model_validate(
            {**self._s.model_dump(include=fields), "pending_events": len(self._s.pending)}
        )

    @workflow.run
    async def run(self, input: ApiWorkflowInput) -> None:
        self._send_undelivered()
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
            if workflow.patched(CHILD_DEPLOYMENTS):
                await self._deploy(event, attempt)
            else:
                await self._process_inline(event)
            self._processed_this_run += 1
            if self._processed_this_run >= s.events_per_run or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                await self._stop_sending()
                workflow.continue_as_new(
                    ApiWorkflowInput(
                        organization=s.organization,
                        api_uuid=s.api_uuid,
                        retry=s.retry,
                        events_per_run=s.events_per_run,
                        state=s,
                    )
                )

    async def _deploy(self, event: ApiEventSignal, attempt: int) -> None:
        s = self._s
        child_id = deployment_workflow_id(s.organization, s.api_uuid, event.event_id, attempt)
        s.current_event, s.last_event, s.last_attempt = event, event, attempt
        s.phase, s.step, s.current_deployment = "converging", "deploying", child_id
        s.events_processed += 1
        s.api_name = event.api_name or s.api_name
        self._show()
        summary = f"{event.api_name} {event.api_version} · {event.event_type} {event.event_id}".strip()
        visibility = self._visibility
        # Only in histories recorded since the visibility patch: attributes and details at start.
        extra = (
            {
                "search_attributes": visibility.start_attributes(
                    {
                        API_ID: s.api_uuid,
                        API_NAME: s.api_name,
                        ORGANIZATION: s.organization,
                        GATEWAY_LABEL: s.gateway_labels,
                        DEPLOYMENT_STATE: "running",
                    }
                ),
                "static_details": _deployment_details(s.organization, s.api_uuid, event, attempt),
            }
            if visibility is not None
            else {}
        )
        try:
            result = await workflow.execute_child_workflow(
                ApiDeployment.run,
                ApiDeploymentInput(
                    api=ApiRef(organization=s.organization, api_uuid=s.api_uuid),
                    event=event,
                    attempt=attempt,
                    retry=s.retry,
                    search_attributes=visibility.registered if visibility is not None else [],
                ),
                id=child_id,
                static_summary=summary + (f" · attempt {attempt}" if attempt > 1 else ""),
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                **extra,  # type: ignore[arg-type]
            )
        except ChildWorkflowError as err:
            self._failed(event, self._cancelled.pop(child_id, None) or _failure_of(err))
        except WorkflowAlreadyStartedError:
            s.current_deployment = None
            self._finish(f"event {event.event_id} attempt {attempt} already ran as {child_id}; not run again")
        else:
            self._succeeded(result)
        finally:
            s.last_deployment, s.current_deployment = child_id, None
            self._show()  # details only: no attribute or memo changed since the handler's

    def _succeeded(self, result: ApiDeploymentResult) -> None:
        s = self._s
        self._keep_report(result.undelivered_report)
        if result.status != "SKIPPED":
            s.deployed = result.deployed
            s.deployed_revision = result.revision_id if result.deployed else None
            s.warnings = list(result.warnings) if result.deployed else []
            s.converged = True
            s.gateway_labels = list(result.gateway_labels) if result.deployed else []
        s.api_name = result.api_name or s.api_name
        self._finish(result.outcome)

    def _failed(self, event: ApiEventSignal, result: ApiDeploymentResult) -> None:
        s = self._s
        self._keep_report(result.undelivered_report)
        s.failed_event, s.failed_step = event, result.failed_step
        s.last_error = result.error
        s.phase, s.current_event = "failed", None
        s.last_result = f"failed at {result.failed_step}"
        s.api_name = result.api_name or s.api_name
        s.gateway_labels = list(result.gateway_labels) or s.gateway_labels
        workflow.logger.warning("API %s failed: %s", s.api_uuid, result.error)
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
        """What the Temporal UI shows as this workflow's current details (Markdown), and what the
        visibility store lists (search attributes, memo)."""
        s = self._s
        state = _state_of(s)
        if state != s.deployment_state or not s.state_since:
            s.deployment_state, s.state_since = state, iso_utc(workflow.now())
        lines = [
            f"**{state}** · phase {s.phase} · deployed revision {text(s.deployed_revision or 'none')}"
            f" · {len(s.pending)} pending · since {s.state_since}"
        ]
        if s.current_event is not None:
            lines.append(f"working on `{s.current_event.event_type}` `{s.current_event.event_id}`")
        if s.current_deployment:
            lines.append(f"deployment running: `{s.current_deployment}`")
        if s.last_error:
            lines.append(f"**failed at {text(s.failed_step)}:** {text(s.last_error)}")
            if s.last_deployment:
                lines.append(f"failed deployment: `{s.last_deployment}`")
            lines.append("retry: `gateway-agent retry " + s.api_uuid + " -o " + s.organization + "`")
        elif s.last_result:
            lines.append(text(s.last_result))
        if s.warnings:
            lines.append("deployed with warnings:\n\n" + "\n".join(f"- {text(w)}" for w in s.warnings))
        if s.undelivered_report is not None:
            lines.append(f"report {s.undelivered_report.status} not yet taken by the control plane; re-sending")
        workflow.set_current_details("\n\n".join(lines))
        if self._visibility is not None:
            event = s.current_event or s.last_event or (s.pending[0] if s.pending else None)
            self._visibility.publish(
                {
                    API_ID: s.api_uuid,
                    # A name, once known, stays (an event without one does not unset it).
                    **({API_NAME: s.api_name} if s.api_name else {}),
                    ORGANIZATION: s.organization,
                    GATEWAY_LABEL: s.gateway_labels,
                    DEPLOYMENT_STATE: state,
                },
                {
                    "revision": s.deployed_revision or "",
                    "last_error": s.last_error or "",
                    "state_since": s.state_since,
                    "event_id": event.event_id if event is not None else "",
                },
            )

    # Reports the control plane did not take

    def _keep_report(self, report: DeploymentReport | None) -> None:
        """The deployment's last report is the newest: it replaces any older undelivered one."""
        if self._outbox is not None and not self._outbox.done():
            self._outbox.cancel()
        self._s.undelivered_report = report
        self._send_undelivered()

    def _send_undelivered(self) -> None:
        if self._s.undelivered_report is not None:
            self._outbox = asyncio.create_task(self._deliver(self._s.undelivered_report))

    async def _deliver(self, report: DeploymentReport) -> None:
        retry = self._s.retry
        try:
            await workflow.execute_activity_method(
                ControlPlaneActivities.report_deployment_status,
                report,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=retry.initial_interval_seconds),
                    maximum_interval=timedelta(seconds=retry.report_max_interval_seconds),
                    maximum_attempts=0,
                ),
            )
        except asyncio.CancelledError:
            return  # replaced by a newer report, or carried over continue-as-new
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                return
            # Only a refusal that no attempt can pass (a 4xx) ends here.
            workflow.logger.error("the control plane refused report %s: %s", report, activity_failure(err)[0])
        if self._s.undelivered_report is report:
            self._s.undelivered_report = None
            self._show()

    async def _stop_sending(self) -> None:
        if self._outbox is not None and not self._outbox.done():
            self._outbox.cancel()
            await asyncio.wait([self._outbox])


def _state_of(s: ApiWorkflowState) -> ApiState:
    return entity_state(
        phase=s.phase, busy=bool(s.pending or s.retry_requested), present=s.deployed, converged=s.converged
    )


def _deployment_details(organization: str, api_uuid: str, event: ApiEventSignal, attempt: int) -> str:
    """A deployment's static details (Markdown): what it deploys, and the commands about it."""
    name = " ".join(p for p in (event.api_name, event.api_version) if p) or api_uuid
    return "\n\n".join(
        [
            f"**{text(name)}** (`{api_uuid}`, {text(organization)}) · `{event.event_type}` `{event.event_id}`"
            f" · attempt {attempt}",
            f"status: `gateway-agent status {api_uuid} -o {organization}`",
            f"retry: `gateway-agent retry {api_uuid} -o {organization}`",
        ]
    )


def _failure_of(err: ChildWorkflowError) -> ApiDeploymentResult:
    """What a failed, cancelled or timed-out deployment says about itself."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details:
        return ApiDeploymentResult.model_validate(cause.details[0])
    if isinstance(cause, CancelledError):
        return ApiDeploymentResult(
            status="FAILURE",
            failed_step="cancelled",
            error_code="Cancelled",
            error="the deployment was cancelled",
        )
    message = str(cause or err)
    return ApiDeploymentResult(
        status="FAILURE", failed_step="deployment", error_code=type(cause).__name__, error=message
    )
