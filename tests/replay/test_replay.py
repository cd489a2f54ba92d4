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

HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))
SCENARIOS = ("success", "failure-rollback-retry", "remove", "continue-as-new-pending")


def test_the_committed_histories_cover_every_scenario_of_each_code_version() -> None:
    versions = {path.name.split("-", 1)[0] for path in HISTORIES}
    assert {"v1", "v2"} <= versions
    for version in versions:
        for scenario in SCENARIOS:
            assert any(p.name.startswith(f"{version}-{scenario}-") for p in HISTORIES), (version, scenario)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays_on_the_current_code(path: Path) -> None:
    recorded = json.loads(path.read_text())
    types = [event["eventType"] for event in recorded["history"]["events"]]
    assert "EVENT_TYPE_WORKFLOW_TASK_COMPLETED" in types, "a history that never ran replays nothing"
    history = WorkflowHistory.from_json(recorded["workflow_id"], recorded["history"])
    replayer = Replayer(workflows=[ApiWorkflow, ApiDeployment], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure!r}"
