"""Frozen: how ``ApiWorkflow`` ran an event before each event became its own ``ApiDeployment``.

Workflows that processed events this way replay their history through this code, so its
sequence of commands must not change. ``ApiWorkflow`` takes this path only where its history
has no ``child-deployments`` patch marker (see ``workflows/api_workflow.py``). Delete the module
once ``deprecate_patch("child-deployments")`` has shipped and no such workflow is running.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.cluster import ClusterActivities
    from activities.control_plane import ControlPlaneActivities
    from models.api_workflow import (
        ApiEventSignal,
        ApiRef,
        ApiWorkflowState,
        DeploymentReport,
        DesiredState,
        PruneRequest,
        ReadinessRequest,
        ResourceSet,
    )
    from models.resources import resource_id
    from workflows.steps import TRANSLATION_ERRORS, StepFailed, activity_failure, together

_LONG = timedelta(hours=1)
_HEARTBEAT = timedelta(seconds=30)
_TIMEOUTS: dict[str, tuple[timedelta, timedelta | None]] = {
    "fetch_desired_state": (timedelta(minutes=5), None),
    "snapshot_api_resources": (timedelta(minutes=2), None),
    "apply_api_resources": (_LONG, _HEARTBEAT),
    "prune_api_resources": (_LONG, _HEARTBEAT),
    "wait_until_accepted": (_LONG, _HEARTBEAT),
    "restore_api_resources": (_LONG, _HEARTBEAT),
    "report_deployment_status": (timedelta(minutes=1), None),
}


class InlineStepsV1:
    """The steps, compensation and report of one event, run inside the API's workflow."""

    _s: ApiWorkflowState
    _finish: Callable[[str], None]
    _show: Callable[[], None]

    async def _process_inline(self, event: ApiEventSignal) -> None:
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
            taking_snapshot = self._v1_step("snapshot", ClusterActivities.snapshot_api_resources, ResourceSet(api=api))
            if event.removes_api:
                desired, snapshot = DesiredState(deployed=False), await taking_snapshot
            else:
                desired, snapshot = await together(
                    self._v1_step("fetch", ControlPlaneActivities.fetch_desired_state, api),
                    taking_snapshot,
                )
                if desired.skip_reason:
                    self._finish(f"skipped: {desired.skip_reason}")
                    return
            revision = desired.revision_id
            action = "DEPLOY" if desired.deployed else "UNDEPLOY"
            if not desired.deployed and not snapshot.resources:
                note = ""
                if event.action == "UNDEPLOY":
                    note = await self._v1_report(
                        DeploymentReport(
                            api_uuid=s.api_uuid, organization=s.organization, action="UNDEPLOY", status="SUCCESS"
                        )
                    )
                s.deployed, s.deployed_revision = False, None
                self._finish("nothing deployed on this gateway" + note)
                return
            wrote = True
            if desired.deployed:
                applied = await self._v1_step(
                    "apply",
                    ClusterActivities.apply_api_resources,
                    ResourceSet(api=api, resources=desired.resources),
                )
                keep = [resource_id(r) for r in desired.resources]
                before = [resource_id(r) for r in snapshot.resources]
                assert applied.api_name is not None
                _, ready = await together(
                    self._v1_step(
                        "prune",
                        ClusterActivities.prune_api_resources,
                        PruneRequest(api=api, keep=keep, candidates=before),
                    ),
                    self._v1_step(
                        "verify",
                        ClusterActivities.wait_until_accepted,
                        ReadinessRequest(api_name=applied.api_name, applied=applied),
                    ),
                )
                outcome = f"revision {revision} accepted: {ready.message}"
            else:
                removed = await self._v1_step("remove", ClusterActivities.prune_api_resources, PruneRequest(api=api))
                outcome = f"removed {len(removed.deleted)} resources"
        except StepFailed as failure:
            await self._v1_compensate(event, failure, snapshot if wrote else None, action, revision)
            return

        note = await self._v1_report(
            DeploymentReport(
                api_uuid=s.api_uuid, organization=s.organization, action=action, status="SUCCESS", revision_id=revision
            )
        )
        s.deployed = action == "DEPLOY"
        s.deployed_revision = revision if s.deployed else None
        self._finish(outcome + note)

    async def _v1_compensate(
        self, event: ApiEventSignal, failure: StepFailed, snapshot: ResourceSet | None, action: Any, revision: str
    ) -> None:
        s = self._s
        reason = f"{failure.step}: {failure.reason}"
        if snapshot is not None:
            s.phase, s.step = "rolling-back", "rollback"
            try:
                await self._v1_activity(
                    ClusterActivities.restore_api_resources, snapshot, attempts=max(10, s.retry.max_attempts)
                )
                reason += "; the previous configuration was restored"
            except ActivityError as err:
                message, _ = activity_failure(err)
                reason += f"; ROLLBACK FAILED: {message}"
        s.failed_event = event
        s.failed_step = failure.step
        s.last_error = reason
        s.phase = "failed"
        workflow.logger.warning("API %s failed: %s", s.api_uuid, reason)
        note = await self._v1_report(
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

    async def _v1_step(self, step: str, activity: Callable[..., Any], arg: Any) -> Any:
        self._s.step = step
        self._show()
        try:
            return await self._v1_activity(activity, arg)
        except ActivityError as err:
            message, code = activity_failure(err)
            if code in TRANSLATION_ERRORS:
                step = "translate"
            raise StepFailed(step, message, code) from err

    async def _v1_activity(self, activity: Callable[..., Any], arg: Any, attempts: int | None = None) -> Any:
        retry = self._s.retry
        start_to_close, heartbeat = _TIMEOUTS[activity.__name__]
        return await workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=start_to_close,
            heartbeat_timeout=heartbeat,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=retry.initial_interval_seconds),
                maximum_interval=timedelta(seconds=retry.maximum_interval_seconds),
                maximum_attempts=attempts or retry.max_attempts,
            ),
        )

    async def _v1_report(self, report: DeploymentReport) -> str:
        self._s.step = "report"
        try:
            await self._v1_activity(ControlPlaneActivities.report_deployment_status, report)
        except ActivityError as err:
            message, _ = activity_failure(err)
            workflow.logger.warning("could not report to the control plane: %s", message)
            return f"; report not delivered: {message}"
        return ""
