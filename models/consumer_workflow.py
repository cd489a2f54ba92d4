"""Inputs, outputs and state of the consumer workflows (applications, subscriptions, tiers)
and of the full sync.

One long-lived ``ConsumerWorkflow`` per consumer entity orders and dedupes its events, as the
API's workflow does; each event runs as its own ``ConsumerDeployment`` child. Every message is
one model, so fields can be added later without breaking histories.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from models.api_workflow import SEEN_EVENTS_KEPT, Resource, RetryOptions
from models.visibility import ApiState

ConsumerKind = Literal["application", "subscription", "tier"]

__all__ = ["SEEN_EVENTS_KEPT"]

# Event types whose entity is gone afterwards, whatever the control plane's lists say.
REMOVING_EVENTS = frozenset({"APPLICATION_DELETE", "SUBSCRIPTIONS_DELETE", "POLICY_DELETE"})


def consumer_workflow_id(organization: str, kind: ConsumerKind, key: str) -> str:
    return f"{kind}:{organization}:{key}"


def consumer_deployment_id(organization: str, kind: ConsumerKind, key: str, event_id: str, attempt: int) -> str:
    return f"{kind}-deploy:{organization}:{key}:{event_id}:{attempt}"


class ConsumerRef(BaseModel):
    organization: str
    kind: ConsumerKind
    # The application or subscription UUID, or the tier's name.
    key: str

    @property
    def label(self) -> str:
        return f"{self.kind} {self.key} ({self.organization})"


class ConsumerEventSignal(BaseModel):
    """One control-plane event for one consumer entity: its type and the fields it carried."""

    event_id: str
    event_type: str
    timestamp_ms: int
    ref: ConsumerRef
    # The decoded event's own fields (no credentials: a consumer key is a client id).
    fields: dict[str, Any] = Field(default_factory=dict)

    @property
    def removes(self) -> bool:
        return self.event_type in REMOVING_EVENTS


ConsumerPhase = Literal["idle", "converging", "failed"]


class ConsumerWorkflowState(BaseModel):
    ref: ConsumerRef
    retry: RetryOptions = Field(default_factory=RetryOptions)
    events_per_run: int = 100
    pending: list[ConsumerEventSignal] = Field(default_factory=list)
    seen_event_ids: list[str] = Field(default_factory=list)
    phase: ConsumerPhase = "idle"
    current_event: ConsumerEventSignal | None = None
    failed_event: ConsumerEventSignal | None = None
    retry_requested: bool = False
    failed_step: str = ""
    last_error: str | None = None
    last_event: ConsumerEventSignal | None = None
    last_attempt: int = 0
    events_processed: int = 0
    last_result: str = ""
    current_deployment: str | None = None
    last_deployment: str | None = None
    # ``Kind/name`` of what the entity has in the cluster after the last successful event.
    applied: list[str] = Field(default_factory=list)
    # What visibility shows (models.visibility): the state, since when, whether any event converged.
    deployment_state: ApiState = "idle"
    state_since: str = ""
    converged: bool = False
    search_attributes: list[str] = Field(default_factory=list)


class ConsumerWorkflowInput(BaseModel):
    ref: ConsumerRef
    retry: RetryOptions = Field(default_factory=RetryOptions)
    events_per_run: int = 100
    state: ConsumerWorkflowState | None = None
    # The search attributes registered in the namespace (models.visibility); none: only the memo is set.
    search_attributes: list[str] = Field(default_factory=list)


class ConsumerWorkflowStatus(BaseModel):
    """Answer to the ``status`` query."""

    ref: ConsumerRef
    phase: ConsumerPhase
    current_event: ConsumerEventSignal | None
    failed_event: ConsumerEventSignal | None
    failed_step: str
    last_error: str | None
    pending_events: int
    events_processed: int
    last_result: str
    current_deployment: str | None = None
    last_deployment: str | None = None
    applied: list[str] = Field(default_factory=list)
    deployment_state: ApiState = "idle"
    state_since: str = ""


# Activities and the per-event child


class ConsumerFetchRequest(BaseModel):
    ref: ConsumerRef
    event: ConsumerEventSignal


class ConsumerDesired(BaseModel):
    """What the entity should have in the cluster, from the control plane's lists and the event."""

    resources: list[Resource] = Field(default_factory=list)
    skip_reason: str = ""
    # A line for the status: what the control plane said (``subscription BLOCKED: mapping removed``).
    summary: str = ""


