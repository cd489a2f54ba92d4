"""Every committed history replays through the current workflow code without non-determinism.

The histories (``histories/<code version>-<scenario>-<n>.json``) were recorded by
``record_histories.py`` with the workflow code of their time: a change that alters the commands
a running workflow issues, without a ``workflow.patched`` guard, fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.api_deployment import ApiDeployment
from workflows.api_workflow import ApiWorkflow
from workflows.consumer_deployment import ConsumerDeployment
from workflows.consumer_workflow import ConsumerWorkflow
from workflows.full_sync import FullSync

HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))
# The first letter of a code version names its family of scenarios (see record_histories.py).
SCENARIOS = {
    "v": ("success", "failure-rollback-retry", "remove", "continue-as-new-pending"),
    "c": (
        "application-keys",
        "subscription-block-unblock",
        "tier-refused-then-fixed-with-retry",
        "apply-refused-restored-retry",
        "continue-as-new",
        "full-sync",
    ),
}
WORKFLOWS = [ApiWorkflow, ApiDeployment, ConsumerWorkflow, ConsumerDeployment, FullSync]


def test_the_committed_histories_cover_every_scenario_of_each_code_version() -> None:
    versions = {path.name.split("-", 1)[0] for path in HISTORIES}
    assert {"v1", "v2", "v3", "c1", "c2"} <= versions
    for version in versions:
        for scenario in SCENARIOS[version[0]]:
            assert any(p.name.startswith(f"{version}-{scenario}-") for p in HISTORIES), (version, scenario)


def workflow_type(path: Path) -> str:
    first = json.loads(path.read_text())["history"]["events"][0]
    return first["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]


def test_the_consumer_histories_hold_every_consumer_workflow_type() -> None:
    types = {workflow_type(p) for p in HISTORIES if p.name.startswith("c")}
    assert {"ConsumerWorkflow", "ConsumerDeployment", "FullSync", "ApiWorkflow"} <= types, types


# Code versions since the ``visibility`` patch: every workflow type sets search attributes
# (ApiWorkflow and ConsumerWorkflow also a memo), so their replay runs that code.
VISIBILITY_VERSIONS = ("v3", "c2")
MEMO_TYPES = {"ApiWorkflow", "ConsumerWorkflow"}


def test_the_histories_since_the_visibility_patch_replay_its_commands() -> None:
    seen: dict[str, set[str]] = {}
    for path in HISTORIES:
        if not path.name.startswith(VISIBILITY_VERSIONS):
            continue
        events = json.loads(path.read_text())["history"]["events"]
        kinds = seen.setdefault(workflow_type(path), set())
        for event in events:
            if event["eventType"] == "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES":
                upserted = event["upsertWorkflowSearchAttributesEventAttributes"]["searchAttributes"]
                kinds |= set(upserted["indexedFields"])
            elif event["eventType"] == "EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED":
                kinds.add("memo")
    assert {"ApiWorkflow", "ApiDeployment", "ConsumerWorkflow", "ConsumerDeployment", "FullSync"} <= set(seen)
    for name, kinds in seen.items():
        if name == "FullSync":
            continue  # sets none (an ApiWorkflow it hands an API to does)
        assert "DeploymentState" in kinds and "TemporalChangeVersion" in kinds, (name, kinds)
        assert ("memo" in kinds) == (name in MEMO_TYPES), (name, kinds)
    assert {"ApiId", "ApiName", "Organization", "GatewayLabel"} <= seen["ApiWorkflow"], seen["ApiWorkflow"]


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays_on_the_current_code(path: Path) -> None:
    recorded = json.loads(path.read_text())
    types = [event["eventType"] for event in recorded["history"]["events"]]
    assert "EVENT_TYPE_WORKFLOW_TASK_COMPLETED" in types, "a history that never ran replays nothing"
    history = WorkflowHistory.from_json(recorded["workflow_id"], recorded["history"])
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure!r}"
