"""One control-plane event (or one retry of it) for one API, as its own workflow.

Fetch and translate alongside a snapshot → apply → prune alongside the readiness wait → report.
The workflow ends Completed, or Failed with the reason as its failure message, so the Temporal
UI lists what failed (ExecutionStatus = 'Failed'). A failure after the first write reports FAILURE at once,
then restores what changed (bounded in time; reported again if the rollback fails). A cancelled
deployment compensates the same way, shielded from the cancellation.

Short steps run as local activities (no extra workflow task each), the first look for the
gateway's verdict too; the steps that wait for the cluster (a prune of what a revision dropped, a
readiness wait that outlasts the first look, restore) run as activities that heartbeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, CancelledError, FailureError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.cluster import ClusterActivities
    from activities.control_plane import ControlPlaneActivities
    from agent import metrics
    from models.api_workflow import (
        ApiDeploymentInput,
        ApiDeploymentResult,
        DeploymentOutcome,
        DeploymentProgress,
        DeploymentReport,
        DesiredState,
        PruneRequest,
        ReadinessRequest,
        ReadinessResult,
        ResourceSet,
        RestoreRequest,
    )
    from models.resources import resource_id
    from models.visibility import API_NAME, DEPLOYMENT_STATE, GATEWAY_LABEL, DeploymentState
    from workflows.markdown import text
    from workflows.steps import TRANSLATION_ERRORS, StepFailed, activity_failure, root_cause, together
    from workflows.visibility import Visibility

HEARTBEAT = timedelta(seconds=30)
LONG_STEP = timedelta(hours=1)
# Local steps: short, each bounded. Reports get a few quick attempts; the API's workflow keeps
# re-sending a report the control plane did not take.
LOCAL_TIMEOUTS = {
    "fetch_desired_state": timedelta(minutes=5),
    "snapshot_api_resources": timedelta(minutes=2),
    "apply_api_resources": timedelta(minutes=5),
    "report_deployment_status": timedelta(minutes=1),
    "wait_until_accepted": timedelta(minutes=1),
}
# How long the readiness wait looks for the gateway's verdict as a local activity before it
# leaves the rest of the wait to an activity that heartbeats (histories since LOCAL_READINESS).
QUICK_READINESS = timedelta(seconds=2)
# Marks histories where a deployment prunes only when something was dropped and looks for the
# gateway's verdict in a local activity first (issue 11: fewer tasks and round trips per event).
LOCAL_READINESS = "local-readiness"
REPORT_ATTEMPTS = 3


async def _to_the_end(compensation: Coroutine[Any, Any, None]) -> None:
    """Run a compensation to its end even when the deployment is cancelled meanwhile (shielded);
    a cancellation that arrived while it ran is raised afterwards."""
    task = asyncio.ensure_future(compensation)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


@workflow.defn(name="ApiDeployment", sandboxed=False)
class ApiDeployment:
    def __init__(self) -> None:
        self._p = DeploymentProgress()
        self._input: ApiDeploymentInput | None = None
        self._undelivered: DeploymentReport | None = None
        self._visibility: Visibility | None = None

    @workflow.query
    def progress(self) -> DeploymentProgress:
        return self._p

    @workflow.run
    async def run(self, input: ApiDeploymentInput) -> ApiDeploymentResult:
        self._input = input
        self._visibility = Visibility.of_child(input.search_attributes)
        api, event = input.api, input.event
        result = ApiDeploymentResult(action=event.action)
        snapshot: ResourceSet | None = None
        created: list[str] = []
        wrote = False
        try:
            taking_snapshot = self._local("snapshot", ClusterActivities.snapshot_api_resources, ResourceSet(api=api))
            if event.removes_api:
                desired, snapshot = DesiredState(deployed=False), await taking_snapshot
            else:
                # Independent reads: the control plane's answer and the cluster as it is now.
                desired, snapshot = await together(
                    self._local("fetch", ControlPlaneActivities.fetch_desired_state, api), taking_snapshot
                )
            result.api_name, result.gateway_labels = desired.api_name, list(desired.gateway_labels)
            if desired.skip_reason:
                result.status, result.outcome = "SKIPPED", f"skipped: {desired.skip_reason}"
                return self._done(result)
            result.revision_id = self._p.revision_id = desired.revision_id
            self._publish("running", result)
            result.warnings = self._p.warnings = list(desired.warnings)
            for warning in desired.warnings:
                workflow.logger.warning("API %s: %s", api.api_uuid, warning)
            result.action = "DEPLOY" if desired.deployed else "UNDEPLOY"
            if not desired.deployed and not snapshot.resources:
                result.outcome = "nothing deployed on this gateway"
                if event.action == "UNDEPLOY":
                    await self._report(self._report_of(result))
                return self._done(result)
            wrote = True
            if desired.deployed:
                before = [resource_id(r) for r in snapshot.resources]
                keep = [resource_id(r) for r in desired.resources]
                created = [rid for rid in keep if rid not in snapshot.uids]
                applied = await self._local(
                    "apply",
                    ClusterActivities.apply_api_resources,
                    ResourceSet(
                        api=api,
                        resources=desired.resources,
                        generations=snapshot.generations,
                        generations_complete=True,
                    ),
                )
                assert applied.api_name is not None
                # What the new revision dropped is no part of what the gateway is asked to accept.
                prune = PruneRequest(api=api, keep=keep, candidates=before, uids=snapshot.uids)
                readiness = ReadinessRequest(api_name=applied.api_name, applied=applied)
                if workflow.patched(LOCAL_READINESS):
                    ready = await self._prune_and_verify(prune, readiness)
                else:
                    _, ready = await together(
                        self._remote("prune", ClusterActivities.prune_api_resources, prune),
                        self._remote("verify", ClusterActivities.wait_until_accepted, readiness),
                    )
                result.deployed = True
                if input.attempt == 1:
                    metrics.event_to_accepted(event.event_type, event.timestamp_ms)
                result.outcome = f"revision {desired.revision_id} accepted: {ready.message}"
                if result.warnings:
                    result.outcome += f"; {len(result.warnings)} warning(s), see the deployment's details"
            else:
                removed = await self._remote("remove", ClusterActivities.prune_api_resources, PruneRequest(api=api))
                result.outcome = f"removed {len(removed.deleted)} resources"
        except StepFailed as failure:
            await _to_the_end(self._compensate(result, failure, snapshot if wrote else None, created))
            self._publish("failed", result)
            # A FAILURE the control plane did not take goes to the API's workflow, which re-sends it.
            result.undelivered_report = self._undelivered
            raise ApplicationError(result.error, result, type=failure.code, non_retryable=True) from None
        except asyncio.CancelledError:
            cancelled = StepFailed(self._p.step or "start", "the deployment was cancelled", "Cancelled")
            await _to_the_end(self._compensate(result, cancelled, snapshot if wrote else None, created))
            self._publish("failed", result)
            await self._tell_parent(result)
            raise
        await self._report(self._report_of(result))
        return self._done(result)

    async def _prune_and_verify(self, prune: PruneRequest, readiness: ReadinessRequest) -> ReadinessResult:
        """A prune only when the new revision dropped something (an activity that heartbeats while
        deletions finish), alongside the readiness wait: first a local activity that looks for the
        gateway's verdict for up to ``QUICK_READINESS`` (no workflow task and no activity task of
        their own), then, only if the gateway takes longer, the heartbeating activity for the rest."""

        async def verify() -> ReadinessResult:
            first = await self._local(
                "verify",
                ClusterActivities.wait_until_accepted,
                readiness.model_copy(update={"within_seconds": QUICK_READINESS.total_seconds()}),
            )
            if not first.pending:
                return first
            return await self._remote("verify", ClusterActivities.wait_until_accepted, readiness)

        assert prune.candidates is not None
        if not [rid for rid in prune.candidates if rid not in set(prune.keep)]:
            return await verify()
        _, ready = await together(self._remote("prune", ClusterActivities.prune_api_resources, prune), verify())
        return ready

    async def _compensate(
        self, result: ApiDeploymentResult, failure: StepFailed, snapshot: ResourceSet | None, created: list[str]
    ) -> None:
        """Report FAILURE at once, then undo what changed, then say how the rollback went."""
        assert self._input is not None
        result.status, result.failed_step, result.error_code = "FAILURE", failure.step, failure.code
        reason = f"{failure.step}: {failure.reason}"
        self._p.last_error = reason
        metrics.deployment("api", "failed", metrics.failure_reason(failure.step, failure.code))
        if snapshot is None:
            result.error = reason + "; nothing was changed in the cluster"
            await self._report(self._report_of(result))
            self._show("failed")
            return
        first = not snapshot.resources
        result.error = reason + (
            "; removing what it created" if first else "; rolling back to the previous configuration"
        )
        await self._report(self._report_of(result))
        self._p.phase = "rolling-back"
        self._publish("rolling-back", result)
        try:
            await self._rollback(snapshot, created)
        except FailureError as err:
            message = activity_failure(err)[0]
            result.error = f"{reason}; ROLLBACK FAILED: {message}"
            workflow.logger.error("API %s: rollback failed: %s", self._input.api.api_uuid, message)
            metrics.compensation("api", "failed")
            await self._report(self._report_of(result))
        else:
            metrics.compensation("api", "restored")
            result.error = reason + (
                "; what it created was removed" if first else "; the previous configuration was restored"
            )
        self._p.last_error = result.error
        self._show("failed")

    async def _rollback(self, snapshot: ResourceSet, created: list[str]) -> None:
        """Restore the snapshot and, where that changed what the gateway serves, wait until it
        accepts it again; all within the rollback's time bound."""
        assert self._input is not None
        bound = timedelta(seconds=self._input.retry.rollback_timeout_seconds)
        deadline = workflow.now() + bound
        self._p.step = "rollback"
        self._show("rolling-back")
        restored = await workflow.execute_activity_method(
            ClusterActivities.restore_snapshot,
            RestoreRequest(snapshot=snapshot, created=created),
            schedule_to_close_timeout=bound,
            heartbeat_timeout=HEARTBEAT,
            retry_policy=self._retry_policy(attempts=0),
        )
        if restored.applied is not None and restored.applied.api_name:
            self._p.step = "rollback-verify"
            self._show("rolling-back")
            remaining = max(deadline - workflow.now(), timedelta(seconds=1))
            await workflow.execute_activity_method(
                ClusterActivities.wait_until_accepted,
                ReadinessRequest(api_name=restored.applied.api_name, applied=restored.applied),
                schedule_to_close_timeout=remaining,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=self._retry_policy(attempts=0),
            )

    async def _tell_parent(self, result: ApiDeploymentResult) -> None:
        parent = workflow.info().parent
        if parent is None:
            return
        result.undelivered_report = self._undelivered
        outcome = DeploymentOutcome(deployment_id=workflow.info().workflow_id, result=result)
        await workflow.get_external_workflow_handle(parent.workflow_id).signal("deployment_outcome", outcome)

    def _report_of(self, result: ApiDeploymentResult) -> DeploymentReport:
        assert self._input is not None
        api = self._input.api
        failed = result.status == "FAILURE"
        return DeploymentReport(
            api_uuid=api.api_uuid,
            organization=api.organization,
            action=result.action,
            status="FAILURE" if failed else "SUCCESS",
            revision_id=result.revision_id,
            error_code=result.error_code if failed else "",
            error_message=result.error if failed else "",
        )

    async def _report(self, report: DeploymentReport) -> None:
        """A few quick attempts; what the control plane does not take goes back to the API's
        workflow, which re-sends it. A newer report replaces an older undelivered one."""
        self._p.step = "report"
        try:
            await workflow.execute_local_activity_method(
                ControlPlaneActivities.report_deployment_status,
                report,
                start_to_close_timeout=LOCAL_TIMEOUTS["report_deployment_status"],
                retry_policy=self._retry_policy(attempts=REPORT_ATTEMPTS),
            )
            self._undelivered = None
        except FailureError as err:
            workflow.logger.warning(
                "report not delivered yet, handed to the API's workflow: %s", activity_failure(err)[0]
            )
            self._undelivered = report

    def _done(self, result: ApiDeploymentResult) -> ApiDeploymentResult:
        result.undelivered_report = self._undelivered
        metrics.deployment("api", "skipped" if result.status == "SKIPPED" else "succeeded")
        self._show("done")
        self._publish("succeeded", result)
        return result

    def _publish(self, state: DeploymentState, result: ApiDeploymentResult) -> None:
        """The deployment's state, and what the control plane said of the API's name and labels."""
        if self._visibility is None:
            return
        values: dict = {DEPLOYMENT_STATE: state}
        if result.api_name:
            values[API_NAME] = result.api_name
        if result.api_name or result.gateway_labels:  # the control plane answered
            values[GATEWAY_LABEL] = result.gateway_labels
        self._visibility.publish(values)

    def _show(self, phase: Any = None) -> None:
        """What the Temporal UI shows as this deployment's current details (Markdown)."""
        assert self._input is not None
        p, event = self._p, self._input.event
        if phase is not None:
            p.phase = phase
        running = p.step if p.phase in ("deploying", "rolling-back") and p.step else None
        lines = [
            f"**{p.phase}** · revision {text(p.revision_id or '?')} · attempt {self._input.attempt}",
            f"event `{event.event_type}` `{event.event_id}`",
            "done: " + (", ".join(f"`{step}`" for step in p.steps_done) or "nothing yet")
            + (f" · running: `{running}`" if running else ""),
        ]
        if p.warnings:
            lines.append("warnings:\n\n" + "\n".join(f"- {text(w)}" for w in p.warnings))
        if p.last_error:
            lines.append(f"**error:** {text(p.last_error)}")
            api = self._input.api
            lines.append(f"retry: `gateway-agent retry {api.api_uuid} -o {api.organization}`")
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
        return await self._step(
            step,
            workflow.execute_local_activity_method(
                activity,
                arg,
                start_to_close_timeout=LOCAL_TIMEOUTS[activity.__name__],
                retry_policy=self._retry_policy(),
                # A write that is under way finishes before any compensation starts.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            ),
        )

    async def _remote(self, step: str, activity: Callable[..., Any], arg: Any) -> Any:
        return await self._step(
            step,
            workflow.execute_activity_method(
                activity,
                arg,
                start_to_close_timeout=LONG_STEP,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=self._retry_policy(),
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            ),
        )

    async def _step(self, step: str, running: Any) -> Any:
        self._p.step = step
        self._show()
        try:
            value = await running
        except FailureError as err:
            if isinstance(root_cause(err), CancelledError):
                raise asyncio.CancelledError from err  # the deployment itself is being cancelled
            message, code = activity_failure(err)
            # The fetch step also parses and translates; say which part refused.
            raise StepFailed("translate" if code in TRANSLATION_ERRORS else step, message, code) from err
        self._p.steps_done.append(step)
        return value
