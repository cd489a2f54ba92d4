"""Inputs, outputs and state of the per-API workflow and its activities.

Every message is one model, so fields can be added later without breaking histories.
Resources travel as plain Kubernetes dicts; Secret data inside them is sealed
(see ``activities.sealing``) before it reaches workflow history.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from models.events import REMOVING_STATUSES, ApiChangeEvent, ApiGatewayEvent

Resource = dict[str, Any]

SEEN_EVENTS_KEPT = 5000


def api_workflow_id(organization: str, api_uuid: str) -> str:
    return f"api:{organization}:{api_uuid}"


class ApiEventSignal(BaseModel):
    """What the listener hands the API's workflow: one control-plane event, no secrets."""

    event_id: str
    event_type: str
    timestamp_ms: int
    organization: str
    api_uuid: str
    api_name: str = ""
    api_version: str = ""
    api_type: str = ""
    api_status: str = ""
    gateway_labels: list[str] = Field(default_factory=list)

    @classmethod
    def from_event(cls, event: ApiGatewayEvent | ApiChangeEvent) -> ApiEventSignal:
        common = {
            "event_id": event.event_id,
            "event_type": event.type,
            "timestamp_ms": event.time_stamp,
            "organization": event.organization,
            "api_uuid": event.uuid,
            "api_type": event.api_type,
        }
        if isinstance(event, ApiGatewayEvent):
            return cls(
                **common, api_name=event.name, api_version=event.version, gateway_labels=list(event.gateway_labels)
            )
        return cls(**common, api_name=event.api_name, api_version=event.api_version, api_status=event.api_status)

    @property
    def removes_api(self) -> bool:
        """Events after which nothing of the API may stay, whatever the artifacts say."""
        if self.event_type == "API_DELETE":
            return True
        return self.event_type == "API_LIFECYCLE_CHANGE" and self.api_status.upper() in REMOVING_STATUSES

    @property
    def action(self) -> Literal["DEPLOY", "UNDEPLOY"]:
        if self.removes_api or self.event_type == "REMOVE_API_FROM_GATEWAY":
            return "UNDEPLOY"
        return "DEPLOY"


class RetryOptions(BaseModel):
    """How a failing step is retried before the workflow compensates."""

    max_attempts: int = 5
    initial_interval_seconds: float = 1.0
    maximum_interval_seconds: float = 30.0


Phase = Literal["idle", "converging", "rolling-back", "failed"]


class ApiWorkflowState(BaseModel):
    """Everything the API's workflow carries across continue-as-new."""

    organization: str
    api_uuid: str
    retry: RetryOptions = Field(default_factory=RetryOptions)
    events_per_run: int = 100
    pending: list[ApiEventSignal] = Field(default_factory=list)
    seen_event_ids: list[str] = Field(default_factory=list)
    phase: Phase = "idle"
    step: str = ""
    current_event: ApiEventSignal | None = None
    failed_event: ApiEventSignal | None = None
    # Kept in the state so a retry accepted just before continue-as-new is not lost.
    retry_requested: bool = False
    failed_step: str = ""
    last_error: str | None = None
    deployed_revision: str | None = None
    deployed: bool = False
    events_processed: int = 0
    last_result: str = ""


class ApiWorkflowInput(BaseModel):
    organization: str
    api_uuid: str
    retry: RetryOptions = Field(default_factory=RetryOptions)
    # Events handled before continue-as-new keeps the history short.
    events_per_run: int = 100
    state: ApiWorkflowState | None = None


class ApiWorkflowStatus(BaseModel):
    """Answer to the ``status`` query: what an operator sees in the UI or the CLI."""

    organization: str
    api_uuid: str
    phase: Phase
    step: str
    current_event: ApiEventSignal | None
    failed_event: ApiEventSignal | None
    failed_step: str
    last_error: str | None
    deployed: bool
    deployed_revision: str | None
    pending_events: int
    events_processed: int
    last_result: str


class RetryRequest(BaseModel):
    reason: str = "operator retry"


class RetryAccepted(BaseModel):
    event_id: str
    # The workflow's count of processed events when the retry was queued; the retry's
    # outcome is settled once the status shows a larger count and no current event.
    events_processed: int = 0


# Activities


class ApiRef(BaseModel):
    organization: str
    api_uuid: str


class DesiredState(BaseModel):
    """The control plane's answer for one API on the agent's gateway labels, translated."""

    deployed: bool
    revision_id: str = ""
    api_name: str = ""
    api_version: str = ""
    resources: list[Resource] = Field(default_factory=list)
    skip_reason: str = ""

    @property
    def api_resource_name(self) -> str | None:
        return next((r["metadata"]["name"] for r in self.resources if r["kind"] == "API"), None)


class ResourceSet(BaseModel):
    """Resources of one API in apply order (a desired state to apply, or a snapshot)."""

    api: ApiRef
    resources: list[Resource] = Field(default_factory=list)


class ApplyResult(BaseModel):
    applied: list[str]
    api_name: str | None = None
    api_resource_version: str | None = None
    api_changed: bool = False
    api_status_at_apply: dict[str, Any] | None = None


class PruneRequest(BaseModel):
    api: ApiRef
    keep: list[str] = Field(default_factory=list)
    # ``Kind/name`` of what may be stale; None lists the API's resources in the cluster.
    candidates: list[str] | None = None


class PruneResult(BaseModel):
    deleted: list[str]


class ReadinessRequest(BaseModel):
    api_name: str
    applied: ApplyResult


class ReadinessResult(BaseModel):
    message: str


class DeploymentReport(BaseModel):
    api_uuid: str
    organization: str
    action: Literal["DEPLOY", "UNDEPLOY"]
    status: Literal["SUCCESS", "FAILURE"]
    revision_id: str = ""
    error_code: str = ""
    error_message: str = ""


class ReportResult(BaseModel):
    http_status: int
