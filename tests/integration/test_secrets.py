"""Endpoint credentials reach the cluster as a Secret and never workflow history or logs."""

from __future__ import annotations

import base64
import logging

import pytest

from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from models.api_workflow import api_workflow_id
from tests.integration.conftest import RunningAgent
from tests.integration.test_api_deployment import ORG, new_api, wait_report

PASSWORD = "s3cr3t-P@ssw0rd-7f1c"


async def test_endpoint_credentials_stay_out_of_history_and_logs(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    project = new_api(
        endpoint_security={"production": {"type": "BASIC", "username": "backend-user", "password": PASSWORD}}
    )
    control_plane.deploy(project)
    [report] = await wait_report(control_plane, project.uuid, 1)
    assert report["deploymentStatus"] == "SUCCESS", report

    secrets = kube.objects("Secret", namespace=agent.settings.namespace)
    values = [base64.b64decode(v).decode() for s in secrets for v in s.get("data", {}).values()]
    assert PASSWORD in values

    # The API's workflow and its deployments (whose histories carry the resources).
    ids = [api_workflow_id(ORG, project.uuid)]
    ids += [w.id async for w in agent.client.list_workflows(f"WorkflowId STARTS_WITH 'deploy:{ORG}:{project.uuid}'")]
    assert len(ids) == 2
    stored = b""
    for workflow_id in ids:
        history = await agent.client.get_workflow_handle(workflow_id).fetch_history()
        # Serialized events hold every payload's bytes as they are stored.
        stored += b"".join(event.SerializeToString() for event in history.events)
    assert b"sealedData" in stored  # the Secret is there, sealed
    assert b"backend-user" not in stored  # the username is sealed with the password
    for needle in (PASSWORD, base64.b64encode(PASSWORD.encode()).decode()):
        assert needle.encode() not in stored
    assert not any(PASSWORD in record.getMessage() for record in caplog.records)
