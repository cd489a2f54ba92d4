"""Each event is its own deployment workflow, and the saga holds against a gateway that decides
like APK's operator (a new status only when a generation it reads moved)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import yaml
from kubernetes import client as k8s_client
from temporalio.client import Client, WorkflowExecutionStatus

from agent.settings import Settings
from agent.status_command import query_status
from harness.api_projects import ApiProjectFiles
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from models.api_workflow import RetryRequest, api_workflow_id
from tests.integration.conftest import RunningAgent, running_agent
from tests.integration.helpers import api_resources, eventually, reports_for, settled_status
from tests.integration.test_api_deployment import ORG, new_api, wait_report
from workflows.api_workflow import ApiWorkflow

SLOW_GATEWAY = 20.0  # readiness timeout of the tests that must finish well inside it


@pytest.fixture
async def patient_agent(
    settings: Settings, temporal_client: Client, kube_api_client: k8s_client.ApiClient
) -> AsyncIterator[RunningAgent]:
    """An agent whose readiness timeout is long: a deployment that waits for a status that never
    comes shows up as slow instead of as a failure."""
    patient = settings.model_copy(update={"readiness_timeout_seconds": SLOW_GATEWAY})
    async with running_agent(patient, temporal_client, kube_api_client) as running:
        yield running


def api_status(kube: KubeEmulator, namespace: str, api_uuid: str) -> dict:
    [api] = [
        o
        for o in kube.objects("API", namespace=namespace)
        if o["metadata"]["labels"].get("gateway-agent.wso2.com/api-uuid") == api_uuid
    ]
    return api["status"]["deploymentStatus"]


class RequestClock:
    """When each request reached the emulator (sampled every 10 ms)."""

    def __init__(self, kube: KubeEmulator) -> None:
        self.kube = kube
        self.seen: list[tuple[float, str, str]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RequestClock:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def _sample(self) -> None:
        count = len(self.kube.request_log)
        while True:
            log = self.kube.request_log
            now = time.monotonic()
            self.seen.extend((now, method, path) for method, path in log[count:])
            count = len(log)
            await asyncio.sleep(0.01)


async def redeploy(cp: ControlPlaneSimulator, project: ApiProjectFiles, agent: RunningAgent, count: int) -> float:
    """Deploy ``project`` as the next revision; seconds until its SUCCESS report."""
    started = time.monotonic()
    cp.deploy(project)
    reports = await wait_report(cp, project.uuid, count, timeout=60)
    assert reports[-1]["deploymentStatus"] == "SUCCESS", reports[-1]
    assert reports[-1]["revisionId"] == project.revision
    return time.monotonic() - started


async def test_a_refused_write_reports_failure_at_once_and_leaves_the_cluster_as_it_was(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    first = new_api()
    control_plane.deploy(first)
    await wait_report(control_plane, first.uuid, 1)
    before = api_resources(kube, agent.settings.namespace, ORG, first.uuid)

    # Every HTTPRoute write is refused, for good: the rollback must not need one.
    kube.inject_fault(verb="apply", kind="HTTPRoute", status=500, message="admission webhook down")
    second = new_api(
        revision="2",
        uuid=first.uuid,
        production_url="http://v2.backend.example:9090/api",
        operations=[{"target": "/menu", "verb": "GET"}, {"target": "/order", "verb": "POST"}],
    )
    async with RequestClock(kube) as clock:
        control_plane.deploy(second)
        [_, failure] = await wait_report(control_plane, first.uuid, 2)
        reported = time.monotonic()
    route_writes = [t for t, method, path in clock.seen if method == "PATCH" and "/httproutes/" in path]
    assert len(route_writes) == agent.settings.activity_max_attempts
    assert reported - route_writes[-1] < 15, "FAILURE must not wait for the rollback"
    assert failure["deploymentStatus"] == "FAILURE" and "admission webhook down" in failure["errorMessage"]

    status = await settled_status(agent.client, ORG, first.uuid, processed=2)
    assert status.phase == "failed" and "the previous configuration was restored" in (status.last_error or "")
    assert api_resources(kube, agent.settings.namespace, ORG, first.uuid) == before
    # The rollback wrote back only what the attempt changed (the Backend), never the refused routes.
    assert len([t for t, m, p in clock.seen if m == "PATCH" and "/httproutes/" in p]) == len(route_writes)

    # The deployment is its own workflow, Failed with the reason: the UI's Failed filter lists it.
    failed = [
        w
        async for w in agent.client.list_workflows(
            f"WorkflowType = 'ApiDeployment' AND ExecutionStatus = 'Failed' AND WorkflowId STARTS_WITH "
            f"'deploy:{ORG}:{first.uuid}'"
        )
    ]
    assert [w.id for w in failed] == [status.last_deployment]
    description = await agent.client.get_workflow_handle(failed[0].id).describe()
    assert "PizzaShackAPI 1.0.0" in (await description.static_summary() or "")
    completed = [
        w
        async for w in agent.client.list_workflows(
            f"WorkflowType = 'ApiDeployment' AND WorkflowId STARTS_WITH 'deploy:{ORG}:{first.uuid}'"
        )
    ]
    assert {w.status for w in completed} == {WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.FAILED}


async def test_a_retry_sent_during_the_rollback_is_queued_and_then_succeeds(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    first = new_api()
    control_plane.deploy(first)
    await wait_report(control_plane, first.uuid, 1)

    kube.inject_fault(verb="apply", kind="HTTPRoute", status=422, message="refused once", times=1)
    kube.operator_delay = 1.5  # the gateway takes its time to accept the restored Backend
    control_plane.deploy(new_api(revision="2", uuid=first.uuid, production_url="http://v2.backend.example/api"))
    await eventually(
        lambda: len(reports_for(control_plane.deployment_reports, first.uuid)) >= 2, what="the FAILURE report"
    )

    async def rolling_back() -> bool:
        return (await query_status(agent.client, ORG, first.uuid)).phase == "rolling-back"

    deadline = time.monotonic() + 10
    while not await rolling_back():
        assert time.monotonic() < deadline, "the rollback was never seen"
        await asyncio.sleep(0.05)
    handle = agent.client.get_workflow_handle(api_workflow_id(ORG, first.uuid))
    accepted = await handle.execute_update(ApiWorkflow.retry, RetryRequest(reason="during the rollback"))
    assert accepted.events_processed == 2

    reports = await wait_report(control_plane, first.uuid, 3)
    assert (reports[-1]["deploymentStatus"], reports[-1]["revisionId"]) == ("SUCCESS", "2")
    status = await settled_status(agent.client, ORG, first.uuid, processed=3)
    assert (status.phase, status.deployed_revision) == ("idle", "2")
    assert status.last_deployment and status.last_deployment.endswith(":2")  # the retry is attempt 2


async def test_changes_the_gateway_must_see_and_changes_it_need_not_see_all_succeed_quickly(
    patient_agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    """Same content as a new revision, a re-sent event, a definition-only change and a credential
    rotation: each reaches SUCCESS well inside the readiness timeout, and the gateway redeployed
    exactly when what it serves changed."""
    ns = patient_agent.settings.namespace
    credentials = {"production": {"enabled": True, "type": "BASIC", "username": "svc", "password": "s3cret-1"}}
    first = new_api(endpoint_security=credentials)
    control_plane.deploy(first)
    await wait_report(control_plane, first.uuid, 1)
    accepted = api_status(kube, ns, first.uuid)

    # 1. A new revision with the same content: only the revision label moves; nothing to redeploy.
    same = new_api(revision="2", uuid=first.uuid, endpoint_security=credentials)
    assert await redeploy(control_plane, same, patient_agent, 2) < SLOW_GATEWAY / 4
    assert api_status(kube, ns, first.uuid) == accepted

    # 2. The same revision announced again (an API_UPDATE): nothing changes at all.
    control_plane.publish("API_UPDATE", control_plane.api_event_fields(first.uuid, "API_UPDATE"))
    reports = await wait_report(control_plane, first.uuid, 3)
    assert reports[-1]["deploymentStatus"] == "SUCCESS"

    # 3. Only the definition changes: a new definition ConfigMap, which the API references.
    definition = new_api(revision="3", uuid=first.uuid, endpoint_security=credentials)
    path = f"{definition.root}/Definitions/swagger.yaml"
    document = yaml.safe_load(definition.files[path])
    document["info"]["description"] = "Now with a description."
    definition.files[path] = yaml.safe_dump(document).encode()
    assert await redeploy(control_plane, definition, patient_agent, 4) < SLOW_GATEWAY / 4
    redeployed = api_status(kube, ns, first.uuid)
    assert redeployed != accepted, "the gateway must have redeployed the new definition"
    configmaps = [rid for rid in api_resources(kube, ns, ORG, first.uuid) if rid.startswith("ConfigMap/")]
    assert len([c for c in configmaps if "definition" in c]) == 1, configmaps  # the old one was pruned

    # 4. A credential rotation: a new Secret, which the Backend references.
    rotated = {"production": {**credentials["production"], "password": "s3cret-2"}}
    rotation = new_api(revision="4", uuid=first.uuid, endpoint_security=rotated)
    assert await redeploy(control_plane, rotation, patient_agent, 5) < SLOW_GATEWAY / 4
    assert api_status(kube, ns, first.uuid) != redeployed
    secrets = [
        o
        for o in kube.objects("Secret", namespace=ns)
        if o["metadata"]["labels"].get("gateway-agent.wso2.com/api-uuid") == first.uuid
    ]
    assert len(secrets) == 1 and "s3cret-2" not in secrets[0]["metadata"]["name"]


@pytest.mark.faults
async def test_an_expired_watch_during_readiness_does_not_roll_back(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    kube.operator_delay = 0.8  # the agent is watching when the watch expires
    kube.inject_fault(
        verb="watch", kind="API", status=410, reason="Expired", message="too old resource version", times=1
    )
    project = new_api()
    control_plane.deploy(project)
    [report] = await wait_report(control_plane, project.uuid, 1)
    assert report["deploymentStatus"] == "SUCCESS", report
    assert not kube.faults(), "the watch was never expired"


async def test_cancelling_a_deployment_mid_apply_restores_the_snapshot_and_reports(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    first = new_api()
    control_plane.deploy(first)
    await wait_report(control_plane, first.uuid, 1)
    before = api_resources(kube, agent.settings.namespace, ORG, first.uuid)

    kube.inject_fault(verb="apply", kind="HTTPRoute", status=None, delay=2.0, times=1)  # a slow API server
    control_plane.deploy(new_api(revision="2", uuid=first.uuid, production_url="http://v2.backend.example/api"))
    writes_before = len([m for m, p in kube.request_log if m == "PATCH" and "/httproutes/" in p])
    await eventually(
        lambda: len([m for m, p in kube.request_log if m == "PATCH" and "/httproutes/" in p]) > writes_before,
        what="the slow route write of revision 2",
    )
    # The deployment's own queries wait while its local activity runs; the API's workflow answers.
    parent = agent.client.get_workflow_handle(api_workflow_id(ORG, first.uuid))
    status = await parent.query(ApiWorkflow.status)
    assert status.current_deployment and status.phase == "converging"
    handle = agent.client.get_workflow_handle(status.current_deployment)
    await handle.cancel()  # delivered while the route write is still under way

    [_, failure] = await wait_report(control_plane, first.uuid, 2)
    assert failure["deploymentStatus"] == "FAILURE" and "cancelled" in failure["errorMessage"]
    settled = await settled_status(agent.client, ORG, first.uuid, processed=2)
    assert settled.phase == "failed" and settled.deployed_revision == "1"
    assert "restored" in (settled.last_error or "")
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert api_resources(kube, agent.settings.namespace, ORG, first.uuid) == before


async def test_a_404_saying_no_artifact_found_undeploys_and_any_other_404_is_an_error(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    control_plane.not_deployed_answer = "404"
    project = new_api()
    control_plane.deploy(project)
    await wait_report(control_plane, project.uuid, 1)

    # A 404 from a wrong path or a proxy is not "nothing is deployed": nothing is deleted.
    control_plane.fail_requests("runtime-artifacts", status=404, times=None)
    control_plane.publish("API_UPDATE", control_plane.api_event_fields(project.uuid, "API_UPDATE"))
    failed = await settled_status(agent.client, ORG, project.uuid, processed=2)
    assert failed.phase == "failed" and failed.failed_step == "fetch" and "404" in (failed.last_error or "")
    assert api_resources(kube, agent.settings.namespace, ORG, project.uuid)

    control_plane.clear_failures()
    control_plane.undeploy(project.uuid)
    reports = await wait_report(control_plane, project.uuid, 3)
    assert (reports[-1]["deploymentStatus"], reports[-1]["action"]) == ("SUCCESS", "UNDEPLOY")
    assert api_resources(kube, agent.settings.namespace, ORG, project.uuid) == {}


@pytest.mark.parametrize("shape", ["object", "list"])
async def test_reports_take_the_shape_the_control_plane_takes(
    settings: Settings,
    temporal_client: Client,
    kube_api_client: k8s_client.ApiClient,
    control_plane: ControlPlaneSimulator,
    shape: str,
) -> None:
    control_plane.report_shape = shape  # the other shape is answered 400
    async with running_agent(settings.model_copy(update={"cp_report_shape": shape}), temporal_client, kube_api_client):
        project = new_api()
        control_plane.deploy(project)
        [report] = await wait_report(control_plane, project.uuid, 1)
    assert report["deploymentStatus"] == "SUCCESS"


async def test_a_control_plane_that_refuses_reports_for_two_minutes_gets_the_report_afterwards(
    settings: Settings,
    temporal_client: Client,
    kube_api_client: k8s_client.ApiClient,
    control_plane: ControlPlaneSimulator,
) -> None:
    patient = settings.model_copy(update={"report_retry_max_seconds": 5.0})
    control_plane.fail_requests("notify-api-deployment-status", status=503)
    async with running_agent(patient, temporal_client, kube_api_client) as agent:
        project = new_api()
        control_plane.deploy(project)
        status = await settled_status(agent.client, ORG, project.uuid, processed=1)
        assert status.deployed_revision == "1" and status.undelivered_report is not None
        await asyncio.sleep(125)
        assert reports_for(control_plane.deployment_reports, project.uuid) == []
        control_plane.clear_failures()
        [report] = await wait_report(control_plane, project.uuid, 1, timeout=30)
        assert (report["deploymentStatus"], report["revisionId"]) == ("SUCCESS", "1")
        handle = agent.client.get_workflow_handle(api_workflow_id(ORG, project.uuid))
        deadline = time.monotonic() + 10
        while (await handle.query(ApiWorkflow.status)).undelivered_report is not None:
            assert time.monotonic() < deadline, "the delivered report is still kept"
            await asyncio.sleep(0.1)
    assert len(reports_for(control_plane.deployment_reports, project.uuid)) == 1  # sent once it was taken
