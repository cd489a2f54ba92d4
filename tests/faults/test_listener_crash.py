"""A listener process SIGKILLed between receiving a message and acknowledging it: the broker
redelivers the message to the next listener, and it has exactly one effect.

The listener reaches Temporal through a TCP proxy the test stalls, so the kill falls exactly in
the window between the frame's arrival and the ack:

- ``requests`` stalled: the signal-with-start never reaches Temporal (Temporal is unreachable);
- ``replies`` stalled: Temporal has the event, the listener never hears so and never acks. The
  redelivered message is signalled again and the API's workflow drops it by its event id.
"""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client as k8s_client
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.cluster import KubeCluster
from agent.settings import Settings
from harness.control_plane import ControlPlaneSimulator
from harness.processes import TcpProxy
from models.api_workflow import api_workflow_id
from tests.faults.conftest import AgentFactory, history_events, killed, started
from tests.integration.helpers import eventually, reports_for, settled_status
from tests.integration.test_api_deployment import ORG, new_api, wait_report
from worker import build_worker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]


async def workflow_exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
        return True
    except RPCError:
        return False


@pytest.mark.parametrize("stalled", ["requests", "replies"])
async def test_a_listener_killed_before_its_ack_loses_nothing_and_the_redelivery_has_one_effect(
    stalled: str,
    fault_settings: Settings,
    fault_client: Client,
    agent_command: AgentFactory,
    control_plane: ControlPlaneSimulator,
    kube_api_client: k8s_client.ApiClient,
) -> None:
    settings, cp = fault_settings, control_plane
    cluster = KubeCluster(kube_api_client, settings.namespace, gateway_id=settings.effective_gateway_id)
    worker: Worker = build_worker(fault_client, settings, cluster)
    with TcpProxy(settings.temporal_address) as proxy:
        async with worker:
            proxied = settings.model_copy(update={"temporal_address": proxy.address})
            first = await started(agent_command("listen", proxied))
            warm = new_api(name="Warm", context="/warm")  # the listener's first calls are behind it
            cp.deploy(warm)
            await wait_report(cp, warm.uuid, 1)

            proxy.stall(stalled)  # type: ignore[arg-type]
            project = new_api()
            cp.deploy(project)
            workflow_id = api_workflow_id(ORG, project.uuid)
            if stalled == "requests":
                # The listener has the frame: it is trying to hand it to Temporal.
                await eventually(lambda: proxy.held_bytes("requests") > 0, what="a held signal-with-start")
                await asyncio.sleep(0.5)
                assert not await workflow_exists(fault_client, workflow_id)
            else:
                # Temporal has the event and runs it; the listener waits for the answer, un-acked.
                await eventually(lambda: proxy.held_bytes("replies") > 0, what="a held answer")
                await wait_report(cp, project.uuid, 1)
            await killed(first)
            proxy.drop_connections()  # what it held dies with the listener's connection
            proxy.resume()

            await started(agent_command("listen", settings))  # straight to Temporal
            [report] = await wait_report(cp, project.uuid, 1)

            async def signalled() -> int:
                return len(
                    await history_events(fault_client, workflow_id, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
                )

            # ``requests``: only the redelivery reached Temporal; ``replies``: the first delivery and
            # the redelivery both did.
            expected = 1 if stalled == "requests" else 2
            deadline = asyncio.get_running_loop().time() + 30
            while await signalled() < expected and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
            status = await settled_status(fault_client, ORG, project.uuid, processed=1)
            children = await history_events(
                fault_client, workflow_id, EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
            )

    assert report["deploymentStatus"] == "SUCCESS", report
    assert await signalled() == expected
    assert len(children) == 1, "one deployment for the event, however often it was delivered"
    assert (status.events_processed, status.deployed_revision) == (1, "1")
    assert [r["deploymentStatus"] for r in reports_for(cp.deployment_reports, project.uuid)] == ["SUCCESS"]
