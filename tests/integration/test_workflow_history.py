"""Duplicates stay without effect across continue-as-new."""

from __future__ import annotations

import uuid

from temporalio.client import WorkflowExecutionStatus

from models.api_workflow import ApiEventSignal, ApiWorkflowInput, RetryOptions, api_workflow_id
from tests.integration.conftest import RunningAgent
from tests.integration.helpers import settled_status

ORG = "carbon.super"


async def test_duplicates_are_dropped_after_continue_as_new(agent: RunningAgent) -> None:
    api_uuid = str(uuid.uuid4())  # not deployed in the control plane: each event is a quick no-op
    workflow_id = api_workflow_id(ORG, api_uuid)

    async def send(event_id: str) -> None:
        event = ApiEventSignal(
            event_id=event_id, event_type="API_UPDATE", timestamp_ms=1, organization=ORG, api_uuid=api_uuid
        )
        await agent.client.start_workflow(
            "ApiWorkflow",
            ApiWorkflowInput(organization=ORG, api_uuid=api_uuid, retry=RetryOptions(max_attempts=2), events_per_run=2),
            id=workflow_id,
            task_queue=agent.settings.task_queue,
            start_signal="submit_event",
            start_signal_args=[event],
        )

    await send("e1")
    first_run = (await agent.client.get_workflow_handle(workflow_id).describe()).run_id
    await send("e2")
    await settled_status(agent.client, ORG, api_uuid, processed=2)
    await send("e3")
    await settled_status(agent.client, ORG, api_uuid, processed=3)
    first = await agent.client.get_workflow_handle(workflow_id, run_id=first_run).describe()
    assert first.status == WorkflowExecutionStatus.CONTINUED_AS_NEW

    await send("e1")  # seen in the first run
    await send("e4")
    status = await settled_status(agent.client, ORG, api_uuid, processed=4)
    assert status.events_processed == 4 and status.phase == "idle"
