"""Hand an event to its API's workflow with signal-with-start.

Signal-with-start is durable as soon as the Temporal server answers, with or without a
worker running, so the listener can acknowledge the broker message right after it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from agent.search_attributes import RegisteredAttributes
from agent.settings import Settings
from models.api_workflow import ApiEventSignal, ApiWorkflowInput, RetryOptions, api_workflow_id
from models.consumer_workflow import ConsumerEventSignal, ConsumerWorkflowInput, consumer_workflow_id
from models.visibility import API_ID, API_NAME, DEPLOYMENT_STATE, ORGANIZATION

log = logging.getLogger(__name__)


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
        self._registered = RegisteredAttributes(client, client.namespace)

    async def __call__(self, event: ApiEventSignal | ConsumerEventSignal) -> None:
        if isinstance(event, ConsumerEventSignal):
            await self._submit_consumer(event)
            return
        await self._start(
            lambda attributes, registered: self._client.start_workflow(
                "ApiWorkflow",
                ApiWorkflowInput(
                    organization=event.organization,
                    api_uuid=event.api_uuid,
                    retry=self._retry,
                    search_attributes=registered,
                ),
                id=api_workflow_id(event.organization, event.api_uuid),
                task_queue=self._task_queue,
                start_signal="submit_event",
                start_signal_args=[event],
                # Shown in the Temporal UI's workflow list; set once, when the workflow starts.
                static_summary=f"{event.api_name} {event.api_version} ({event.organization})".strip(),
                static_details=(
                    f"API `{event.api_uuid}` of {event.organization}\n\n"
                    f"status: `gateway-agent status {event.api_uuid} -o {event.organization}`\n\n"
                    f"its deployments: `ApiId = '{event.api_uuid}'`"
                ),
                search_attributes=attributes,
            ),
            {
                API_ID: event.api_uuid,
                API_NAME: event.api_name,
                ORGANIZATION: event.organization,
                DEPLOYMENT_STATE: "deploying",
            },
        )

    async def _submit_consumer(self, event: ConsumerEventSignal) -> None:
        ref = event.ref
        await self._start(
            lambda attributes, registered: self._client.start_workflow(
                "ConsumerWorkflow",
                ConsumerWorkflowInput(ref=ref, retry=self._retry, search_attributes=registered),
                id=consumer_workflow_id(ref.organization, ref.kind, ref.key),
                task_queue=self._task_queue,
                start_signal="submit_event",
                start_signal_args=[event],
                static_summary=_consumer_summary(event),
                search_attributes=attributes,
            ),
            {ORGANIZATION: ref.organization, DEPLOYMENT_STATE: "deploying"},
        )

    async def _start(
        self,
        start: Callable[[TypedSearchAttributes, list[str]], Awaitable[Any]],
        values: Mapping[SearchAttributeKey[Any], str],
    ) -> None:
        """Signal-with-start, with the search attributes the namespace has, and the list of them in
        the input (a new workflow is searchable before its first task runs, and sets only those;
        a running one keeps its own)."""
        registered = await self._registered.names()
        attributes = TypedSearchAttributes(
            [SearchAttributePair(k, v) for k, v in values.items() if v and k.name in registered]
        )
        try:
            await start(attributes, sorted(registered))
        except RPCError as exc:
            if not attributes.search_attributes or exc.status != RPCStatusCode.INVALID_ARGUMENT:
                raise
            # An attribute was removed from the namespace since it was listed: start without.
            log.warning("the workflow's search attributes were refused (%s); starting it without", exc.message)
            self._registered.forget()
            await start(TypedSearchAttributes.empty, [])


def _consumer_summary(event: ConsumerEventSignal) -> str:
    f, ref = event.fields, event.ref
    if ref.kind == "application":
        name = f.get("applicationName") or ""
        return f"application {name} ({ref.organization})".replace("  ", " ")
    if ref.kind == "subscription":
        api = " ".join(str(f.get(k) or "") for k in ("apiName", "apiVersion")).strip() or f.get("apiUUID", "")
        return f"subscription to {api} by {f.get('applicationUUID', '?')} ({ref.organization})"
    return f"subscription tier {ref.key} ({ref.organization})"
