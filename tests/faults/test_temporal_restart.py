"""The Temporal server restarts (a dev server of the test's own, persisting to SQLite) while
deployments are in flight and an event waits to be handed over: they resume and finish."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from agent.settings import Settings
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from harness.processes import TemporalDevServer
from models.api_workflow import deployment_workflow_id
from tests.faults.conftest import AgentFactory, activity_running, started, startup_sync_done
from tests.integration.helpers import reports_for, settled_status
from tests.integration.test_api_deployment import ORG, new_api, wait_report

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


async def test_deployments_in_flight_resume_and_finish_after_temporal_restarts(
    fault_settings: Settings,
    agent_command: AgentFactory,
    control_plane: ControlPlaneSimulator,
    kube: KubeEmulator,
    tmp_path: Path,
) -> None:
    cp, ns = control_plane, fault_settings.namespace
    temporal = TemporalDevServer(tmp_path / "temporal.db", tmp_path / "temporal.log")
    await asyncio.to_thread(temporal.start_and_wait)
    try:
        settings = fault_settings.model_copy(
            update={"temporal_address": temporal.address, "temporal_namespace": "default"}
        )
        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        kube.hold_operator(ns)
        try:
            await started(agent_command("run", settings))
            await startup_sync_done(client)
            in_flight = [new_api(name=f"InFlight{i}", context=f"/in-flight{i}") for i in range(3)]
            for project in in_flight:
                event_id = cp.deploy(project)
                await activity_running(
                    client, deployment_workflow_id(ORG, project.uuid, event_id, 1), "wait_until_accepted"
                )

            await asyncio.to_thread(temporal.stop)
            late = new_api(name="Late", context="/late")
            cp.deploy(late)  # the listener holds it, un-acked, until Temporal takes it
            await asyncio.sleep(1)
            await asyncio.to_thread(temporal.start_and_wait)
            kube.release_operator(ns)

            for project in (*in_flight, late):
                await wait_report(cp, project.uuid, 1, timeout=120)
            statuses = [await settled_status(client, ORG, p.uuid, processed=1, timeout=60) for p in (*in_flight, late)]
        finally:
            kube.release_operator(ns)
    finally:
        await asyncio.to_thread(temporal.stop)

    for project, status in zip((*in_flight, late), statuses, strict=True):
        assert (status.deployed, status.deployed_revision, status.last_error) == (True, "1", None), status
        # At least once: a report sent just before the restart may be sent again after it, never a failure.
        assert {r["deploymentStatus"] for r in reports_for(cp.deployment_reports, project.uuid)} == {"SUCCESS"}
    accepted = [o for o in kube.objects("API", namespace=ns) if o["status"]["deploymentStatus"]["accepted"]]
    assert len(accepted) == 4
