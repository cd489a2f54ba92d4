"""The full sync, as a workflow: at worker start, on a Temporal Schedule, and from the CLI.

One activity reads the control plane and the cluster and converges the consumer resources (it
is level-driven, so a retry after a partial run is safe); then the APIs it found missing,
drifted or orphaned are handed to their own workflows. A sync that could not read everything
fails, with the reason as its message and the (empty) result as its details: nothing was deleted.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.sync import SyncActivities, SyncHandoff
    from models.consumer_workflow import SyncInput, SyncResult
    from workflows.markdown import text
    from workflows.steps import activity_failure

SYNC_TIMEOUT = timedelta(minutes=30)
SYNC_WORKFLOW_ID = "full-sync"
SYNC_SCHEDULE_ID = "gateway-agent-full-sync"


@workflow.defn(name="FullSync", sandboxed=False)
class FullSync:
    def __init__(self) -> None:
        self._result: SyncResult | None = None

    @workflow.query
    def result(self) -> SyncResult | None:
        return self._result

    @workflow.run
    async def run(self, input: SyncInput) -> SyncResult:
        workflow.set_current_details(f"reading the control plane and the cluster ({input.mode}, {input.trigger})")
        retry = input.retry
        try:
            result = await workflow.execute_activity_method(
                SyncActivities.sync_consumers,
                input,
                start_to_close_timeout=SYNC_TIMEOUT,
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=retry.initial_interval_seconds),
                    maximum_interval=timedelta(seconds=retry.maximum_interval_seconds),
                    maximum_attempts=max(1, min(retry.max_attempts, 3)),
                ),
            )
        except ActivityError as err:
            reason = activity_failure(err)[0]
            aborted = SyncResult(mode=input.mode, dry_run=input.dry_run, aborted=True, reason=reason)
            self._result = aborted
            workflow.set_current_details(f"**{text(aborted.headline())}**")
            raise ApplicationError(aborted.headline(), aborted, type="SyncAborted", non_retryable=True) from None
        if result.apis and input.mode == "apply" and not input.dry_run:
            await workflow.execute_activity_method(
                SyncHandoff.converge_apis,
                result,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=RetryPolicy(maximum_attempts=0, maximum_interval=timedelta(seconds=30)),
            )
        self._result = result
        workflow.set_current_details(_details(result))
        return result


def _details(result: SyncResult) -> str:
    lines = [f"**{text(result.headline())}**"]
    for title, changes in (
        ("created", result.created),
        ("updated", result.updated),
        ("deleted", result.deleted),
        ("APIs handed to their workflows", result.apis),
    ):
        if changes:
            shown = ", ".join(f"`{c.resource}`" for c in changes[:20])
            lines.append(f"{title}: {shown}" + (f" and {len(changes) - 20} more" if len(changes) > 20 else ""))
    for held in result.held_back:
        lines.append(f"held back: {text(held)}")
    for problem in result.problems[:20]:
        lines.append(f"problem: {text(problem)}")
    return "\n\n".join(lines)
