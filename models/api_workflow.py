"""Inputs, outputs and state of the per-API workflow and its activities.

Every message is one model, so fields can be added later without breaking histories.
Resources travel as plain Kubernetes dicts; Secret data inside them is sealed
(see ``activities.sealing``) before it reaches workflow history.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from models.events import REMOVING_STATUSES, ApiChangeEvent, ApiGatewayEvent
from models.visibility import ApiState

Resource = dict[str, Any]

SEEN_EVENTS_KEPT = 5000


def api_workflow_id(organization: str, api_uuid: str) -> str:
    return f"api:{organization}:{api_uuid}"


def deployment_workflow_id(organization: str, api_uuid: str, event_id: str, attempt: int) -> str:
    """One ``ApiDeployment`` per event and attempt: the same event cannot run twice."""
    return f"deploy:{organization}:{api_uuid}:{event_id}:{attempt}"


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
    # How long a rollback may take, its readiness wait included, before it is reported as failed.
    rollback_timeout_seconds: float = 180.0
    # Longest pause between attempts to deliver a report the control plane did not take.
    report_max_interval_seconds: float = 60.0


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
    # The event processed last and its attempt: what a retry runs again, as attempt + 1.
    last_event: ApiEventSignal | None = None
    last_attempt: int = 0
    current_deployment: str | None = None
    last_deployment: str | None = None
    # A report the control plane has not taken yet; re-sent until it does or a newer one replaces it.
    undelivered_report: DeploymentReport | None = None
    # The deployed revision's translation warnings (settings the gateway does not enforce).
    warnings: list[str] = Field(default_factory=list)
    # What visibility shows (models.visibility): the state, since when (ISO-8601 UTC), whether any
    # deployment converged yet, the API's name and the agent's labels the control plane deploys it on.
    deployment_state: ApiState = "idle"
    state_since: str = ""
    converged: bool = False
    api_name: str = ""
    gateway_labels: list[str] = Field(default_factory=list)
    # The search attributes registered in the namespace (the starter's list): only those are set.
    search_attributes: list[str] = Field(default_factory=list)


class ApiWorkflowInput(BaseModel):
    organization: str
    api_uuid: str
    retry: RetryOptions = Field(default_factory=RetryOptions)
    # Events handled before continue-as-new keeps the history short.
    events_per_run: int = 100
    state: ApiWorkflowState | None = None
    # The search attributes registered in the namespace (models.visibility); none: only the memo is set.
    search_attributes: list[str] = Field(default_factory=list)


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
    current_deployment: str | None = None
    last_deployment: str | None = None
    undelivered_report: DeploymentReport | None = None
    warnings: list[str] = Field(default_factory=list)
    deployment_state: ApiState = "idle"
    state_since: str = ""
    api_name: str = ""
    gateway_labels: list[str] = Field(default_factory=list)


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
    # What the gateway will not do of what the project asks (translation.Translation.warnings).
    warnings: list[str] = Field(default_factory=list)
    # The agent's gateway labels the revision is deployed on.
    gateway_labels: list[str] = Field(default_factory=list)

    @property
    def api_resource_name(self) -> str | None:
        return next((r["metadata"]["name"] for r in self.resources if r["kind"] == "API"), None)


class ResourceSet(BaseModel):
    """Resources of one API in apply order (a desired state to apply, or a snapshot).

    A snapshot holds only the fields the agent's field manager owns, and the ``Kind/name`` →
    UID and generation of each live object. A desired state to apply carries the generations
    its snapshot saw, so the apply can tell whether anything the gateway reads moved.
    """

    api: ApiRef
    resources: list[Resource] = Field(default_factory=list)
    uids: dict[str, str] = Field(default_factory=dict)
    generations: dict[str, int] = Field(default_factory=dict)
    # ``generations`` are a whole snapshot's, taken before this apply by the same serialized
    # deployment: an object not in them did not exist, so the apply need not read the API first
    # to learn its status (a first deploy then saves a round trip). False: read it.
    generations_complete: bool = False


class ApplyResult(BaseModel):
    applied: list[str]
    api_name: str | None = None
    api_resource_version: str | None = None
    api_changed: bool = False
    api_status_at_apply: dict[str, Any] | None = None
    # APK redeploys only when the generation of the API or of an object it references moved (or one
    # appeared): only then must a new status come. None in results recorded before this was known.
    gateway_must_answer: bool | None = None
    # The API's deploymentStatus before the first write of this apply.
    api_status_before: dict[str, Any] | None = None


class PruneRequest(BaseModel):
    api: ApiRef
    keep: list[str] = Field(default_factory=list)
    # ``Kind/name`` of what may be stale; None lists the API's resources in the cluster.
    candidates: list[str] | None = None
    # ``Kind/name`` → UID seen in the snapshot: a delete only removes that very object.
    uids: dict[str, str] = Field(default_factory=dict)


class PruneResult(BaseModel):
    deleted: list[str]


class RestoreRequest(BaseModel):
    """Compensation: bring the API's objects back to ``snapshot``; ``created`` may be deleted."""

    snapshot: ResourceSet
    # ``Kind/name`` of what the failed attempt may have created (its desired set minus the snapshot).
    created: list[str] = Field(default_factory=list)


class RestoreResult(BaseModel):
    rewritten: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    # Set when the rollback wrote the API or something it references: the gateway must answer.
    applied: ApplyResult | None = None


class ReadinessRequest(BaseModel):
    api_name: str
    applied: ApplyResult
    # Set: wait at most this long and answer ``pending`` instead of failing (the deployment's
    # local first look; the heartbeating activity waits out the rest).
    within_seconds: float | None = None


class ReadinessResult(BaseModel):
    message: str
    pending: bool = False  # no verdict within ``within_seconds``


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


# The per-event deployment (child workflow)


class ApiDeploymentInput(BaseModel):
    api: ApiRef
    event: ApiEventSignal
    attempt: int = 1
    retry: RetryOptions = Field(default_factory=RetryOptions)
    # The search attributes registered in the namespace, which the deployment may upsert.
    search_attributes: list[str] = Field(default_factory=list)


class ApiDeploymentResult(BaseModel):
    """What one deployment did; also the details of its failure when it fails."""

    action: Literal["DEPLOY", "UNDEPLOY"] = "DEPLOY"
    status: Literal["SUCCESS", "FAILURE", "SKIPPED"] = "SUCCESS"
    revision_id: str = ""
    deployed: bool = False
    outcome: str = ""
    failed_step: str = ""
    error_code: str = ""
    error: str = ""
    # The last report the control plane did not take; the API's workflow keeps re-sending it.
    undelivered_report: DeploymentReport | None = None
    # The translation's warnings: settings of the project the gateway does not enforce.
    warnings: list[str] = Field(default_factory=list)
    # What the control plane said, once it answered: the API's name, the agent's labels it is on.
    api_name: str = ""
    gateway_labels: list[str] = Field(default_factory=list)


class DeploymentOutcome(BaseModel):
    """Signal from a cancelled deployment to its API's workflow: what its compensation did
    (a cancelled workflow has no result to carry it)."""

    deployment_id: str
    result: ApiDeploymentResult


class DeploymentProgress(BaseModel):
    """Answer to a deployment's ``progress`` query."""

    phase: Literal["deploying", "rolling-back", "done", "failed"] = "deploying"
    step: str = ""
    revision_id: str = ""
    steps_done: list[str] = Field(default_factory=list)
    last_error: str = ""
    warnings: list[str] = Field(default_factory=list)


# The state and the status name the report model defined after them.
ApiWorkflowState.model_rebuild()
ApiWorkflowStatus.model_rebuild()
