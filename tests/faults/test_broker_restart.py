"""The broker restarts while events are on their way: every one is processed once it is back.

The listener (its durable subscription) is away while one event is published, the broker then
goes down with that message in its store, two more events are published while it is down (the
control plane keeps them and sends them when it answers, as API Manager's publisher does), and the
listener subscribes again after the broker returned. The listener staying connected across a
restart is tests/integration/test_intake.py::test_the_listener_reconnects_and_loses_nothing_when_the_broker_restarts.
"""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client as k8s_client
from temporalio.client import Client

from activities.cluster import KubeCluster
from agent.settings import Settings
from harness.activemq import ActiveMQ
from harness.control_plane import ControlPlaneSimulator
from intake.submit import TemporalSubmitter
from tests.integration.conftest import running_listener
from tests.integration.helpers import reports_for, settled_status
from tests.integration.test_api_deployment import ORG, new_api, wait_report
from worker import build_worker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]


async def test_events_published_while_the_broker_is_down_or_the_listener_away_are_all_processed(
    fault_settings: Settings,
    fault_client: Client,
    control_plane: ControlPlaneSimulator,
    broker: ActiveMQ,
    kube_api_client: k8s_client.ApiClient,
) -> None:
    settings, cp = fault_settings, control_plane
    cp.buffer_events = True
    submit = TemporalSubmitter(fault_client, settings)
    cluster = KubeCluster(kube_api_client, settings.namespace, gateway_id=settings.effective_gateway_id)
    first, stored, *while_down = [new_api(name=f"Api{i}", context=f"/api{i}") for i in range(4)]
    async with build_worker(fault_client, settings, cluster):
        async with running_listener(settings, submit):
            cp.deploy(first)  # the durable subscription exists from here on
            await wait_report(cp, first.uuid, 1)

        cp.deploy(stored)  # kept for the subscription, in the broker's store
        try:
            await asyncio.to_thread(broker.stop)
            for project in while_down:
                cp.deploy(project)  # the broker is down: kept by the control plane
            assert cp.outbox_size == len(while_down)
        finally:
            await asyncio.to_thread(broker.start)
        await asyncio.to_thread(cp.wait_outbox_empty, 60)

        async with running_listener(settings, submit):
            after = new_api(name="After", context="/after")
            cp.deploy(after)
            for project in (stored, *while_down, after):
                await wait_report(cp, project.uuid, 1, timeout=60)
            statuses = [
                await settled_status(fault_client, ORG, p.uuid, processed=1) for p in (stored, *while_down, after)
            ]

    for project in (first, stored, *while_down, after):
        assert [r["deploymentStatus"] for r in reports_for(cp.deployment_reports, project.uuid)] == ["SUCCESS"]
    assert all(s.deployed_revision == "1" and s.events_processed == 1 for s in statuses)
