"""What Temporal's visibility says about the APIs and their deployments, as the CLI shows it.

Each ``ApiWorkflow`` carries the search attributes of ``models.visibility`` (``ApiId``, ``ApiName``,
``Organization``, ``GatewayLabel``, ``DeploymentState``) and a memo (``revision``, ``last_error``, ``state_since``,
``event_id``). Workflows started before they existed carry neither: their rows hold what visibility
always has (the workflow id, hence the organization and UUID, its status and start time). A
namespace where the attributes are not registered refuses any query that names them; the listing
then asks by workflow type only and filters here.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError, FailureError
from temporalio.service import RPCError, RPCStatusCode

from models.api_workflow import ApiDeploymentInput, ApiDeploymentResult, api_workflow_id
from models.visibility import API_ID, API_NAME, DEPLOYMENT_STATE, GATEWAY_LABEL, ORGANIZATION

API_WORKFLOW_TYPE = "ApiWorkflow"
DEPLOYMENT_WORKFLOW_TYPE = "ApiDeployment"
DEFAULT_ORGANIZATION = "carbon.super"
# How many deployment histories are read at once.
HISTORY_READS = 10

UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

NO_DETAILS = "(no visibility details; run `gateway-agent status {uuid}`)"

OUTCOMES = {
    WorkflowExecutionStatus.RUNNING: "Running",
    WorkflowExecutionStatus.COMPLETED: "Completed",
    WorkflowExecutionStatus.FAILED: "Failed",
    WorkflowExecutionStatus.CANCELED: "Canceled",
    WorkflowExecutionStatus.TERMINATED: "Terminated",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "ContinuedAsNew",
    WorkflowExecutionStatus.TIMED_OUT: "TimedOut",
}


class ApiRow(BaseModel):
    """One API as its workflow's listing shows it (``status`` without an argument)."""

    api_id: str
    organization: str
    name: str | None = None
    revision: str | None = None
    # DeploymentState; None for a workflow that predates the search attributes.
    state: str | None = None
    since: datetime | None = None
    last_error: str | None = None
    event_id: str | None = None
    gateway_labels: list[str] = Field(default_factory=list)
    workflow_id: str
    workflow_status: str
    started: datetime
    # False: the workflow carries no search attributes (it predates them).
    details: bool = False

    def shown_state(self) -> str:
        return self.state or self.workflow_status

    def matches(self, *, state: str | None, label: str | None, name: str | None, api_id: str | None) -> bool:
        """The filters the server applies, for a namespace that cannot."""
        return (
            (state is None or self.state == state)
            and (label is None or label in self.gateway_labels)
            and (name is None or self.name == name)
            and (api_id is None or self.api_id == api_id)
        )


class ApiListing(BaseModel):
    apis: list[ApiRow]
    # True: the namespace does not know the search attributes, so the CLI applied the filters.
    filtered_here: bool = False


class DeploymentRun(BaseModel):
    """One ``ApiDeployment`` run: an event, or a retry of one, and how it ended."""

    workflow_id: str
    run_id: str
    event_type: str | None = None
    event_id: str
    attempt: int
    action: str | None = None
    revision: str | None = None
    started: datetime
    closed: datetime | None = None
    duration_seconds: float | None = None
    # Completed, Failed, Running, Canceled, Terminated, TimedOut.
    outcome: str
    # What the deployment says it did ("revision 2 accepted: ...", "skipped: ...").
    result: str | None = None
    failed_step: str | None = None
    # The run's failure message, whole.
    failure: str | None = None


