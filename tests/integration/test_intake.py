"""The listener: nothing acknowledged before Temporal has it, nothing dropped, nothing blocking."""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import pytest
import stomp
from kubernetes import client as k8s_client
from prometheus_client import REGISTRY
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from agent.settings import Settings
from harness.activemq import ActiveMQ
from harness.control_plane import ControlPlaneSimulator
from intake.listener import REASON_HEADER
from models.api_workflow import ApiEventSignal
from tests.integration.conftest import RunningAgent, running_agent, running_listener
from tests.integration.helpers import eventually, workflow_status
from tests.integration.test_api_deployment import ORG, new_api, wait_report


def events_counted(event_type: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("gateway_agent_events_total", {"event_type": event_type, "outcome": outcome}) or 0.0
    )


def read_dead_letters(
    broker: ActiveMQ, destination: str, count: int, timeout: float = 10.0, *, raw: bool = False
) -> list[tuple[dict, Any]]:
    """``count`` messages from ``destination``: (headers, body), the body as bytes when ``raw``."""
    received: queue.Queue[tuple[dict, Any]] = queue.Queue()

    class Collect(stomp.ConnectionListener):
        def on_message(self, frame: stomp.utils.Frame) -> None:
            received.put((dict(frame.headers), frame.body))

    host, port = broker.stomp_url.removeprefix("stomp://").split(":")
    conn = stomp.Connection12([(host, int(port))], auto_decode=not raw)
    conn.set_listener("collect", Collect())
    conn.connect(wait=True)
    conn.subscribe(destination, id="dlq", ack="auto")
    try:
        return [received.get(timeout=timeout) for _ in range(count)]
    finally:
        conn.disconnect()


async def test_a_malformed_message_is_dead_lettered_with_its_reason_and_blocks_nothing(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, broker: ActiveMQ
) -> None:
    before = events_counted("malformed", "dead-lettered")
    control_plane.publish_raw("{this is not json")
    control_plane.publish_raw(
        '{"event": {"payloadData": {"eventType": "DEPLOY_API_IN_GATEWAY", "timeStamp": 1, "event": "bm90IGpzb24="}}}'
    )
    project = new_api()
    control_plane.deploy(project)

    [report] = await wait_report(control_plane, project.uuid, 1)
    assert report["deploymentStatus"] == "SUCCESS"
    letters = await asyncio.to_thread(read_dead_letters, broker, agent.settings.dead_letter_destination, 2)
    assert [body for _, body in letters][0] == "{this is not json"
    assert "body is not JSON" in letters[0][0][REASON_HEADER]
    assert "DEPLOY_API_IN_GATEWAY" in letters[1][0][REASON_HEADER] and "base64" in letters[1][0][REASON_HEADER]
    assert letters[0][0]["x-original-destination"] == agent.settings.broker_topic
    assert events_counted("malformed", "dead-lettered") - before == 2


async def test_unknown_and_foreign_events_are_acknowledged_counted_and_passed_over(
    agent: RunningAgent, control_plane: ControlPlaneSimulator
) -> None:
    unknown = events_counted("unknown", "unknown")
    foreign = events_counted("DEPLOY_API_IN_GATEWAY", "other-gateway")
    control_plane.publish("KEY_MANAGER_CONFIGURATION", {"name": "Resident Key Manager"})
    elsewhere = new_api(name="Elsewhere", context="/elsewhere")
    control_plane.deploy(elsewhere, labels=["Internal"])
    project = new_api()
    control_plane.deploy(project)

    await wait_report(control_plane, project.uuid, 1)
    assert events_counted("unknown", "unknown") - unknown == 1
    assert events_counted("DEPLOY_API_IN_GATEWAY", "other-gateway") - foreign == 1
    assert await workflow_status(agent.client, ORG, elsewhere.uuid) is None


@pytest.mark.faults
async def test_nothing_is_acknowledged_before_temporal_accepted_it(
    settings: Settings,
    temporal_client: Client,
    kube_api_client: k8s_client.ApiClient,
    control_plane: ControlPlaneSimulator,
) -> None:
    attempts: list[ApiEventSignal] = []

    async def temporal_unavailable(event: ApiEventSignal) -> None:
        attempts.append(event)
        raise ConnectionError("Temporal is down")

    project = new_api()
    async with running_listener(settings, temporal_unavailable):
        control_plane.deploy(project)
        await eventually(lambda: len(attempts) >= 2, what="repeated submission attempts")
    assert await workflow_status(temporal_client, ORG, project.uuid) is None

    # The listener went away without acknowledging: the broker hands the event to the next one.
    async with running_agent(settings, temporal_client, kube_api_client):
        [report] = await wait_report(control_plane, project.uuid, 1)
    assert report["deploymentStatus"] == "SUCCESS"
    assert all(a.api_uuid == project.uuid for a in attempts)


@pytest.mark.faults
async def test_the_listener_reconnects_and_loses_nothing_when_the_broker_restarts(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, broker: ActiveMQ
) -> None:
    await asyncio.to_thread(broker.restart)
    # Published possibly before the listener is back: the durable subscription keeps it.
    project = new_api()
    control_plane.deploy(project)
    [report] = await wait_report(control_plane, project.uuid, 1, timeout=60)
    assert report["deploymentStatus"] == "SUCCESS"
    assert agent.listener.connected.is_set()


async def test_an_event_temporal_refuses_as_invalid_is_dead_lettered_not_retried_forever(
    settings: Settings, control_plane: ControlPlaneSimulator, broker: ActiveMQ
) -> None:
    async def refuses(event: ApiEventSignal) -> None:
        raise RPCError("WorkflowId length exceeds limit.", RPCStatusCode.INVALID_ARGUMENT, b"")

    async with running_listener(settings, refuses):
        control_plane.deploy(new_api())
        [(headers, _)] = await asyncio.to_thread(read_dead_letters, broker, settings.dead_letter_destination, 1)
    assert "Temporal refuses event" in headers[REASON_HEADER] and "WorkflowId length" in headers[REASON_HEADER]
