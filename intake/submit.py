"""Hand an event to its API's workflow with signal-with-start.

Signal-with-start is durable as soon as the Temporal server answers, with or without a
worker running, so the listener can acknowledge the broker message right after it.
"""

from __future__ import annotations

from temporalio.client import Client

from agent.settings import Settings
from models.api_workflow import ApiEventSignal, ApiWorkflowInput, RetryOptions, api_workflow_id
from models.consumer_workflow import ConsumerEventSignal, ConsumerWorkflowInput, consumer_workflow_id


def retry_options(settings: Settings) -> RetryOptions:
    return RetryOptions(
        max_attempts=settings.activity_max_attempts,
        initial_interval_seconds=settings.activity_initial_retry_seconds,
        rollback_timeout_seconds=settings.rollback_timeout_seconds,
        report_max_interval_seconds=settings.report_retry_max_seconds,
    )


class TemporalSubmitter:
    def __init__(self, client: Client, settings: Settings) -> None:
        self._client = client
        self._task_queue = settings.task_queue
        self._retry = retry_options(settings)

    async def __call__(self, event: ApiEventSignal | ConsumerEventSignal) -> None:
        if isinstance(event, ConsumerEventSignal):
            await self._submit_consumer(event)
            return
        await self._client.start_workflow(
            "ApiWorkflow",
            ApiWorkflowInput(organization=event.organization, api_uuid=event.api_uuid, retry=self._retry),
            id=api_workflow_id(event.organization, event.api_uuid),
            task_queue=self._task_queue,
            start_signal="submit_event",
            start_signal_args=[event],
            # Shown in the Temporal UI's workflow list; set once, when the workflow starts.
            static_summary=f"{event.api_name} {event.api_version} ({event.organization})".strip(),
        )

    async def _submit_consumer(self, event: ConsumerEventSignal) -> None:
        ref = event.ref
        await self._client.start_workflow(
            "ConsumerWorkflow",
            ConsumerWorkflowInput(ref=ref, retry=self._retry),
            id=consumer_workflow_id(ref.organization, ref.kind, ref.key),
            task_queue=self._task_queue,
            start_signal="submit_event",
            start_signal_args=[event],
            static_summary=_consumer_summary(event),
        )


def _consumer_summary(event: ConsumerEventSignal) -> str:
    f, ref = event.fields, event.ref
    if ref.kind == "application":
        name = f.get("applicationName") or ""
        return f"application {name} ({ref.organization})".replace("  ", " ")
    if ref.kind == "subscription":
        api = " ".join(str(f.get(k) or "") for k in ("apiName", "apiVersion")).strip() or f.get("apiUUID", "")
        return f"subscription to {api} by {f.get('applicationUUID', '?')} ({ref.organization})"
    return f"subscription tier {ref.key} ({ref.organization})"