class ConsumerResources(BaseModel):
    """Resources of one consumer entity as the agent owns them, with their UIDs."""

    ref: ConsumerRef
    resources: list[Resource] = Field(default_factory=list)
    uids: dict[str, str] = Field(default_factory=dict)


class ConsumerApplied(BaseModel):
    applied: list[str] = Field(default_factory=list)


class ConsumerPrune(BaseModel):
    ref: ConsumerRef
    keep: list[str] = Field(default_factory=list)
    # ``Kind/name`` → UID of the snapshot's objects: only those may be deleted.
    uids: dict[str, str] = Field(default_factory=dict)


class ConsumerRestore(BaseModel):
    snapshot: ConsumerResources
    created: list[str] = Field(default_factory=list)


class ConsumerDeploymentInput(BaseModel):
    ref: ConsumerRef
    event: ConsumerEventSignal
    attempt: int = 1
    retry: RetryOptions = Field(default_factory=RetryOptions)
    # The search attributes registered in the namespace, which the deployment may upsert.
    search_attributes: list[str] = Field(default_factory=list)


class ConsumerDeploymentResult(BaseModel):
    status: Literal["SUCCESS", "FAILURE", "SKIPPED"] = "SUCCESS"
    outcome: str = ""
    applied: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    failed_step: str = ""
    error_code: str = ""
    error: str = ""


# The full sync

SyncMode = Literal["apply", "report"]


class SyncInput(BaseModel):
    # ``report`` (or a dry run) changes nothing and says what it would change.
    mode: SyncMode = "apply"
    dry_run: bool = False
    allow_mass_delete: bool = False
    max_delete_ratio: float = 0.5
    retry: RetryOptions = Field(default_factory=RetryOptions)
    # Who asked: ``schedule``, ``startup``, ``cli``.
    trigger: str = "cli"


class SyncChange(BaseModel):
    action: Literal["create", "update", "delete", "converge"]
    # ``Kind/name`` (consumer resources) or ``API/<uuid>`` (an API handed to its workflow).
    resource: str
    organization: str = ""
    reason: str = ""


class SyncResult(BaseModel):
    """What a sync found and did: the workflow's result, shown in the UI and by the CLI."""

    mode: SyncMode = "apply"
    dry_run: bool = False
    aborted: bool = False
    reason: str = ""
    created: list[SyncChange] = Field(default_factory=list)
    updated: list[SyncChange] = Field(default_factory=list)
    deleted: list[SyncChange] = Field(default_factory=list)
    # Drift found but not acted on (report mode, a dry run, or deletions held back).
    drifted: list[SyncChange] = Field(default_factory=list)
    # APIs handed to their own workflows to converge.
    apis: list[SyncChange] = Field(default_factory=list)
    held_back: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    organizations: list[str] = Field(default_factory=list)
    unchanged: int = 0

    @property
    def changed(self) -> int:
        return len(self.created) + len(self.updated) + len(self.deleted) + len(self.apis)

    def headline(self) -> str:
        if self.aborted:
            return f"sync aborted, nothing changed: {self.reason}"
        verb = "would change" if self.dry_run or self.mode == "report" else "changed"
        parts = [
            f"{len(self.created)} created",
            f"{len(self.updated)} updated",
            f"{len(self.deleted)} deleted",
            f"{len(self.apis)} APIs converging",
            f"{len(self.drifted)} drifted",
            f"{self.unchanged} unchanged",
        ]
        if self.dry_run or self.mode == "report":
            parts = [f"{len(self.drifted)} drifted", f"{self.unchanged} unchanged"]
        held = f"; {len(self.held_back)} deletion group(s) held back" if self.held_back else ""
        problems = f"; {len(self.problems)} problem(s)" if self.problems else ""
        return f"sync {verb}: " + ", ".join(parts) + held + problems
