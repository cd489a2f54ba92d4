"""The API server fails a share of requests: 5xx, 429 with Retry-After, 409 and timeouts are
retried with backoff and the deployment converges; a 422 is final: FAILURE at once, the previous
revision restored, and no retry storm (the writes of the refused object stay bounded).

Related, in tests/integration: a refused write (422 once, 500 until the attempts run out) rolls
back and the retry completes (test_compensation.py), a watch expiring (410) during readiness is
read again (test_saga.py), a worker starts while the API server is unreachable (test_cluster.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from kubernetes import client as k8s_client
from temporalio.client import Client

from activities.cluster import KubeCluster
from agent.settings import Settings
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from intake.submit import TemporalSubmitter
from tests.integration.conftest import running_listener
from tests.integration.helpers import api_resources, reports_for, settled_status
from tests.integration.test_api_deployment import ORG, new_api, wait_report
from worker import build_worker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]


@pytest.fixture
def flaky_settings(fault_settings: Settings) -> Settings:
    return fault_settings.model_copy(
        update={"activity_max_attempts": 6, "readiness_timeout_seconds": 10.0, "kube_request_timeout_seconds": 1.0}
    )


@pytest.fixture
async def agent_on_flaky_cluster(
    flaky_settings: Settings, fault_client: Client, kube_api_client: k8s_client.ApiClient, kube: KubeEmulator
) -> AsyncIterator[Settings]:
    settings = flaky_settings
    cluster = KubeCluster(
        kube_api_client,
        settings.namespace,
        request_timeout=settings.kube_request_timeout_seconds,
        gateway_id=settings.effective_gateway_id,
    )
    try:
        async with (
            build_worker(fault_client, settings, cluster),
            running_listener(settings, TemporalSubmitter(fault_client, settings)),
        ):
            yield settings
    finally:
        kube.clear_faults()


def writes(kube: KubeEmulator, namespace: str, resource: str, since: int = 0) -> int:
    """Writes (server-side applies) of ``resource`` in ``namespace`` in the access log from ``since`` on."""
    return sum(
        1
        for a in kube.access_log[since:]
        if a.namespace == namespace and a.resource == resource and a.verb in ("patch", "update", "create")
    )


async def test_transient_answers_are_retried_and_the_deployment_converges(
    agent_on_flaky_cluster: Settings, fault_client: Client, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    cp, ns = control_plane, agent_on_flaky_cluster.namespace
    injected = [
        kube.inject_fault(verb="list", kind="HTTPRoute", status=None, delay=3.0, times=1),  # snapshot times out
        kube.inject_fault(verb="apply", kind="HTTPRoute", status=503, reason="ServiceUnavailable", times=2),
        kube.inject_fault(verb="apply", kind="Backend", status=429, reason="TooManyRequests", retry_after=1, times=1),
        kube.inject_fault(verb="apply", kind="API", status=409, reason="Conflict", message="conflict", times=1),
        kube.inject_fault(verb="get", kind="API", status=500, reason="InternalError", times=1),  # readiness read
    ]
    project = new_api(sandbox_url="http://sandbox.backend.example:8080/api")
    cp.deploy(project)

    [report] = await wait_report(cp, project.uuid, 1, timeout=90)
    status = await settled_status(fault_client, ORG, project.uuid, processed=1)
    assert report["deploymentStatus"] == "SUCCESS", report
    assert (status.deployed, status.deployed_revision, status.last_error) == (True, "1", None)
    assert not {f["id"] for f in kube.faults()} & set(injected), "every injected fault was met"
    kinds = sorted(rid.split("/")[0] for rid in api_resources(kube, ns, ORG, project.uuid))
    assert {"API", "Backend", "HTTPRoute"} <= set(kinds)
    [api] = kube.objects("API", namespace=ns)
    assert api["status"]["deploymentStatus"]["accepted"] is True
    assert [r["deploymentStatus"] for r in reports_for(cp.deployment_reports, project.uuid)] == ["SUCCESS"]


async def test_a_422_is_final_the_previous_revision_is_restored_and_nothing_retries(
    agent_on_flaky_cluster: Settings, fault_client: Client, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    cp, ns = control_plane, agent_on_flaky_cluster.namespace
    first = new_api(sandbox_url="http://sandbox.backend.example:8080/api")
    cp.deploy(first)
    await wait_report(cp, first.uuid, 1)
    before = api_resources(kube, ns, ORG, first.uuid)

    kube.inject_fault(verb="apply", kind="HTTPRoute", status=422, reason="Invalid", message="spec.rules: invalid")
    since = len(kube.access_log)
    second = new_api(revision="2", uuid=first.uuid, production_url="http://v2.backend.example:9090/api")
    cp.deploy(second)

    reports = await wait_report(cp, first.uuid, 2)
    failed = await settled_status(fault_client, ORG, first.uuid, processed=2)
    assert (reports[-1]["deploymentStatus"], reports[-1]["revisionId"]) == ("FAILURE", "2")
    assert "422" in reports[-1]["errorMessage"] and "spec.rules: invalid" in reports[-1]["errorMessage"]
    assert (failed.phase, failed.failed_step, failed.deployed_revision) == ("failed", "apply", "1")
    assert "the previous configuration was restored" in (failed.last_error or ""), failed.last_error
    assert api_resources(kube, ns, ORG, first.uuid) == before

    # One refused write, not one per attempt (the attempts are for transient answers) and not
    # again later: the failure waits for an operator's retry.
    refused = writes(kube, ns, "httproutes", since)
    assert refused == 1, [a for a in kube.access_log[since:] if a.resource == "httproutes"]
    await asyncio.sleep(3)
    assert writes(kube, ns, "httproutes", since) == refused
    assert len(reports_for(cp.deployment_reports, first.uuid)) == 2
