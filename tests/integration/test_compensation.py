"""A failing step restores the last good configuration, reports FAILURE, and waits for a retry."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata

from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from models.api_workflow import api_workflow_id
from models.naming import api_base_name
from tests.integration.conftest import REPO, RunningAgent
from tests.integration.helpers import api_resources, reports_for, settled_status
from tests.integration.test_api_deployment import ORG, new_api, wait_report


async def deploy_first_revision(cp: ControlPlaneSimulator, agent: RunningAgent, kube: KubeEmulator):
    first = new_api(sandbox_url="http://sandbox.backend.example:8080/api")
    cp.deploy(first)
    await wait_report(cp, first.uuid, 1)
    return first, api_resources(kube, agent.settings.namespace, ORG, first.uuid)


async def cli_retry(agent: RunningAgent, api_uuid: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GATEWAY_AGENT_TEMPORAL_ADDRESS": agent.settings.temporal_address,
        "GATEWAY_AGENT_TASK_QUEUE": agent.settings.task_queue,
    }
    cmd = [sys.executable, "-m", "agent", "retry", api_uuid, "--organization", ORG, "--timeout", "60"]
    return await asyncio.to_thread(
        subprocess.run, cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=90
    )


@pytest.mark.faults
@pytest.mark.parametrize("status", [422, 500])
async def test_a_rejected_write_restores_the_previous_resources_and_retry_completes(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator, status: int
) -> None:
    first, before = await deploy_first_revision(control_plane, agent, kube)

    # Revision 2 drops the sandbox route and moves the backend; the route write is refused.
    # A 422 is final at once; a 500 is retried until the attempts run out. Either way the
    # fault is gone by the time the rollback re-applies the previous routes.
    times = 1 if status == 422 else agent.settings.activity_max_attempts
    kube.inject_fault(
        verb="apply", kind="HTTPRoute", status=status, reason="Invalid", message="route rejected by policy", times=times
    )
    second = new_api(revision="2", uuid=first.uuid, production_url="http://v2.backend.example:9090/api")
    control_plane.deploy(second)

    reports = await wait_report(control_plane, first.uuid, 2)
    failure = reports[-1]
    assert (failure["deploymentStatus"], failure["action"], failure["revisionId"]) == ("FAILURE", "DEPLOY", "2")
    assert "HTTPRoute" in failure["errorMessage"] and str(status) in failure["errorMessage"]
    # FAILURE is reported before the rollback; once it is done the status says so.
    assert "rolling back to the previous configuration" in failure["errorMessage"]
    failed = await settled_status(agent.client, ORG, first.uuid, processed=2)
    assert (failed.phase, failed.failed_step, failed.deployed_revision) == ("failed", "apply", "1")
    assert "route rejected by policy" in (failed.last_error or "")
    assert "the previous configuration was restored" in (failed.last_error or "")
    assert api_resources(kube, agent.settings.namespace, ORG, first.uuid) == before

    kube.clear_faults()
    done = await cli_retry(agent, first.uuid)
    assert done.returncode == 0, done.stderr + done.stdout

    reports = reports_for(control_plane.deployment_reports, first.uuid)
    assert (reports[-1]["deploymentStatus"], reports[-1]["revisionId"]) == ("SUCCESS", "2")
    after = api_resources(kube, agent.settings.namespace, ORG, first.uuid)
    assert len([rid for rid in after if rid.startswith("HTTPRoute/")]) == 1
    assert [r["spec"]["services"][0]["host"] for rid, r in after.items() if rid.startswith("Backend/")] == [
        "v2.backend.example"
    ]


async def test_a_readiness_timeout_restores_the_previous_resources_and_retry_completes(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    first, before = await deploy_first_revision(control_plane, agent, kube)

    kube.gateway_operator = False  # the gateway never accepts what comes next
    second = new_api(revision="2", uuid=first.uuid, production_url="http://v2.backend.example:9090/api")
    control_plane.deploy(second)

    reports = await wait_report(control_plane, first.uuid, 2)
    failure = reports[-1]
    assert failure["deploymentStatus"] == "FAILURE"
    assert "did not accept" in failure["errorMessage"] and failure["errorCode"] == "ReadinessTimeout"
    status = await settled_status(agent.client, ORG, first.uuid, processed=2)
    assert status.phase == "failed" and status.deployed_revision == "1"
    assert api_resources(kube, agent.settings.namespace, ORG, first.uuid) == before
    # What an operator sees in the Temporal UI: the API's name in the list, the failure in the details.
    handle = agent.client.get_workflow_handle(api_workflow_id(ORG, first.uuid))
    assert await (await handle.describe()).static_summary() == "PizzaShackAPI 1.0.0 (carbon.super)"
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert "failed at verify" in metadata.current_details
    assert f"gateway-agent retry {first.uuid}" in metadata.current_details

    kube.gateway_operator = True
    done = await cli_retry(agent, first.uuid)
    assert done.returncode == 0, done.stderr + done.stdout
    assert reports_for(control_plane.deployment_reports, first.uuid)[-1]["deploymentStatus"] == "SUCCESS"


async def test_a_gateway_that_rejects_the_api_fails_the_deployment_with_its_message(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    project = new_api(name="Refused", context="/refused")
    kube.operator_rejects.add(api_base_name(ORG, project.uuid, "Refused", "1.0.0"))
    control_plane.deploy(project)
    [report] = await wait_report(control_plane, project.uuid, 1)
    assert report["deploymentStatus"] == "FAILURE" and report["errorCode"] == "GatewayRejected"
    await settled_status(agent.client, ORG, project.uuid, processed=1)
    # Nothing was there before, so nothing of it stays.
    assert api_resources(kube, agent.settings.namespace, ORG, project.uuid) == {}


async def test_retry_is_refused_when_nothing_failed(agent: RunningAgent, control_plane: ControlPlaneSimulator) -> None:
    project = new_api()
    control_plane.deploy(project)
    await wait_report(control_plane, project.uuid, 1)
    await settled_status(agent.client, ORG, project.uuid, processed=1)
    done = await cli_retry(agent, project.uuid)
    assert done.returncode == 2 and "nothing to retry" in done.stderr


@pytest.mark.faults
async def test_a_control_plane_outage_fails_without_touching_the_cluster(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    first, before = await deploy_first_revision(control_plane, agent, kube)
    control_plane.fail_requests("runtime-artifacts", status=503)
    control_plane.publish("API_UPDATE", control_plane.api_event_fields(first.uuid, "API_UPDATE"))

    status = await settled_status(agent.client, ORG, first.uuid, processed=2)
    assert status.phase == "failed" and status.failed_step == "fetch" and "503" in (status.last_error or "")
    assert api_resources(kube, agent.settings.namespace, ORG, first.uuid) == before

    control_plane.clear_failures()
    done = await cli_retry(agent, first.uuid)
    assert done.returncode == 0, done.stderr + done.stdout


async def test_an_api_the_gateway_cannot_express_fails_with_the_reason_and_keeps_the_last_good_state(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    first, before = await deploy_first_revision(control_plane, agent, kube)
    mediation = {"request": [{"policyName": "jsonToXml", "policyVersion": "v1", "parameters": {}}]}
    second = new_api(
        revision="2",
        uuid=first.uuid,
        operations=[{"target": "/orders", "verb": "POST", "operationPolicies": mediation}],
    )
    control_plane.deploy(second)

    reports = await wait_report(control_plane, first.uuid, 2)
    failure = reports[-1]
    assert (failure["deploymentStatus"], failure["errorCode"]) == ("FAILURE", "Untranslatable")
    assert "jsonToXml" in failure["errorMessage"] and "POST /orders" in failure["errorMessage"]
    status = await settled_status(agent.client, ORG, first.uuid, processed=2)
    assert (status.phase, status.failed_step, status.deployed_revision) == ("failed", "translate", "1")
    assert api_resources(kube, agent.settings.namespace, ORG, first.uuid) == before
