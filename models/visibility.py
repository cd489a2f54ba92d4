"""What the workflows tell Temporal's visibility store: search attributes and memo.

The contract (read by the CLI and typed by operators in the Temporal UI):

Search attributes, on ``ApiWorkflow`` and each of its ``ApiDeployment`` children:

- ``ApiId`` (Keyword): the API's UUID
- ``ApiName`` (Keyword): its name, once an event or the control plane named it
- ``Organization`` (Keyword): its organization (tenant domain)
- ``GatewayLabel`` (KeywordList): the agent's gateway labels the control plane deploys the API on,
  as of its last answer (an API can be on several at once; ``GatewayLabel = 'Default'`` matches
  any of them); unset once the API is off this agent's gateways
- ``DeploymentState`` (Keyword): :data:`API_STATES` on ``ApiWorkflow``, :data:`DEPLOYMENT_STATES`
  on ``ApiDeployment``

``ConsumerWorkflow`` and ``ConsumerDeployment`` carry ``Organization`` and ``DeploymentState``
(the same vocabularies).

Memo on ``ApiWorkflow`` (and ``ConsumerWorkflow``), every value a string, ``""`` when there is none:
``revision`` (the deployed revision), ``last_error``, ``state_since`` (ISO-8601 UTC, when
``DeploymentState`` took its value) and ``event_id`` (the event deployed last or now).

A workflow upserts only the attributes registered in its namespace (upserting one that is not
fails the workflow task): whoever starts ``ApiWorkflow`` or ``ConsumerWorkflow`` (the intake)
lists the registered ones in its input (``search_attributes``); the workflow keeps the list across
continue-as-new and hands it to its deployments. The memo needs no registration: it is always set.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from temporalio.common import SearchAttributeKey

API_ID = SearchAttributeKey.for_keyword("ApiId")
API_NAME = SearchAttributeKey.for_keyword("ApiName")
ORGANIZATION = SearchAttributeKey.for_keyword("Organization")
GATEWAY_LABEL = SearchAttributeKey.for_keyword_list("GatewayLabel")
DEPLOYMENT_STATE = SearchAttributeKey.for_keyword("DeploymentState")

SEARCH_ATTRIBUTES = (API_ID, API_NAME, ORGANIZATION, GATEWAY_LABEL, DEPLOYMENT_STATE)

# An API's (or consumer entity's) long-lived workflow:
#   idle       nothing converged yet (a new workflow, or only skipped events)
#   deploying  a deployment runs, or an event waits for one
#   deployed   on the gateway (the last deployment converged)
#   removed    off the gateway (the last deployment removed it, or the control plane has it nowhere here)
#   failed     the last deployment failed; waits for a retry or a newer event
ApiState = Literal["idle", "deploying", "deployed", "removed", "failed"]
API_STATES: tuple[ApiState, ...] = ("idle", "deploying", "deployed", "removed", "failed")


def entity_state(*, phase: str, busy: bool, present: bool, converged: bool) -> ApiState:
    """The ``DeploymentState`` of an API's or consumer's workflow: ``failed`` while it waits for a
    retry, ``deploying`` while a deployment runs or an event waits (``busy``), else ``deployed``
    when its resources are ``present``, ``removed`` once an event took them away, ``idle`` before."""
    if phase == "failed":
        return "failed"
    if phase != "idle" or busy:
        return "deploying"
    if present:
        return "deployed"
    return "removed" if converged else "idle"

# One deployment (one event, one attempt):
DeploymentState = Literal["running", "rolling-back", "succeeded", "failed"]
DEPLOYMENT_STATES: tuple[DeploymentState, ...] = ("running", "rolling-back", "succeeded", "failed")

MEMO_KEYS = ("revision", "last_error", "state_since", "event_id")

# Guards every visibility command (search attributes, memo) of the workflows.
VISIBILITY_PATCH = "visibility"


def iso_utc(moment: datetime) -> str:
    """``2025-01-31T12:00:00.123Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def type_name(key: SearchAttributeKey) -> str:
    return "KeywordList" if key.indexed_value_type == GATEWAY_LABEL.indexed_value_type else "Keyword"


def create_command(namespace: str, key: SearchAttributeKey) -> str:
    """What an operator runs to register one search attribute by hand."""
    return (
        f"temporal operator search-attribute create --namespace {namespace} --name {key.name} --type {type_name(key)}"
    )