def quoted(value: str) -> str:
    """A string literal of Temporal's list filter."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def api_workflow_prefix(organization: str) -> str:
    return f"api:{organization}:"


def deployment_prefix(organization: str, api_uuid: str) -> str:
    return f"deploy:{organization}:{api_uuid}:"


def is_uuid(value: str) -> bool:
    return bool(UUID.match(value))


def split_api_workflow_id(workflow_id: str) -> tuple[str, str]:
    """``api:<organization>:<uuid>`` → (organization, uuid)."""
    rest = workflow_id.removeprefix("api:")
    organization, _, api_uuid = rest.rpartition(":")
    return organization, api_uuid


def _attributes(execution: WorkflowExecution) -> dict[str, Any]:
    return {pair.key.name: pair.value for pair in execution.typed_search_attributes.search_attributes}


def _labels(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part) for part in value]


def parse_moment(value: Any) -> datetime | None:
    """A memo's timestamp: ISO 8601, or epoch seconds or milliseconds."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, int | float):
            seconds = value / 1000 if value > 1e11 else value
            return datetime.fromtimestamp(seconds, UTC)
        moment = datetime.fromisoformat(str(value))
    except (ValueError, OverflowError, OSError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


async def api_row(execution: WorkflowExecution) -> ApiRow:
    organization, api_uuid = split_api_workflow_id(execution.id)
    attributes = _attributes(execution)
    try:
        memo = dict(await execution.memo())
    except Exception:  # noqa: BLE001 - a memo this CLI cannot decode is no memo
        memo = {}
    details = any(key.name in attributes for key in (API_ID, API_NAME, DEPLOYMENT_STATE))
    return ApiRow(
        api_id=_text(attributes.get(API_ID.name)) or api_uuid,
        organization=_text(attributes.get(ORGANIZATION.name)) or organization,
        name=_text(attributes.get(API_NAME.name)),
        revision=_text(memo.get("revision")),
        state=_text(attributes.get(DEPLOYMENT_STATE.name)),
        since=parse_moment(memo.get("state_since")) or (None if details else execution.start_time),
        last_error=_text(memo.get("last_error")),
        event_id=_text(memo.get("event_id")),
        gateway_labels=_labels(attributes.get(GATEWAY_LABEL.name)),
        workflow_id=execution.id,
        workflow_status=OUTCOMES.get(execution.status, "Unknown") if execution.status else "Unknown",
        started=execution.start_time,
        details=details,
    )


def _newest_runs(executions: list[WorkflowExecution]) -> list[WorkflowExecution]:
    """The newest run of each workflow id (an API's workflow continues as new now and then)."""
    newest: dict[str, WorkflowExecution] = {}
    for execution in executions:
        seen = newest.get(execution.id)
        if seen is None or execution.start_time > seen.start_time:
            newest[execution.id] = execution
    return list(newest.values())


async def list_apis(
    client: Client,
    *,
    organization: str | None = None,
    state: str | None = None,
    label: str | None = None,
    name: str | None = None,
    api_id: str | None = None,
    workflow_id: str | None = None,
) -> ApiListing:
    """Every API workflow matching the filters, one row per API, by organization and name."""
    base = [f"WorkflowType = {quoted(API_WORKFLOW_TYPE)}"]
    if workflow_id:
        base.append(f"WorkflowId = {quoted(workflow_id)}")
    if organization:
        # The workflow id holds the organization: this works for workflows of every age.
        base.append(f"WorkflowId STARTS_WITH {quoted(api_workflow_prefix(organization))}")
    filters = {DEPLOYMENT_STATE.name: state, GATEWAY_LABEL.name: label, API_NAME.name: name, API_ID.name: api_id}
    searched = [f"{attribute} = {quoted(value)}" for attribute, value in filters.items() if value is not None]
    filtered_here = False
    try:
        executions = [e async for e in client.list_workflows(" AND ".join(base + searched))]
    except RPCError as exc:
        if exc.status != RPCStatusCode.INVALID_ARGUMENT or not searched:
            raise
        filtered_here = True
        executions = [e async for e in client.list_workflows(" AND ".join(base))]
    rows = [await api_row(e) for e in _newest_runs(executions)]
    if filtered_here:
        rows = [r for r in rows if r.matches(state=state, label=label, name=name, api_id=api_id)]
    rows.sort(key=lambda r: (r.organization, (r.name or "~").lower(), r.api_id))
    return ApiListing(apis=rows, filtered_here=filtered_here)


class Ambiguous(Exception):
    def __init__(self, key: str, candidates: list[ApiRow]) -> None:
        super().__init__(f"{len(candidates)} APIs match {key!r}")
        self.key, self.candidates = key, candidates


async def resolve_api(client: Client, key: str, organization: str | None) -> tuple[str, str, ApiRow | None]:
    """(organization, uuid, its listing row if visibility has one) of an API named by UUID or name.

    A name (or a UUID without an organization) is looked up in visibility; several matches raise
    ``Ambiguous``. What visibility does not know is taken as a UUID in the organization given, or
    carbon.super: the caller's query then says whether that workflow exists.
    """
    if is_uuid(key) and organization:
        found = await list_apis(client, workflow_id=api_workflow_id(organization, key))
        return organization, key, found.apis[0] if found.apis else None
    lookup = {"api_id": key} if is_uuid(key) else {"name": key}
    rows = (await list_apis(client, organization=organization, **lookup)).apis
    if len(rows) > 1:
        raise Ambiguous(key, rows)
    if rows:
        return rows[0].organization, rows[0].api_id, rows[0]
    return organization or DEFAULT_ORGANIZATION, key, None


# Deployments


async def list_deployment_runs(client: Client, organization: str, api_uuid: str) -> list[WorkflowExecution]:
    """Every ``ApiDeployment`` run of the API, newest first."""
    query = (
        f"WorkflowType = {quoted(DEPLOYMENT_WORKFLOW_TYPE)} AND "
        f"WorkflowId STARTS_WITH {quoted(deployment_prefix(organization, api_uuid))}"
    )
    runs = [e async for e in client.list_workflows(query)]
    runs.sort(key=lambda e: e.start_time, reverse=True)
    return runs


def _event_and_attempt(workflow_id: str, prefix: str) -> tuple[str, int]:
    """``deploy:<org>:<uuid>:<event id>:<attempt>`` → (event id, attempt)."""
    event_id, _, attempt = workflow_id.removeprefix(prefix).rpartition(":")
    try:
        return event_id, int(attempt)
    except ValueError:
        return workflow_id.removeprefix(prefix), 1


async def deployment_run(client: Client, execution: WorkflowExecution, prefix: str) -> DeploymentRun:
    """The run as visibility lists it, with its event (from its input) and its ending (from its last event)."""
    event_id, attempt = _event_and_attempt(execution.id, prefix)
    closed = execution.close_time
    run = DeploymentRun(
        workflow_id=execution.id,
        run_id=execution.run_id,
        event_id=event_id,
        attempt=attempt,
        started=execution.start_time,
        closed=closed,
        duration_seconds=(closed - execution.start_time).total_seconds() if closed else None,
        outcome=OUTCOMES.get(execution.status, "Unknown") if execution.status else "Unknown",
    )
    history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
    if not history.events:
        return run
    converter = client.data_converter
    first, last = history.events[0], history.events[-1]
    if first.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
        payloads = first.workflow_execution_started_event_attributes.input.payloads
        try:
            [deployment] = await converter.decode(payloads, [ApiDeploymentInput])
            run.event_type, run.event_id = deployment.event.event_type, deployment.event.event_id
            run.attempt, run.action = deployment.attempt, deployment.event.action
        except Exception:  # noqa: BLE001 - an input this CLI cannot read: the id still names the event
            pass
    result: ApiDeploymentResult | None = None
    if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
        payloads = last.workflow_execution_completed_event_attributes.result.payloads
        try:
            [result] = await converter.decode(payloads, [ApiDeploymentResult])
        except Exception:  # noqa: BLE001
            result = None
    elif last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        failure = await converter.decode_failure(last.workflow_execution_failed_event_attributes.failure)
        run.failure = failure.message if isinstance(failure, FailureError) else str(failure)
        if isinstance(failure, ApplicationError) and failure.details:
            try:
                result = ApiDeploymentResult.model_validate(failure.details[0])
            except ValueError:
                result = None
    elif last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        run.failure = "terminated: " + (last.workflow_execution_terminated_event_attributes.reason or "no reason given")
    elif last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
        run.failure = "the deployment timed out"
    elif last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
        run.failure = "the deployment was cancelled"
    if result is not None:
        run.revision = result.revision_id or None
        run.action = result.action
        run.result = result.outcome or None
        run.failed_step = result.failed_step or None
        if result.error and run.failure is None and result.status == "FAILURE":
            run.failure = result.error
    return run


async def deployment_runs(
    client: Client, executions: list[WorkflowExecution], prefix: str, on_read: Any = None
) -> list[DeploymentRun]:
    """Each run read in full, a few at a time, in the order given."""
    gate = asyncio.Semaphore(HISTORY_READS)

    async def read(execution: WorkflowExecution) -> DeploymentRun:
        async with gate:
            run = await deployment_run(client, execution, prefix)
        if on_read is not None:
            on_read()
        return run

    return list(await asyncio.gather(*(read(e) for e in executions)))
