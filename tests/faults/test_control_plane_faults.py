"""The control plane answers 5xx, times out, or is down when the agent starts: the agent starts
anyway, retries, and never deletes anything because of it.

Related, in tests/integration: a failing, slow or garbled list aborts the full sync with nothing
changed (test_full_sync.py), a fetch that keeps failing fails the deployment without touching the
cluster (test_compensation.py), reports refused for minutes are delivered afterwards, and only an
explicit "nothing deployed" removes an API (test_saga.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from kubernetes import client as k8s_client
from temporalio.client import Client, WorkflowExecutionStatus

from activities.cluster import KubeCluster
from agent.settings import Settings
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from intake.submit import TemporalSubmitter
from models.consumer_workflow import SyncResult
from models.naming import api_selector
from models.resources import MANAGED_KINDS
from tests.faults.conftest import AgentFactory, started, startup_sync_done
from tests.integration.conftest import running_listener
from tests.integration.helpers import eventually, reports_for, settled_status
from tests.integration.test_api_deployment import ORG, new_api, wait_report
from worker import build_worker, sync_input
from workflows.full_sync import FullSync

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]


def versions(kube: KubeEmulator, namespace: str, api_uuid: str) -> dict[str, str]:
    """``Kind/name`` → resourceVersion of every object of the API: any write changes it."""
    found = {}
    for spec in MANAGED_KINDS:
        for obj in kube.objects(spec.kind, namespace=namespace, label_selector=api_selector(ORG, api_uuid)):
            found[f"{spec.kind}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
    return found


def requests_to(cp: ControlPlaneSimulator, suffix: str) -> list[dict[str, Any]]:
    return [r for r in cp.requests if r["path"].endswith(suffix)]


async def test_a_failing_or_slow_control_plane_is_retried_and_the_deployment_converges(
    fault_settings: Settings,
    fault_client: Client,
    control_plane: ControlPlaneSimulator,
    kube_api_client: k8s_client.ApiClient,
) -> None:
    settings = fault_settings.model_copy(update={"cp_timeout_seconds": 1.0})
    cp = control_plane
    cluster = KubeCluster(kube_api_client, settings.namespace, gateway_id=settings.effective_gateway_id)
    cp.fail_requests("runtime-artifacts", status=503, times=1)
    cp.fail_requests("runtime-artifacts", status=None, delay=3.0, times=1)  # beyond the agent's timeout
    cp.fail_requests("notify-api-deployment-status", status=500, times=1)
    async with (
        build_worker(fault_client, settings, cluster),
        running_listener(settings, TemporalSubmitter(fault_client, settings)),
    ):
        project = new_api()
        cp.deploy(project)
        [report] = await wait_report(cp, project.uuid, 1, timeout=60)
        status = await settled_status(fault_client, ORG, project.uuid, processed=1)

    assert report["deploymentStatus"] == "SUCCESS", report
    assert (status.deployed_revision, status.last_error) == ("1", None)
    assert len(requests_to(cp, "runtime-artifacts")) >= 3  # 503, timed out, answered
    assert len(requests_to(cp, "notify-api-deployment-status")) >= 2  # 500, taken
    assert [r["deploymentStatus"] for r in reports_for(cp.deployment_reports, project.uuid)] == ["SUCCESS"]


async def test_an_agent_started_while_the_control_plane_is_down_serves_retries_and_deletes_nothing(
    fault_settings: Settings,
    fault_client: Client,
    agent_command: AgentFactory,
    control_plane: ControlPlaneSimulator,
    kube: KubeEmulator,
    kube_api_client: k8s_client.ApiClient,
) -> None:
    settings = fault_settings.model_copy(update={"report_retry_max_seconds": 1.0})
    cp, ns = control_plane, settings.namespace
    cluster = KubeCluster(kube_api_client, ns, gateway_id=settings.effective_gateway_id)
    deployed = new_api(name="Deployed", context="/deployed")
    async with (
        build_worker(fault_client, settings, cluster),
        running_listener(settings, TemporalSubmitter(fault_client, settings)),
    ):
        cp.deploy(deployed)
        await wait_report(cp, deployed.uuid, 1)
    before = versions(kube, ns, deployed.uuid)
    assert before

    port = urlsplit(cp.url).port
    cp.stop()  # the control plane's REST API is down (its broker publisher still works)
    try:
        await started(agent_command("run", settings))  # starts anyway
        # The startup sync cannot read the control plane: it aborts, and deletes nothing.
        assert await startup_sync_done(fault_client) == WorkflowExecutionStatus.FAILED
        assert versions(kube, ns, deployed.uuid) == before

        # An event meanwhile: the fetch is retried, then the deployment fails without a write.
        waiting = new_api(name="Waiting", context="/waiting")
        cp.deploy(waiting)
        failed = await settled_status(fault_client, ORG, waiting.uuid, processed=1, timeout=60)
        assert (failed.phase, failed.failed_step) == ("failed", "fetch"), failed
        assert not versions(kube, ns, waiting.uuid)
        assert versions(kube, ns, deployed.uuid) == before
    finally:
        cp.start("127.0.0.1", port)

    # Back: the failure's report is delivered, and the next sync converges the waiting API and
    # leaves the deployed one as it was.
    await eventually(lambda: reports_for(cp.deployment_reports, waiting.uuid), timeout=60, what="the FAILURE report")
    result = await fault_client.execute_workflow(
        FullSync.run,
        sync_input(settings, "test"),
        id=f"sync-after-outage-{waiting.uuid[:8]}",
        task_queue=settings.task_queue,
        result_type=SyncResult,
    )
    assert not result.aborted and not result.deleted, result
    [success] = [r for r in await wait_report(cp, waiting.uuid, 2, timeout=60) if r["deploymentStatus"] == "SUCCESS"]
    assert success["revisionId"] == "1"
    assert [r["deploymentStatus"] for r in reports_for(cp.deployment_reports, waiting.uuid)] == ["FAILURE", "SUCCESS"]
    assert versions(kube, ns, deployed.uuid) == before
