"""A worker process SIGKILLed in the middle of a deployment: another worker process finishes it."""

from __future__ import annotations

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from agent.settings import Settings
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from intake.submit import TemporalSubmitter
from models.api_workflow import deployment_workflow_id
from tests.faults.conftest import AgentFactory, activity_running, history_events, killed, started, startup_sync_done
from tests.integration.conftest import running_listener
from tests.integration.helpers import api_resources, reports_for, settled_status
from tests.integration.test_api_deployment import ORG, new_api, wait_report

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


async def test_a_worker_killed_while_it_waits_for_the_gateway_is_replaced_and_the_deployment_finishes(
    fault_settings: Settings,
    fault_client: Client,
    agent_command: AgentFactory,
    control_plane: ControlPlaneSimulator,
    kube: KubeEmulator,
) -> None:
    settings, cp, ns = fault_settings, control_plane, fault_settings.namespace
    kube.hold_operator(ns)  # the gateway takes its time: the deployment waits in wait_until_accepted
    try:
        first = await started(agent_command("worker", settings))
        await startup_sync_done(fault_client)
        async with running_listener(settings, TemporalSubmitter(fault_client, settings)):
            project = new_api()
            event_id = cp.deploy(project)
            deployment = deployment_workflow_id(ORG, project.uuid, event_id, 1)
            await activity_running(fault_client, deployment, "wait_until_accepted")
            assert api_resources(kube, ns, ORG, project.uuid), "applied before the wait"

            await killed(first)  # mid-activity: no heartbeat, no completion, no graceful shutdown
            second = await started(agent_command("worker", settings))
            kube.release_operator(ns)

            [report] = await wait_report(cp, project.uuid, 1, timeout=120)
            status = await settled_status(fault_client, ORG, project.uuid, processed=1, timeout=60)
    finally:
        kube.release_operator(ns)

    assert report["deploymentStatus"] == "SUCCESS", report
    assert (report["action"], report["revisionId"]) == ("DEPLOY", "1")
    assert (status.phase, status.deployed, status.deployed_revision, status.last_error) == ("idle", True, "1", None)
    [api] = kube.objects("API", namespace=ns)
    assert api["status"]["deploymentStatus"]["accepted"] is True
    # The wait really was cut off: its last attempt (the one that succeeded) is not its first, and
    # the one before ended by the heartbeat timeout of the killed worker.
    [wait] = [
        e.activity_task_started_event_attributes
        for e in await history_events(fault_client, deployment, EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)
        if e.activity_task_started_event_attributes.attempt > 1
    ]
    assert wait.last_failure.HasField("timeout_failure_info"), wait.last_failure
    assert second.running()
    # Exactly one report for the deployment, the success.
    assert [r["deploymentStatus"] for r in reports_for(cp.deployment_reports, project.uuid)] == ["SUCCESS"]
